"""Data sets as Pairs: the public lung sets (DIR-LAB, Learn2Reg NLST, Learn2Reg lung CBCT),
generic image pairs, the bundled real data, phantoms, and k-fold splits.

Specs understood by :func:`load_pair` / :func:`load_cohort`::

    bundled:elastix-lung          REAL lung CT pair, 100 real landmarks (fixed = baseline)
    bundled:thorax-ct             real CT, simulated breathing (seed=...)
    phantom:<style>[:<seed>]      synthetic breathing thorax (dirlab | nlst | cbct)
    dirlab:<folder>[:<case>]      DIR-LAB 4DCT, fixed = T00, moving = T50
    nlst:<folder>[:<id>]          Learn2Reg NLST, fixed = _0000, moving = _0001
    cbct:<folder>[:<id>]          Learn2Reg lung CBCT, fixed = CBCT (_0001/_0002), moving = planning CT (_0000)

Where to download the public sets and their layouts: ``data/README.md``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import (
    read_dirlab_img,
    read_dirlab_landmarks,
    read_elastix_points,
    read_image,
    read_learn2reg_keypoints,
    read_points,
)
from .pair import Pair

__all__ = [
    "Pair",
    "data_root",
    "load_pair",
    "load_cohort",
    "load_dirlab_case",
    "load_nlst_pair",
    "load_cbct_pair",
    "load_generic_pair",
    "load_elastix_lung_pair",
    "kfold_splits",
]


def data_root() -> Path:
    """The kit's bundled ``data/`` folder (next to the package)."""
    return Path(__file__).resolve().parents[1] / "data"


def _first_existing(candidates: Sequence[Path], what: str) -> Path:
    for c in candidates:
        if c.is_file():
            return c
    listed = ", ".join(str(c) for c in candidates[:4])
    raise FileNotFoundError(f"{what}: none of these files exists: {listed}{' ...' if len(candidates) > 4 else ''}")


# ------------------------------------------------------------------------------ bundled
def load_elastix_lung_pair(root: str | Path | None = None, keep_outside: bool = False) -> Pair:
    """The bundled REAL lung CT pair (elastix test data): fixed = baseline, moving = follow-up,
    lung masks, real corresponding landmarks in world mm (baseline file = fixed, ground-truth
    point file = moving). The scans start ~35 mm apart (mostly a shift in z).

    The images are cropped to ONE lung (115 x 157 x 129 voxels, right lung), but the landmark
    files hold 100 points over both lungs: 49 of them lie outside both images, where no method
    can be judged. They are dropped (``meta["landmarks_dropped"]``), leaving the 51 in-image
    landmarks (all inside the lung masks; mean initial distance 35.3 mm) — the same 51 as
    ITKElastix's corrected point sets. ``keep_outside=True`` keeps all 100 (then the pair does
    not validate, by design).
    """
    folder = Path(root) if root is not None else data_root() / "elastix_lung_pair"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: bundled elastix lung pair not found (is data/ in the checkout?)")
    fixed = read_image(folder / "3DCT_lung_baseline.mha")
    moving = read_image(folder / "3DCT_lung_followup.mha")
    fmask = read_image(folder / "3DCT_lung_baseline_mask.mha")
    mmask = read_image(folder / "3DCT_lung_followup_mask.mha")
    fl = read_elastix_points(folder / "3DCT_lung_baseline_landmarks.txt")
    ml = read_elastix_points(folder / "3DCT_lung_groundtruth_point.txt")
    if len(fl) != len(ml):
        raise ValueError(f"{folder}: {len(fl)} baseline landmarks but {len(ml)} ground-truth points")
    keep = np.ones(len(fl), bool) if keep_outside else fixed.grid.contains(fl) & moving.grid.contains(ml)
    return Pair(
        fixed=fixed.with_array(fixed.array.astype(np.float32)),
        moving=moving.with_array(moving.array.astype(np.float32)),
        fixed_landmarks=fl[keep],
        moving_landmarks=ml[keep],
        fixed_mask=fmask.with_array(fmask.array > 0),
        moving_mask=mmask.with_array(mmask.array > 0),
        name="elastix-lung",
        dataset="elastix-lung",
        meta={
            "label": "real pair, real landmarks",
            "source": "SuperElastix/elastix test data (see data/PROVENANCE.md)",
            "landmarks_dropped": int((~keep).sum()),
        },
    )


# ------------------------------------------------------------------------------ DIR-LAB
def _dirlab_case_folder(root: Path, case: int) -> Path:
    names = [f"Case{case}Pack", f"Case{case}Deploy", f"case{case}", f"Case{case}", f"Case{case:02d}Pack"]
    for n in names:
        if (root / n).is_dir():
            return root / n
    return root


def load_dirlab_case(folder: str | Path, case: int) -> Pair:
    """DIR-LAB 4DCT case ``case`` (1-10) from ``folder`` (the folder holding ``Case{i}Pack`` /
    ``Case{i}Deploy`` subfolders, or the case folder itself). Fixed = T00 (inhale), moving =
    T50 (exhale); images in HU; the 300 landmarks ``Case{i}_300_T00_xyz.txt`` / ``_T50_xyz.txt``
    (1-based voxel x y z) converted to world mm."""
    base = _dirlab_case_folder(Path(folder), case)
    subdirs = [base, base / "Images", base / "images"]
    lm_dirs = [base, base / "ExtremePhases", base / "Sampled4D", base / "landmarks"]

    def image(phase: str) -> Path:
        stems = [f"case{case}_T{phase}_s", f"case{case}_T{phase}-ssm", f"case{case}_T{phase}", f"Case{case}_T{phase}"]
        return _first_existing([d / f"{s}.img" for d in subdirs for s in stems], f"DIR-LAB case {case} T{phase} in {base}")

    def landmarks(phase: str) -> Path:
        names = [f"Case{case}_300_T{phase}_xyz.txt", f"case{case}_300_T{phase}_xyz.txt", f"Case{case}_300_T{phase}.txt"]
        return _first_existing([d / n for d in lm_dirs for n in names], f"DIR-LAB case {case} T{phase} landmarks in {base}")

    fixed = read_dirlab_img(image("00"), case)
    moving = read_dirlab_img(image("50"), case)
    return Pair(
        fixed=fixed, moving=moving,
        fixed_landmarks=read_dirlab_landmarks(landmarks("00"), fixed.grid),
        moving_landmarks=read_dirlab_landmarks(landmarks("50"), moving.grid),
        name=f"dirlab-case{case:02d}", dataset="dirlab",
    )


# --------------------------------------------------------------------------------- NLST
def load_nlst_pair(folder: str | Path, case_id: int) -> Pair:
    """Learn2Reg NLST pair ``case_id``: ``imagesTr/NLST_XXXX_0000.nii.gz`` fixed (inspiration),
    ``_0001`` moving, ``masksTr/`` lung masks and ``keypointsTr/NLST_XXXX_000{0,1}.csv`` (0-based
    voxel indices, see :func:`reindir_nb.io.read_learn2reg_keypoints`) when present."""
    root = Path(folder)
    stem = f"NLST_{case_id:04d}"
    fixed = read_image(root / "imagesTr" / f"{stem}_0000.nii.gz")
    moving = read_image(root / "imagesTr" / f"{stem}_0001.nii.gz")
    masks = [root / "masksTr" / f"{stem}_000{i}.nii.gz" for i in (0, 1)]
    fmask, mmask = [read_image(p) if p.is_file() else None for p in masks]
    kps = [root / "keypointsTr" / f"{stem}_000{i}.csv" for i in (0, 1)]
    fl = ml = None
    if all(p.is_file() for p in kps):
        fl = read_learn2reg_keypoints(kps[0], fixed.grid)
        ml = read_learn2reg_keypoints(kps[1], moving.grid)
    return Pair(
        fixed=fixed, moving=moving, fixed_landmarks=fl, moving_landmarks=ml,
        fixed_mask=None if fmask is None else fmask.with_array(fmask.array > 0),
        moving_mask=None if mmask is None else mmask.with_array(mmask.array > 0),
        name=f"nlst-{case_id:04d}", dataset="nlst",
    )


# --------------------------------------------------------------------------------- CBCT
def load_cbct_pair(folder: str | Path, case_id: int, cbct: int = 1) -> Pair:
    """Learn2Reg lung CBCT: fixed = CBCT ``ThoraxCBCT_XXXX_000{cbct}`` (1 = start, 2 = end of
    therapy), moving = planning fan-beam CT ``_0000``, as in the challenge. Keypoints from the
    challenge's ``keypointsTr`` folder, or from the regenerated set of van Harten et al.
    (``keypoints01Tr/ThoraxCMASKBCT_XXXX_000{0,1}.csv``, ``keypoints02Tr/..._000{0,2}.csv``)."""
    if cbct not in (1, 2):
        raise ValueError(f"{folder}: cbct must be 1 or 2, got {cbct}")
    root = Path(folder)
    stem = f"ThoraxCBCT_{case_id:04d}"
    fixed = read_image(root / "imagesTr" / f"{stem}_000{cbct}.nii.gz")
    moving = read_image(root / "imagesTr" / f"{stem}_0000.nii.gz")
    masks = [root / "masksTr" / f"{stem}_000{i}.nii.gz" for i in (cbct, 0)]
    fmask, mmask = [read_image(p) if p.is_file() else None for p in masks]
    candidates = [
        (root / "keypointsTr" / f"{stem}_000{cbct}.csv", root / "keypointsTr" / f"{stem}_0000.csv"),
        (root / f"keypoints0{cbct}Tr" / f"ThoraxCMASKBCT_{case_id:04d}_000{cbct}.csv",
         root / f"keypoints0{cbct}Tr" / f"ThoraxCMASKBCT_{case_id:04d}_0000.csv"),
    ]
    fl = ml = None
    for fixed_kp, moving_kp in candidates:
        if fixed_kp.is_file() and moving_kp.is_file():
            fl = read_learn2reg_keypoints(fixed_kp, fixed.grid)
            ml = read_learn2reg_keypoints(moving_kp, moving.grid)
            break
    return Pair(
        fixed=fixed, moving=moving, fixed_landmarks=fl, moving_landmarks=ml,
        fixed_mask=None if fmask is None else fmask.with_array(fmask.array > 0),
        moving_mask=None if mmask is None else mmask.with_array(mmask.array > 0),
        name=f"cbct-{case_id:04d}-cbct{cbct}", dataset="cbct",
    )


# ------------------------------------------------------------------------------ generic
def load_generic_pair(
    fixed: str | Path,
    moving: str | Path,
    fixed_landmarks: str | Path | None = None,
    moving_landmarks: str | Path | None = None,
    units: str | None = None,
    fixed_mask: str | Path | None = None,
    moving_mask: str | Path | None = None,
    one_based: bool = False,
    name: str | None = None,
    dataset: str = "generic",
) -> Pair:
    """Any SimpleITK-readable image pair, with optional landmark csv/txt files whose ``units``
    ("mm" or "voxel") must be stated explicitly — never guessed."""
    fvol, mvol = read_image(fixed), read_image(moving)
    fl = ml = None
    if fixed_landmarks is not None or moving_landmarks is not None:
        if fixed_landmarks is None or moving_landmarks is None:
            raise ValueError(f"{fixed_landmarks or moving_landmarks}: landmarks need both a fixed and a moving file")
        if units is None:
            raise ValueError(f"{fixed_landmarks}: say units='mm' or units='voxel' for the landmark files")
        fl = read_points(fixed_landmarks, units, fvol.grid, one_based)
        ml = read_points(moving_landmarks, units, mvol.grid, one_based)
    fm = read_image(fixed_mask) if fixed_mask else None
    mm = read_image(moving_mask) if moving_mask else None
    return Pair(
        fixed=fvol, moving=mvol, fixed_landmarks=fl, moving_landmarks=ml,
        fixed_mask=None if fm is None else fm.with_array(fm.array > 0),
        moving_mask=None if mm is None else mm.with_array(mm.array > 0),
        name=name or Path(fixed).name.split(".")[0], dataset=dataset,
    )


# ----------------------------------------------------------------------------- registry
def _split_spec(spec: str) -> tuple[str, str, str | None]:
    scheme, _, rest = spec.partition(":")
    m = re.match(r"^(.*?)(?::(\d+))?$", rest)
    return scheme, (m.group(1) if m else rest), (m.group(2) if m else None)


def load_pair(spec: str, **kwargs) -> Pair:
    """Load one pair from a spec string (see the module docstring)."""
    scheme, body, number = _split_spec(spec)
    if scheme == "bundled":
        if body == "elastix-lung":
            return load_elastix_lung_pair(**kwargs)
        if body == "thorax-ct":
            from .bundled import thorax_ct_pair

            return thorax_ct_pair(**kwargs)
        raise ValueError(f"{spec}: unknown bundled pair (use bundled:elastix-lung or bundled:thorax-ct)")
    if scheme == "phantom":
        from .phantom import make_pair

        seed = int(number) if number is not None else kwargs.pop("seed", 0)
        return make_pair(seed=seed, style=body, **kwargs)
    if number is None and scheme in ("dirlab", "nlst", "cbct"):
        raise ValueError(f"{spec}: give the case after the folder, e.g. {scheme}:/data/folder:1")
    if scheme == "dirlab":
        return load_dirlab_case(body, int(number))
    if scheme == "nlst":
        return load_nlst_pair(body, int(number))
    if scheme == "cbct":
        return load_cbct_pair(body, int(number), **kwargs)
    raise ValueError(f"{spec}: unknown data set scheme {scheme!r} (bundled, phantom, dirlab, nlst, cbct)")


def load_cohort(spec: str, **kwargs) -> list[Pair]:
    """All pairs of a set: ``dirlab:<folder>`` (cases found), ``nlst:<folder>`` (ids in
    imagesTr), ``cbct:<folder>`` (both CBCTs of each id), ``phantom:<style>`` (n=, seed=, profile=)."""
    scheme, body, _ = _split_spec(spec)
    if scheme == "phantom":
        from .phantom import make_cohort

        return make_cohort(body, **kwargs)
    root = Path(body)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data set folder not found")
    if scheme == "dirlab":
        cases = sorted({int(m.group(1)) for p in root.rglob("*.img") if (m := re.match(r"case(\d+)_T00", p.name, re.I))})
        return [load_dirlab_case(root, c) for c in cases]
    if scheme in ("nlst", "cbct"):
        prefix = "NLST" if scheme == "nlst" else "ThoraxCBCT"
        ids = sorted({int(m.group(1)) for p in (root / "imagesTr").glob(f"{prefix}_*_0000.nii.gz")
                      if (m := re.match(rf"{prefix}_(\d+)_0000", p.name))})
        if scheme == "nlst":
            return [load_nlst_pair(root, i) for i in ids]
        return [load_cbct_pair(root, i, c) for i in ids for c in (1, 2)
                if (root / "imagesTr" / f"ThoraxCBCT_{i:04d}_000{c}.nii.gz").is_file()]
    raise ValueError(f"{spec}: unknown cohort scheme {scheme!r}")


def dataset_json(folder: str | Path) -> dict:
    """The Learn2Reg dataset json (``NLST_dataset.json``, ``ThoraxCBCT_dataset.json``) if present."""
    found = sorted(Path(folder).glob("*_dataset.json"))
    return json.loads(found[0].read_text()) if found else {}


# ------------------------------------------------------------------------------- splits
def kfold_splits(pairs: Sequence[Pair], k: int = 5, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """k folds over pooled pairs, stratified per ``pair.dataset``: each fold's test set holds
    ~1/k of every data set; every pair is held out exactly once. Returns
    ``[(train_indices, test_indices), ...]``."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    by_set: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_set.setdefault(p.dataset, []).append(i)
    offset = 0
    for name in sorted(by_set):
        idx = list(rng.permutation(by_set[name]))
        for j, i in enumerate(idx):
            folds[(j + offset) % k].append(int(i))
        offset += len(idx)
    everything = set(range(len(pairs)))
    return [(sorted(everything - set(f)), sorted(f)) for f in folds]
