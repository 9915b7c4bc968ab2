"""Data sets as Pairs: the public lung sets (DIR-LAB, Learn2Reg NLST, Learn2Reg lung CBCT),
generic image pairs, the bundled real data, phantoms, and k-fold splits.

Every loader returns :class:`~reindir_nb.pair.Pair` objects with float32 HU images, boolean
masks and landmarks in world mm ``(x, y, z)`` (file conventions: :mod:`reindir_nb.io`).
Specs understood by :func:`load_pair` / :func:`load_cohort`::

    bundled:elastix-lung          REAL lung CT pair with real landmarks (fixed = baseline)
    bundled:thorax-ct             real CT, simulated breathing (seed=...)
    phantom:<style>[:<seed>]      synthetic breathing thorax (dirlab | nlst | cbct)
    dirlab:<folder>[:<case>]      DIR-LAB 4DCT, fixed = T00 (inhale), moving = T50 (exhale)
    nlst:<folder>[:<id>]          Learn2Reg NLST, fixed = _0000, moving = _0001
    cbct:<folder>[:<id>]          Learn2Reg lung CBCT, fixed = CBCT (_0001/_0002), moving = planning CT (_0000)

Without the number, :func:`load_cohort` loads every pair found. Where to download the public
sets and their folder layouts: ``data/README.md``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.pair import Pair
from ..core.volume import Volume
from .images import DIRLAB_CASES, ct_value_problem, read_dirlab_img, read_image
from .points import read_dirlab_landmarks, read_elastix_points, read_learn2reg_keypoints, read_points

__all__ = [
    "Pair",
    "data_root",
    "bundled_folder",
    "elastix_lung_landmarks",
    "load_elastix_lung_pair",
    "load_dirlab_case",
    "load_nlst_pair",
    "load_cbct_pair",
    "load_generic_pair",
    "dataset_json",
    "load_pair",
    "load_cohort",
    "kfold_splits",
]

ELASTIX_LUNG_LABEL = "real pair, real landmarks"
REGENERATED_CBCT_KEYPOINTS = "louisvh/cbct_generated_keypoints"


# ------------------------------------------------------------------------------ helpers
def _ct(vol: Volume, hu_offset: float = 0.0) -> Volume:
    """A CT as float32 HU (``stored - hu_offset``); a warning names the file when the values do not
    look like HU (e.g. an unsigned export storing HU + 1024: pass ``hu_offset=1024``)."""
    vol.require_scalar("a CT image")
    arr = vol.array if vol.array.dtype == np.float32 else vol.array.astype(np.float32)
    if hu_offset:
        arr = arr - np.float32(hu_offset)
    problem = ct_value_problem(arr)
    if problem:
        fix = ("pass hu_offset=1024 if the file stores HU + 1024 (unsigned exports do)"
               if problem.startswith("no air") else "check the file's units (HU expected) and hu_offset")
        warnings.warn(f"{vol.name or 'image'}: does not look like a CT in HU: {problem}; {fix}", stacklevel=3)
    return vol if arr is vol.array else vol.with_array(arr)


def _mask(path: Path | None, image: Volume | None = None, resample: bool = False) -> Volume | None:
    """A mask file as a bool Volume (None when ``path`` is None or absent). With ``resample`` a mask
    on another grid than ``image`` is resampled onto it in world space (nearest neighbour), with a
    warning saying so; otherwise :class:`Pair` refuses the mismatch."""
    if path is None or not Path(path).is_file():
        return None
    vol = read_image(path)
    vol = vol.with_array(vol.array > 0)
    if resample and image is not None:
        differ = vol.grid.differences(image.grid)
        if differ:
            from .preprocess import resample_to_grid

            warnings.warn(f"{path}: mask grid differs from its image {image.name or ''} ({'; '.join(differ)}); "
                          f"resampled onto the image grid in world space (nearest neighbour)", stacklevel=3)
            vol = resample_to_grid(vol, image.grid, order=0)
    return vol


def _make_pair(
    fixed: Volume,
    moving: Volume,
    landmarks: tuple[tuple[Path, np.ndarray], tuple[Path, np.ndarray]] | None,
    hu_offset: float = 0.0,
    check_ct: bool = True,
    **fields: Any,
) -> Pair:
    """A validated Pair of float32 HU images (``stored - hu_offset``, checked by :func:`_ct` unless the
    reader already did); landmark count mismatches name both files."""
    fl = ml = None
    if landmarks is not None:
        (fpath, fl), (mpath, ml) = landmarks
        if len(fl) != len(ml):
            raise ValueError(
                f"{fields.get('name', 'pair')}: {len(fl)} fixed landmarks in {fpath} but {len(ml)} moving "
                f"landmarks in {mpath}; they must correspond one to one"
            )
    if check_ct:
        fixed, moving = _ct(fixed, hu_offset), _ct(moving, hu_offset)
    return Pair(fixed=fixed, moving=moving, fixed_landmarks=fl, moving_landmarks=ml, **fields)


def _case_number(case_id: int | str, what: str) -> int:
    try:
        return int(case_id)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: case id must be a number, got {case_id!r}") from None


# ------------------------------------------------------------------------------ bundled
def data_root() -> Path:
    """The kit's bundled data folder: ``$REINDIR_NB_DATA`` if set, else ``data/`` next to the package."""
    env = os.environ.get("REINDIR_NB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def bundled_folder(name: str) -> Path:
    """``data_root() / name``, with a clear error when the bundled data is not there."""
    folder = data_root() / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: bundled data not found. It ships in the repository's data/ folder; "
            f"with an installed package, set REINDIR_NB_DATA to a copy of that folder."
        )
    return folder


def elastix_lung_landmarks(root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ALL 100 landmark pairs of the bundled elastix lung files, world mm: (baseline = fixed,
    ground truth = moving). Mean distance 34.3 mm; 49 of them lie outside the one-lung images
    (see :func:`load_elastix_lung_pair`)."""
    folder = Path(root) if root is not None else bundled_folder("elastix_lung_pair")
    fixed_file = folder / "3DCT_lung_baseline_landmarks.txt"
    moving_file = folder / "3DCT_lung_groundtruth_point.txt"
    fl, ml = read_elastix_points(fixed_file), read_elastix_points(moving_file)
    if len(fl) != len(ml):
        raise ValueError(f"{fixed_file}: {len(fl)} points but {moving_file} holds {len(ml)}")
    return fl, ml


def load_elastix_lung_pair(root: str | Path | None = None) -> Pair:
    """The bundled REAL lung CT pair (elastix test data): fixed = baseline, moving = follow-up,
    lung masks, real corresponding landmarks in world mm (baseline file = fixed, ground-truth
    point file = moving). ``meta["label"] = "real pair, real landmarks"``.

    The images hold ONE lung (115 x 157 x 129 voxels at 1.366 x 1.366 x 2.5 mm, world x < 1.9 mm),
    but the landmark files hold 100 points over both lungs: 49 lie in the other lung (x = 36 to
    99 mm, 22 to 71 voxels beyond the images), where no registration can be judged. They are dropped
    (``meta["landmarks_dropped"] = 49``), leaving 51 landmarks inside both images and both lung
    masks, mean initial distance 35.3 mm: exactly ITKElastix's ``*_point_set_corrected.txt``
    (``data/itkelastix_lung_point_sets/``). All 100: :func:`elastix_lung_landmarks` (34.3 mm).
    """
    folder = Path(root) if root is not None else bundled_folder("elastix_lung_pair")
    fixed = read_image(folder / "3DCT_lung_baseline.mha")
    moving = read_image(folder / "3DCT_lung_followup.mha")
    fl, ml = elastix_lung_landmarks(folder)
    keep = fixed.grid.contains(fl) & moving.grid.contains(ml)
    fixed_file, moving_file = folder / "3DCT_lung_baseline_landmarks.txt", folder / "3DCT_lung_groundtruth_point.txt"
    return _make_pair(
        fixed, moving, ((fixed_file, fl[keep]), (moving_file, ml[keep])),
        fixed_mask=_mask(folder / "3DCT_lung_baseline_mask.mha"),
        moving_mask=_mask(folder / "3DCT_lung_followup_mask.mha"),
        name="elastix-lung",
        dataset="elastix-lung",
        meta={
            "label": ELASTIX_LUNG_LABEL,
            "source": "SuperElastix/elastix test data 3DCT_lung (see data/PROVENANCE.md)",
            "landmarks_in_files": int(len(fl)),
            "landmarks_dropped": int((~keep).sum()),
        },
    )


# ------------------------------------------------------------------------------ DIR-LAB
def _files_matching(base: Path, pattern: re.Pattern, depth: int = 2) -> list[Path]:
    """Files under ``base`` (at most ``depth`` folders down) whose name matches ``pattern``."""
    found = []
    base_depth = len(base.parts)
    for dirpath, dirnames, filenames in os.walk(base):
        if len(Path(dirpath).parts) - base_depth >= depth:
            dirnames[:] = []
        found += [Path(dirpath) / f for f in filenames if pattern.match(f)]
    return sorted(found)


def _one_file(base: Path, pattern: re.Pattern, what: str) -> Path:
    found = _files_matching(base, pattern)
    if not found:
        raise FileNotFoundError(f"{base}: no {what} found (file name pattern {pattern.pattern})")
    if len(found) > 1:
        raise ValueError(f"{base}: several candidates for {what}: {', '.join(str(f) for f in found)}")
    return found[0]


def _dirlab_case_folder(root: Path, case: int) -> Path:
    """``Case{i}Pack`` / ``Case{i}Deploy`` / ``case{i}`` under ``root`` (any capitalisation), else ``root``."""
    pattern = re.compile(rf"^case0?{case}(pack|deploy)?$", re.I)
    matches = sorted(p for p in root.iterdir() if p.is_dir() and pattern.match(p.name)) if root.is_dir() else []
    if len(matches) > 1:
        raise ValueError(f"{root}: several folders for DIR-LAB case {case}: {', '.join(p.name for p in matches)}")
    return matches[0] if matches else root


def load_dirlab_case(folder: str | Path, case: int) -> Pair:
    """DIR-LAB 4DCT case ``case`` (1-10). ``folder`` holds ``Case{i}Pack`` / ``Case{i}Deploy``
    folders, or is the case folder itself. Fixed = T00 (inhale), moving = T50 (exhale), images
    in HU (:func:`reindir_nb.io.read_dirlab_img`), the 300 landmarks of
    ``Case{i}_300_T00_xyz.txt`` / ``_T50_xyz.txt`` (1-based voxel x y z, anywhere up to two
    folders down, e.g. ``ExtremePhases/``) in world mm.

    Image names accepted: ``case{i}_T00.img`` with an optional suffix (``case1_T00_s.img``,
    ``case2_T00-ssm.img``), any capitalisation, in the case folder or e.g. ``Images/``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: DIR-LAB folder not found")
    if case not in DIRLAB_CASES:
        raise ValueError(f"{root}: unknown DIR-LAB case {case!r} (cases are 1-10)")
    base = _dirlab_case_folder(root, case)

    def image(phase: str) -> Volume:
        pattern = re.compile(rf"^case{case}_T{phase}([_-][a-z0-9]+)?\.img$", re.I)
        return read_dirlab_img(_one_file(base, pattern, f"DIR-LAB case {case} T{phase} image"), case)

    def landmarks(phase: str, vol: Volume) -> tuple[Path, np.ndarray]:
        pattern = re.compile(rf"^case{case}_300_T{phase}_xyz\.txt$", re.I)
        path = _one_file(base, pattern, f"DIR-LAB case {case} T{phase} landmarks")
        return path, read_dirlab_landmarks(path, vol.grid)

    fixed, moving = image("00"), image("50")
    return _make_pair(
        fixed, moving, (landmarks("00", fixed), landmarks("50", moving)), check_ct=False,
        name=f"dirlab-case{case:02d}", dataset="dirlab",
        meta={"source": "DIR-LAB 4DCT", "case": case, "fixed_phase": "T00", "moving_phase": "T50"},
    )


def _dirlab_cases(root: Path) -> list[int]:
    cases = []
    for case in DIRLAB_CASES:
        pattern = re.compile(rf"^case{case}_T00([_-][a-z0-9]+)?\.img$", re.I)
        if _files_matching(_dirlab_case_folder(root, case), pattern):
            cases.append(case)
    return cases


# -------------------------------------------------------------------------- Learn2Reg
def dataset_json(folder: str | Path) -> dict:
    """The Learn2Reg dataset json (``NLST_dataset.json``, ``ThoraxCBCT_dataset.json``) in
    ``folder``, or ``{}`` when there is none."""
    found = sorted(Path(folder).glob("*_dataset.json"))
    if not found:
        return {}
    if len(found) > 1:
        raise ValueError(f"{folder}: several dataset json files: {', '.join(p.name for p in found)}")
    try:
        return json.loads(found[0].read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{found[0]}: not valid JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{found[0]}: not a UTF-8 text file (byte {err.start}); a dataset json was expected") from None


def _json_pairs(info: dict) -> list[tuple[str, str]]:
    """(fixed, moving) file names listed by a Learn2Reg dataset json, training then validation."""
    pairs = []
    for key in ("training_paired_images", "registration_val", "registration_test"):
        for entry in info.get(key, []) or []:
            if isinstance(entry, dict) and "fixed" in entry and "moving" in entry:
                pairs.append((Path(entry["fixed"]).name, Path(entry["moving"]).name))
    return pairs


def _json_meta(info: dict) -> dict:
    return {k: info[k] for k in ("name", "release", "registration_direction") if k in info}


def load_nlst_pair(folder: str | Path, case_id: int | str) -> Pair:
    """Learn2Reg NLST pair ``case_id``: fixed = ``imagesTr/NLST_XXXX_0000.nii.gz`` (inspiration),
    moving = ``_0001`` — or the pairing that ``NLST_dataset.json`` lists for this id when the
    json is present. Lung masks from ``masksTr/`` and keypoints from ``keypointsTr/<image>.csv``
    (0-based voxel (i, j, k), see :func:`reindir_nb.io.read_learn2reg_keypoints`) when present."""
    root = Path(folder)
    case = _case_number(case_id, str(root))
    info = dataset_json(root)
    stem = f"NLST_{case:04d}"
    listed = [p for p in _json_pairs(info) if p[0].startswith(stem + "_")]
    fixed_name, moving_name = listed[0] if listed else (f"{stem}_0000.nii.gz", f"{stem}_0001.nii.gz")
    return _learn2reg_pair(
        root, fixed_name, moving_name, root / "keypointsTr", name=f"nlst-{case:04d}", dataset="nlst",
        meta={"source": "Learn2Reg NLST", "case": case, **({"dataset_json": _json_meta(info)} if info else {})},
    )


def _image_stem(name: str) -> str:
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem


def _learn2reg_pair(
    root: Path, fixed_name: str, moving_name: str, keypoint_dir: Path | None,
    fixed_keypoints: Path | None = None, moving_keypoints: Path | None = None, **fields: Any,
) -> Pair:
    fixed = read_image(root / "imagesTr" / fixed_name)
    moving = read_image(root / "imagesTr" / moving_name)
    fstem, mstem = _image_stem(fixed_name), _image_stem(moving_name)
    fixed_mask = _mask(root / "masksTr" / f"{fstem}.nii.gz")
    moving_mask = _mask(root / "masksTr" / f"{mstem}.nii.gz")
    if keypoint_dir is not None:
        fixed_keypoints = keypoint_dir / f"{fstem}.csv"
        moving_keypoints = keypoint_dir / f"{mstem}.csv"
    landmarks = None
    present = [p for p in (fixed_keypoints, moving_keypoints) if p is not None and p.is_file()]
    if len(present) == 1:
        missing = moving_keypoints if present[0] == fixed_keypoints else fixed_keypoints
        raise FileNotFoundError(f"{missing}: keypoint file not found (its partner {present[0]} exists)")
    if len(present) == 2:
        landmarks = (
            (fixed_keypoints, read_learn2reg_keypoints(fixed_keypoints, fixed.grid, fixed_mask)),
            (moving_keypoints, read_learn2reg_keypoints(moving_keypoints, moving.grid, moving_mask)),
        )
    return _make_pair(fixed, moving, landmarks, fixed_mask=fixed_mask, moving_mask=moving_mask, **fields)


def _cbct_keypoint_files(
    root: Path, keypoint_folder: Path | None, case: int, cbct: int, keypoints: str | None
) -> tuple[Path | None, Path | None, str | None]:
    """(fixed csv, moving csv, source) of a CBCT pair; ``keypoints`` = "auto" | "regenerated" |
    "challenge" | None."""
    folder = f"keypoints0{cbct}Tr"
    candidates = {
        "regenerated": ((keypoint_folder or root) / folder, f"ThoraxCMASKBCT_{case:04d}"),
        "challenge": (root / folder, f"ThoraxCBCT_{case:04d}"),
    }
    if keypoints is None:
        return None, None, None
    if keypoints not in ("auto", *candidates):
        raise ValueError(f"{root}: keypoints must be 'auto', 'regenerated', 'challenge' or None, got {keypoints!r}")
    order = ["regenerated", "challenge"] if keypoints == "auto" else [keypoints]
    for source in order:
        kdir, stem = candidates[source]
        fixed_csv, moving_csv = kdir / f"{stem}_000{cbct}.csv", kdir / f"{stem}_0000.csv"
        if fixed_csv.is_file() and moving_csv.is_file():
            return fixed_csv, moving_csv, source
        if keypoints != "auto":
            raise FileNotFoundError(f"{kdir}: {source} keypoints {fixed_csv.name} / {moving_csv.name} not found")
    return None, None, None


def load_cbct_pair(
    folder: str | Path,
    case_id: int | str,
    cbct: int = 1,
    keypoints: str | None = "auto",
    keypoint_folder: str | Path | None = None,
) -> Pair:
    """Learn2Reg lung CBCT (ThoraxCBCT) pair: fixed = CBCT ``imagesTr/ThoraxCBCT_XXXX_000{cbct}``
    (1 = start, 2 = end of therapy), moving = planning fan-beam CT ``_0000``, as in the challenge.

    Keypoints (0-based voxel (i, j, k) csv) for CBCT ``c`` come from ``keypoints0{c}Tr/``:

    * ``"regenerated"``: the REINDIR paper's regenerated set (repository
      louisvh/cbct_generated_keypoints) ``ThoraxCMASKBCT_XXXX_000{0,c}.csv``, looked for in
      ``keypoint_folder`` (the clone of that repository) or else in ``folder``; its README notes
      that pairs 9 and 11 of keypoints02 failed to converge;
    * ``"challenge"``: the challenge's own ``ThoraxCBCT_XXXX_000{0,c}.csv``;
    * ``"auto"`` (default): regenerated if present, else the challenge's, else none;
      ``None``: no landmarks. ``meta["keypoints"]`` says which were used.
    """
    root = Path(folder)
    case = _case_number(case_id, str(root))
    if cbct not in (1, 2):
        raise ValueError(f"{root}: cbct must be 1 (start of therapy) or 2 (end of therapy), got {cbct!r}")
    kfolder = Path(keypoint_folder) if keypoint_folder is not None else None
    fixed_csv, moving_csv, source = _cbct_keypoint_files(root, kfolder, case, cbct, keypoints)
    info = dataset_json(root)
    meta: dict[str, Any] = {"source": "Learn2Reg ThoraxCBCT", "case": case, "cbct": cbct, "keypoints": source}
    if source == "regenerated":
        meta["keypoints_from"] = REGENERATED_CBCT_KEYPOINTS
    if info:
        meta["dataset_json"] = _json_meta(info)
    return _learn2reg_pair(
        root, f"ThoraxCBCT_{case:04d}_000{cbct}.nii.gz", f"ThoraxCBCT_{case:04d}_0000.nii.gz", None,
        fixed_keypoints=fixed_csv, moving_keypoints=moving_csv,
        name=f"cbct-{case:04d}-cbct{cbct}", dataset="cbct", meta=meta,
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
    hu_offset: float = 0.0,
    resample_masks: bool = False,
) -> Pair:
    """Any SimpleITK-readable image pair, optional masks and landmark files (csv/txt or elastix
    point sets, see :func:`reindir_nb.io.read_points`). ``units`` ("mm" or "voxel"; voxel
    indices 0-based unless ``one_based``) must be stated whenever landmarks are given. The pair is
    named after the fixed file (``dataclasses.replace(pair, name=..., dataset=...)`` renames it).

    ``hu_offset`` is subtracted from both images (1024 for unsigned exports storing HU + 1024; a
    warning suggests it when an image has no air). A mask must lie on its image's grid (a
    ValueError otherwise); ``resample_masks=True`` resamples it onto that grid in world space
    (nearest neighbour) with a warning instead."""
    fvol, mvol = read_image(fixed), read_image(moving)
    landmarks = None
    if fixed_landmarks is not None or moving_landmarks is not None:
        if fixed_landmarks is None or moving_landmarks is None:
            raise ValueError(f"{fixed_landmarks or moving_landmarks}: landmarks need both a fixed and a moving file")
        if units is None:
            raise ValueError(f"{fixed_landmarks}: say units='mm' or units='voxel' for the landmark files")
        fpath, mpath = Path(fixed_landmarks), Path(moving_landmarks)
        landmarks = (
            (fpath, read_points(fpath, units, fvol.grid, one_based)),
            (mpath, read_points(mpath, units, mvol.grid, one_based)),
        )
    for mask_file in (fixed_mask, moving_mask):
        if mask_file is not None and not Path(mask_file).is_file():
            raise FileNotFoundError(f"{mask_file}: file not found")
    return _make_pair(
        fvol, mvol, landmarks, hu_offset=hu_offset,
        fixed_mask=_mask(fixed_mask, fvol, resample_masks), moving_mask=_mask(moving_mask, mvol, resample_masks),
        name=_image_stem(Path(fixed).name), dataset="generic",
        meta={"source": "generic", "fixed_file": str(fixed), "moving_file": str(moving)},
    )


# ----------------------------------------------------------------------------- registry
_REAL_SCHEMES = ("dirlab", "nlst", "cbct")


def _split_spec(spec: str) -> tuple[str, str, str | None]:
    """``"scheme:body[:number]"`` -> (scheme, body, number or None)."""
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ValueError(f"{spec!r}: a data spec looks like 'scheme:what[:number]' (see reindir_nb.datasets)")
    m = re.fullmatch(r"(.*?)(?::(\d+))?", rest)
    return scheme, m.group(1), m.group(2)


# ------------------------------------------------------------------------------- registry
PairLoader = Callable[..., Pair]
# scheme -> (pair loader(body, number, **kwargs), cohort loader(body, **kwargs) or None).
# The real sets are registered below; :mod:`reindir_nb.simulation` registers "phantom" and the
# bundled pairs it simulates (``import reindir_nb`` imports it, so every scheme is available).
_SCHEMES: dict[str, tuple[Callable[..., Pair], Callable[..., list[Pair]] | None]] = {}
_BUNDLED: dict[str, PairLoader] = {}


def register_source(scheme: str, load_one: Callable[..., Pair],
                    load_all: Callable[..., list[Pair]] | None = None) -> None:
    """Make ``scheme:`` specs loadable: ``load_one(body, number, **kwargs)`` returns one pair
    (``number`` is None when the spec has none), ``load_all(body, **kwargs)`` a cohort."""
    _SCHEMES[scheme] = (load_one, load_all)


def register_bundled(name: str, loader: PairLoader) -> None:
    """Make ``bundled:<name>`` loadable (``loader(**kwargs)`` returns the pair)."""
    _BUNDLED[name] = loader


def load_pair(spec: str, **kwargs: Any) -> Pair:
    """One pair from a spec string (see the module docstring); ``kwargs`` go to the loader
    (e.g. ``seed=`` for ``bundled:thorax-ct`` and phantoms, ``cbct=2`` for ``cbct:``)."""
    if not isinstance(spec, str):
        raise TypeError(f"load_pair: spec must be a string such as 'bundled:elastix-lung', got {type(spec).__name__}")
    scheme, body, number = _split_spec(spec)
    if scheme not in _SCHEMES:
        raise ValueError(f"{spec}: unknown data set scheme {scheme!r} ({', '.join(sorted(_SCHEMES))})")
    return _SCHEMES[scheme][0](body, number, **kwargs)


def load_cohort(spec: str, progress: bool = True, **kwargs: Any) -> list[Pair]:
    """All pairs of a set: ``dirlab:<folder>`` (every case found), ``nlst:<folder>`` (the
    dataset json's pairs, else every ``imagesTr/NLST_*_0000``), ``cbct:<folder>`` (both CBCTs of
    every id, or only ``cbct=1|2``), ``phantom:<style>`` (``n=``, ``seed=``, ``profile=``)."""
    scheme, body, number = _split_spec(spec)
    load_all = _SCHEMES.get(scheme, (None, None))[1]
    if load_all is None:
        cohorts = sorted(k for k, v in _SCHEMES.items() if v[1] is not None)
        raise ValueError(f"{spec}: unknown cohort scheme {scheme!r} ({', '.join(cohorts)})")
    if number is not None:
        raise ValueError(f"{spec}: a cohort spec names a folder only; use load_pair for one case")
    return load_all(body, progress=progress, **kwargs)


def _load_bundled(body: str, number: str | None, **kwargs: Any) -> Pair:
    if body not in _BUNDLED:
        raise ValueError(f"bundled:{body}: unknown bundled pair ({', '.join('bundled:' + k for k in sorted(_BUNDLED))})")
    return _BUNDLED[body](**kwargs)


def _load_real_pair(scheme: str) -> Callable[..., Pair]:
    loaders = {"dirlab": load_dirlab_case, "nlst": load_nlst_pair, "cbct": load_cbct_pair}

    def load_one(body: str, number: str | None, **kwargs: Any) -> Pair:
        if number is None:
            raise ValueError(f"{scheme}:{body}: give the case after the folder, e.g. {scheme}:/data/folder:1 "
                             "(or use load_cohort)")
        return loaders[scheme](body, int(number), **kwargs)

    return load_one


def _load_real_cohort(scheme: str) -> Callable[..., list[Pair]]:
    def load_all(body: str, progress: bool = True, **kwargs: Any) -> list[Pair]:
        from tqdm.auto import tqdm

        root = Path(body)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: data set folder not found")
        if scheme == "dirlab":
            jobs = [(load_dirlab_case, (root, c), {}) for c in _dirlab_cases(root)]
        elif scheme == "nlst":
            listed = [n for n, _ in _json_pairs(dataset_json(root))]
            listed = listed or [p.name for p in (root / "imagesTr").glob("NLST_*_0000.nii.gz")]
            ids = sorted({int(m.group(1)) for n in listed if (m := re.match(r"NLST_(\d+)_", n))})
            jobs = [(load_nlst_pair, (root, i), {}) for i in ids]
        else:
            wanted = kwargs.pop("cbct", None)
            ids = sorted({int(m.group(1)) for p in (root / "imagesTr").glob("ThoraxCBCT_*_0000.nii.gz")
                          if (m := re.match(r"ThoraxCBCT_(\d+)_0000", p.name))})
            jobs = [(load_cbct_pair, (root, i, c), kwargs) for i in ids for c in (1, 2)
                    if wanted in (None, c) and (root / "imagesTr" / f"ThoraxCBCT_{i:04d}_000{c}.nii.gz").is_file()]
        if not jobs:
            raise ValueError(f"{root}: no {scheme} pairs found (expected layouts: data/README.md)")
        return [fn(*args, **kw) for fn, args, kw in tqdm(jobs, desc=scheme, disable=not progress)]

    return load_all


register_source("bundled", _load_bundled)
register_bundled("elastix-lung", lambda **kwargs: load_elastix_lung_pair(**kwargs))
for _scheme in _REAL_SCHEMES:
    register_source(_scheme, _load_real_pair(_scheme), _load_real_cohort(_scheme))


# ------------------------------------------------------------------------------- splits
def kfold_splits(pairs: Sequence[Pair], k: int = 5, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """k folds over pooled pairs, stratified per ``pair.dataset``: each fold's test set holds
    ~1/k of every data set (the per-set counts differ by at most one between folds); every pair
    is held out exactly once. Deterministic from ``seed``. Returns
    ``[(train_indices, test_indices), ...]`` (sorted index lists into ``pairs``)."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if len(pairs) < k:
        raise ValueError(f"{len(pairs)} pairs cannot fill {k} folds")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    by_set: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_set.setdefault(p.dataset, []).append(i)
    offset = 0  # continue the round robin across sets so the fold sizes stay balanced too
    for name in sorted(by_set):
        for j, i in enumerate(rng.permutation(by_set[name])):
            folds[(j + offset) % k].append(int(i))
        offset += len(by_set[name])
    everything = set(range(len(pairs)))
    return [(sorted(everything - set(f)), sorted(f)) for f in folds]
