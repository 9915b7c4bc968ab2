"""Reading and writing images, landmark files and prepared pairs.

Every reader returns world-mm geometry (see :mod:`reindir_nb.geometry`): images as
:class:`~reindir_nb.volume.Volume`, points as ``(N, 3)`` world mm ``(x, y, z)``; every
index -> mm conversion goes through :class:`~reindir_nb.geometry.Grid`. Every writer is
atomic (a temporary name in the same folder, then ``os.replace``), and every error names
the file and the problem.

Landmark file conventions (pinned by ``tests/test_io.py`` with hand-computed mm values):

* DIR-LAB ``Case{i}_300_T00_xyz.txt``: ``x y z`` per line, **1-based** voxel indices.
* Learn2Reg keypoint csv (NLST, lung CBCT): no header, **0-based** voxel indices, columns in the
  NIfTI's axis order ``(i, j, k)`` = ITK index ``(x, y, z)`` (the reverse of SimpleITK's
  ``(z, y, x)`` numpy array).
* Elastix point sets: ``point`` (world mm) or ``index`` (0-based voxel) on line 1, the count on
  line 2, then ``x y z`` per line.
* Generic csv/txt: ``units="mm"`` or ``units="voxel"`` must be given; never guessed.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..core.files import atomic_folder, atomic_path
from ..core.geometry import Grid
from ..core.pair import Pair
from ..core.volume import Volume

__all__ = [
    "DIRLAB_CASES",
    "DIRLAB_SLICE_MM",
    "atomic_path",
    "atomic_folder",
    "read_image",
    "write_image",
    "dirlab_grid",
    "read_dirlab_img",
    "read_dirlab_landmarks",
    "read_learn2reg_keypoints",
    "read_points",
    "write_points_csv",
    "read_elastix_points",
    "write_elastix_points",
    "save_pair",
    "load_saved_pair",
    "save_pairs",
    "load_manifest",
]

# DIR-LAB 4DCT (Castillo et al. 2009): voxels (x, y, z) and in-plane spacing in mm; slices are 2.5 mm.
DIRLAB_CASES: dict[int, tuple[tuple[int, int, int], float]] = {
    1: ((256, 256, 94), 0.97),
    2: ((256, 256, 112), 1.16),
    3: ((256, 256, 104), 1.15),
    4: ((256, 256, 99), 1.13),
    5: ((256, 256, 106), 1.10),
    6: ((512, 512, 128), 0.97),
    7: ((512, 512, 136), 0.97),
    8: ((512, 512, 128), 0.97),
    9: ((512, 512, 128), 0.97),
    10: ((512, 512, 120), 0.97),
}
DIRLAB_SLICE_MM = 2.5
DIRLAB_HU_OFFSET = 1024.0  # stored value = HU + 1024

# landmarks may sit up to one voxel outside the voxel-centre box (as Pair.validate allows)
_LANDMARK_MARGIN_VOXELS = 1.0


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")


def _check_spacing(spacing: Sequence[float], where: str | Path) -> None:
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        shown = tuple(float(s) for s in spacing)
        raise ValueError(f"{where}: spacing {shown} mm is not positive (every voxel size must be > 0)")


def _sitk_reason(err: RuntimeError) -> str:
    """The informative last line of a SimpleITK exception (the first one is a source location)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    reason = lines[-1] if lines else "unknown reason"
    for prefix in ("sitk::ERROR:", "ITK ERROR:"):
        reason = reason.removeprefix(prefix).strip()
    return reason


# ----------------------------------------------------------------------------------- images
def _nifti_nonfinite_count(path: Path) -> int:
    """NaN/inf voxels in the raw data of a float NIfTI-1/2 file (0 for other files).

    Needed because ITK's NIfTI reader silently replaces NaN and inf by 0.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(540)
        for endian in "<>":
            if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] in (348, 540):
                break
        else:
            return 0
        if struct.unpack(endian + "i", head[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype = struct.unpack(endian + "h", head[70:72])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
        else:
            datatype = struct.unpack(endian + "h", head[12:14])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            offset = struct.unpack(endian + "q", head[168:176])[0]
        float_types = {16: "f4", 64: "f8"}  # NIfTI DT_FLOAT32, DT_FLOAT64
        if datatype not in float_types or not 1 <= dims[0] <= 7:
            return 0
        count = int(np.prod(dims[1 : dims[0] + 1]))
        dtype = np.dtype(endian + float_types[datatype])
        fh.seek(offset)
        data = np.frombuffer(fh.read(count * dtype.itemsize), dtype=dtype)
    return int(data.size - np.count_nonzero(np.isfinite(data)))


def read_image(path: str | Path) -> Volume:
    """Any SimpleITK-readable 3D image (NIfTI, MetaImage, NRRD, ...) as a Volume in its stored dtype.

    The header is checked before the voxels are read: a ValueError naming the file is raised
    when it cannot be read, is not 3D, or has zero/negative spacing (ITK would silently turn a
    negative spacing into a flipped direction and refuse a zero one with a cryptic message).
    Floating-point images are checked for NaN/inf (for NIfTI in the file's raw data: ITK's NIfTI
    reader silently turns NaN/inf into 0). A missing file raises FileNotFoundError.
    """
    import SimpleITK as sitk

    path = Path(path)
    _require_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ValueError(f"{path}: cannot read image ({_sitk_reason(err)})") from None
    if reader.GetDimension() != 3:
        raise ValueError(f"{path}: expected a 3D image, found {reader.GetDimension()}D")
    _check_spacing(reader.GetSpacing(), path)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ValueError(f"{path}: cannot read image ({_sitk_reason(err)})") from None
    try:
        vol = Volume.from_sitk(image, name=str(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if np.issubdtype(vol.array.dtype, np.floating):
        vol.check_finite()
        hidden = _nifti_nonfinite_count(path) if path.name.lower().endswith((".nii", ".nii.gz")) else 0
        if hidden:
            raise ValueError(f"{path}: contains {hidden} NaN/inf voxel values (in the file; ITK reads them as 0)")
    return vol


def write_image(volume: Volume, path: str | Path, compress: bool = True) -> Path:
    """Write a Volume with SimpleITK (format from the suffix, e.g. ``.mha``, ``.nii.gz``),
    atomically. Boolean arrays (masks) are written as uint8."""
    import SimpleITK as sitk

    path = Path(path)
    if volume.array.dtype == bool:
        volume = volume.with_array(volume.array.astype(np.uint8))
    with atomic_path(path) as tmp:
        sitk.WriteImage(volume.to_sitk(), str(tmp), compress)
    return path


def dirlab_grid(case: int) -> Grid:
    """Geometry of DIR-LAB case ``case`` (1-10): size and spacing from :data:`DIRLAB_CASES`,
    2.5 mm slices, origin 0, identity direction (the raw files carry no geometry)."""
    if case not in DIRLAB_CASES:
        raise ValueError(f"unknown DIR-LAB case {case!r} (cases are 1-10)")
    (nx, ny, nz), inplane = DIRLAB_CASES[case]
    return Grid((nz, ny, nx), spacing=(inplane, inplane, DIRLAB_SLICE_MM))


def read_dirlab_img(path: str | Path, case: int) -> Volume:
    """A DIR-LAB raw image: little-endian int16, no header, stored values HU+1024 -> float32 HU.

    Size and spacing come from :func:`dirlab_grid`. A file of the wrong size raises ValueError
    naming the file with the expected and actual byte counts.
    """
    path = Path(path)
    _require_file(path)
    if case not in DIRLAB_CASES:
        raise ValueError(f"{path}: unknown DIR-LAB case {case!r} (cases are 1-10)")
    grid = dirlab_grid(case)
    nz, ny, nx = grid.shape
    expected = nx * ny * nz * 2
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(
            f"{path}: {actual} bytes, but DIR-LAB case {case} ({nx}x{ny}x{nz} int16) needs {expected} bytes"
        )
    raw = np.fromfile(path, dtype="<i2").reshape(nz, ny, nx)
    return Volume(raw.astype(np.float32) - np.float32(DIRLAB_HU_OFFSET), grid, name=str(path))


# -------------------------------------------------------------------------------- landmarks
def _load_numeric_rows(path: Path) -> np.ndarray:
    """Rows of numbers separated by commas, semicolons, tabs or spaces; ``#`` comments and ONE
    leading non-numeric header line are skipped. Returns the first three columns."""
    _require_file(path)
    rows: list[list[float]] = []
    header_seen = False
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = [p for p in text.replace(",", " ").replace(";", " ").split() if p]
            try:
                values = [float(p) for p in parts]
            except ValueError:
                if not rows and not header_seen:
                    header_seen = True
                    continue
                raise ValueError(f"{path}: line {lineno} is not numeric: {text[:60]!r}") from None
            rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no points found")
    lengths = sorted({len(r) for r in rows})
    if len(lengths) != 1:
        raise ValueError(f"{path}: rows have different numbers of values {lengths}")
    arr = np.asarray(rows, dtype=np.float64)
    if arr.shape[1] < 3:
        raise ValueError(f"{path}: need 3 coordinates per line, found {arr.shape[1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: contains NaN/inf coordinates")
    return arr[:, :3]


def _check_index_inside(path: Path, index: np.ndarray, grid: Grid, convention: str) -> None:
    """Raise a ValueError naming the landmark file if 0-based indices (x, y, z) leave the grid."""
    upper = grid.size_xyz - 1 + _LANDMARK_MARGIN_VOXELS
    inside = np.all((index >= -_LANDMARK_MARGIN_VOXELS) & (index <= upper), axis=1)
    if inside.all():
        return
    first = int(np.flatnonzero(~inside)[0])
    size = "x".join(str(int(s)) for s in grid.size_xyz)
    raise ValueError(
        f"{path}: {int((~inside).sum())} of {len(index)} points lie outside the {size} (x, y, z) image "
        f"(first: point #{first}, 0-based index {np.round(index[first], 2).tolist()}; {convention})"
    )


def read_dirlab_landmarks(path: str | Path, grid: Grid) -> np.ndarray:
    """DIR-LAB ``Case{i}_300_T00_xyz.txt``: **1-based** voxel ``x y z`` per line -> world mm
    on ``grid`` (``index_0 = index_1 - 1``). Points outside the image raise ValueError."""
    path = Path(path)
    index = _load_numeric_rows(path) - 1.0
    _check_index_inside(path, index, grid, "DIR-LAB files hold 1-based x y z voxel indices")
    return grid.index_to_world(index)


def read_learn2reg_keypoints(path: str | Path, grid: Grid) -> np.ndarray:
    """Learn2Reg keypoint csv (NLST, lung CBCT): no header, **0-based** voxel indices -> world mm.

    Column order is the NIfTI's array order ``(i, j, k)``, which is ITK's index order
    ``(x, y, z)`` — the REVERSE of SimpleITK's ``(z, y, x)`` numpy array. Evidence: the challenge
    evaluates with nibabel arrays ``disp[i, j, k]`` sampled at these columns, and the ThoraxCBCT
    keypoints (images 390 x 280 x 300 voxels) reach ~378 in the FIRST column, which only the
    390-voxel axis i allows. Points outside the image raise ValueError (with a hint when the
    reversed order would fit, the classic 10 mm mistake).
    """
    path = Path(path)
    index = _load_numeric_rows(path)
    convention = "Learn2Reg columns are 0-based (i, j, k) = (x, y, z) voxel indices"
    upper = grid.size_xyz - 1 + _LANDMARK_MARGIN_VOXELS
    reversed_fits = np.all((index[:, ::-1] >= -_LANDMARK_MARGIN_VOXELS) & (index[:, ::-1] <= upper))
    if reversed_fits:
        convention += "; they would fit in (z, y, x) order: was the file written from a SimpleITK array?"
    _check_index_inside(path, index, grid, convention)
    return grid.index_to_world(index)


def read_points(path: str | Path, units: str, grid: Grid | None = None, one_based: bool = False) -> np.ndarray:
    """Generic point file -> (N, 3) world mm. One point per line, ``x y z`` (comma/space
    separated; one header line allowed; extra columns ignored).

    ``units`` must be stated: ``"mm"`` (world mm, returned as is) or ``"voxel"`` (continuous
    index (x, y, z) on ``grid``, 0-based unless ``one_based``). Elastix point-set files
    (``point``/``index`` on the first line) are read by :func:`read_elastix_points`; their header
    must agree with ``units`` (``point`` = mm, ``index`` = voxel).
    """
    path = Path(path)
    if units not in ("mm", "voxel"):
        raise ValueError(f"{path}: units must be 'mm' or 'voxel', got {units!r}")
    _require_file(path)
    with open(path) as fh:
        first = fh.readline().strip().lower()
    if first in ("point", "index"):
        stated = "mm" if first == "point" else "voxel"
        if stated != units:
            raise ValueError(
                f"{path}: elastix '{first}' file holds {stated} coordinates, but units={units!r} was given"
            )
        return read_elastix_points(path, grid)
    pts = _load_numeric_rows(path)
    if units == "mm":
        return pts
    if grid is None:
        raise ValueError(f"{path}: voxel units need the image grid")
    return grid.index_to_world(pts - (1.0 if one_based else 0.0))


def write_points_csv(points: np.ndarray, path: str | Path) -> Path:
    """Write (N, 3) world-mm points as csv with the header ``x_mm,y_mm,z_mm``, atomically
    (read back with ``read_points(path, units="mm")``)."""
    path = Path(path)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    with atomic_path(path) as tmp:
        np.savetxt(tmp, pts, delimiter=",", header="x_mm,y_mm,z_mm", comments="", fmt="%.6f")
    return path


def read_elastix_points(path: str | Path, grid: Grid | None = None) -> np.ndarray:
    """Elastix/transformix point-set file -> (N, 3) world mm. Line 1: ``point`` (world mm) or
    ``index`` (0-based voxel, needs ``grid``); line 2: the number of points; then ``x y z``."""
    path = Path(path)
    _require_file(path)
    with open(path) as fh:
        lines = [ln.strip() for ln in fh if ln.strip()]
    if len(lines) < 2 or lines[0].lower() not in ("point", "index"):
        raise ValueError(f"{path}: not an elastix point-set file (first line must be 'point' or 'index')")
    try:
        count = int(lines[1])
    except ValueError:
        raise ValueError(f"{path}: second line must be the number of points, got {lines[1]!r}") from None
    try:
        rows = [[float(v) for v in ln.split()] for ln in lines[2:]]
    except ValueError:
        raise ValueError(f"{path}: coordinates are not numeric") from None
    if any(len(r) != 3 for r in rows):
        raise ValueError(f"{path}: every point line must hold 3 coordinates")
    pts = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    if len(pts) != count:
        raise ValueError(f"{path}: header says {count} points, found {len(pts)} lines of coordinates")
    if lines[0].lower() == "index":
        if grid is None:
            raise ValueError(f"{path}: 'index' point sets need the image grid")
        return grid.index_to_world(pts)
    return pts


def write_elastix_points(points: np.ndarray, path: str | Path) -> Path:
    """Write world-mm points as an elastix ``point`` file, atomically."""
    path = Path(path)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(f"point\n{len(pts)}\n")
            for p in pts:
                fh.write(f"{p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n")
    return path


# ---------------------------------------------------------------------------- saved pairs
# MetaImage keeps spacing/origin/direction in double precision (NIfTI stores float32).
_PAIR_VOLUMES = ("fixed", "moving", "fixed_mask", "moving_mask", "ground_truth")
_PAIR_LANDMARKS = {"fixed_landmarks": "fixed_landmarks.csv", "moving_landmarks": "moving_landmarks.csv"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def save_pair(pair: Pair, folder: str | Path) -> Path:
    """Write a pair into ``folder`` atomically (the whole folder appears at once, replacing an
    older one): ``fixed.mha``, ``moving.mha``, masks and ground truth (if any) as MetaImage in
    their own dtype, landmarks as ``fixed_landmarks.csv`` / ``moving_landmarks.csv`` (world mm) and
    ``pair.json`` (name, dataset, meta, file list)."""
    folder = Path(folder)
    files: dict[str, str] = {}
    with atomic_folder(folder) as tmp:
        for attr in _PAIR_VOLUMES:
            vol = getattr(pair, attr)
            if vol is not None:
                files[attr] = f"{attr}.mha"
                write_image(vol, tmp / files[attr])
        if pair.has_landmarks:
            for attr, fname in _PAIR_LANDMARKS.items():
                write_points_csv(getattr(pair, attr), tmp / fname)
                files[attr] = fname
        info = {"name": pair.name, "dataset": pair.dataset, "meta": _jsonable(pair.meta), "files": files}
        (tmp / "pair.json").write_text(json.dumps(info, indent=1))
    return folder


def load_saved_pair(folder: str | Path) -> Pair:
    """Read a pair written by :func:`save_pair` (masks come back as bool arrays)."""
    folder = Path(folder)
    info_path = folder / "pair.json"
    _require_file(info_path)
    try:
        info = json.loads(info_path.read_text())
        files: dict[str, str] = info["files"]
        name = info["name"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{info_path}: not a saved-pair description ({err})") from None
    vols: dict[str, Volume] = {}
    for attr in _PAIR_VOLUMES:
        if attr in files:
            vol = read_image(folder / files[attr])
            vols[attr] = vol.with_array(vol.array > 0) if attr.endswith("mask") else vol
    if "fixed" not in vols or "moving" not in vols:
        raise ValueError(f"{info_path}: lists no fixed/moving image")
    points = {attr: read_points(folder / files[attr], units="mm") for attr in _PAIR_LANDMARKS if attr in files}
    return Pair(**vols, **points, name=name, dataset=info.get("dataset", ""), meta=info.get("meta", {}))


def _safe_part(text: str, what: str) -> str:
    if not text or text in (".", "..") or any(c in text for c in "/\\"):
        raise ValueError(f"{what} {text!r} cannot be used as a folder name")
    return text


def save_pairs(pairs: Sequence[Pair], root: str | Path, progress: bool = False):
    """Save pairs under ``root/<dataset>/<name>/`` (:func:`save_pair`) and write
    ``root/manifest.csv`` atomically; returns the manifest as a pandas DataFrame.

    Columns: ``name, dataset, label, path`` (relative to ``root``), ``fixed_shape``,
    ``moving_shape`` (``z x y x x`` voxels), ``spacing_mm`` (fixed, ``x x y x z``),
    ``landmarks`` (count), ``initial_mean_mm``, ``initial_max_mm`` (landmark distances before
    registration; empty without landmarks).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    root = Path(root)
    pairs = list(pairs)
    seen: set[tuple[str, str]] = set()
    for pair in pairs:
        key = (pair.dataset or "pairs", pair.name)
        if key in seen:
            raise ValueError(f"{root}: two pairs named {pair.name!r} in data set {key[0]!r}; names must be unique")
        seen.add(key)
    rows = []
    for pair in tqdm(pairs, desc="saving pairs", disable=not progress):
        rel = Path(_safe_part(pair.dataset or "pairs", "data set name")) / _safe_part(pair.name, "pair name")
        save_pair(pair, root / rel)
        row = pair.summary()
        row["label"] = pair.meta.get("label", "")
        row["path"] = rel.as_posix()
        row["fixed_shape"] = "x".join(map(str, row["fixed_shape"]))
        row["moving_shape"] = "x".join(map(str, row["moving_shape"]))
        row["spacing_mm"] = "x".join(f"{s:g}" for s in row["spacing_mm"])
        rows.append(row)
    columns = ["name", "dataset", "label", "path", "fixed_shape", "moving_shape", "spacing_mm",
               "landmarks", "initial_mean_mm", "initial_max_mm"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    with atomic_path(root / "manifest.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def load_manifest(root: str | Path, dataset: str | Sequence[str] | None = None) -> list[Pair]:
    """The pairs listed in ``root/manifest.csv``, in its order (optionally only the given data set(s))."""
    import pandas as pd

    root = Path(root)
    manifest = root / "manifest.csv"
    _require_file(manifest)
    table = pd.read_csv(manifest)
    if "path" not in table.columns or "dataset" not in table.columns:
        raise ValueError(f"{manifest}: not a pair manifest (needs 'path' and 'dataset' columns)")
    table["dataset"] = table["dataset"].fillna("")
    if dataset is not None:
        wanted = [dataset] if isinstance(dataset, str) else list(dataset)
        table = table[table["dataset"].isin(wanted)]
    missing = [p for p in table["path"] if not (root / p / "pair.json").is_file()]
    if missing:
        raise ValueError(
            f"{manifest}: {len(missing)} listed pair folder(s) are missing or incomplete, e.g. {root / missing[0]}"
        )
    return [load_saved_pair(root / p) for p in table["path"]]
