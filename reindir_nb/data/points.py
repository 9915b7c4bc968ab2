"""Reading and writing landmark / point files. Every reader returns ``(N, 3)`` world mm
``(x, y, z)`` (index -> mm through :class:`~reindir_nb.core.geometry.Grid`); every writer is atomic.

Conventions (pinned by ``tests/test_io.py`` with hand-computed mm values):

* DIR-LAB ``Case{i}_300_T00_xyz.txt``: ``x y z`` per line, **1-based** voxel indices.
* Learn2Reg keypoint csv (NLST, lung CBCT): no header, **0-based** voxel indices, columns in the
  NIfTI's axis order ``(i, j, k)`` = ITK index ``(x, y, z)`` (the reverse of SimpleITK's
  ``(z, y, x)`` numpy array).
* Elastix point sets: ``point`` (world mm) or ``index`` (0-based voxel) on line 1, the count on
  line 2, then ``x y z`` per line.
* Generic csv/txt: ``units="mm"`` or ``units="voxel"`` must be given; never guessed (a warning
  says when mm points look like voxel indices). Decimal commas (``12,5;-3,25;40,0``) are read as
  such; header columns named x, y, z are picked by name (``id,x,y,z``).

Binary or non-UTF-8 files, points outside the image and mixed-up column orders raise an error
naming the file (docs/reliability.md lists every case and its test).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..core.files import atomic_path, read_text
from ..core.geometry import Grid
from ..core.points import as_points
from ..core.volume import Volume

__all__ = [
    "read_dirlab_landmarks",
    "read_learn2reg_keypoints",
    "read_points",
    "write_points_csv",
    "read_elastix_points",
    "write_elastix_points",
]

# landmarks may sit up to one voxel outside the voxel-centre box (as Pair.validate allows)
_LANDMARK_MARGIN_VOXELS = 1.0
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+([eE][+-]?\d+)?$")


def _split_fields(text: str, decimal_comma: bool) -> list[str]:
    if decimal_comma:
        return [p.replace(",", ".") for p in re.split(r"[;\s]+", text) if p]
    return [p for p in re.split(r"[,;\s]+", text) if p]


def _header_fields(header: str) -> list[str]:
    """Column names of a header line: split on commas/semicolons/tabs when it has any (names may
    hold spaces, ``X [mm]``), else on spaces."""
    if re.search(r"[,;\t]", header):
        return [f.strip() for f in re.split(r"[,;\t]", header) if f.strip()]
    return header.split()


def _uses_decimal_comma(lines: list[str]) -> bool:
    """True for ``12,5;-3,25;40,0`` (semicolon-separated, decimal commas) and ``12,5 -3,25 40,0``."""
    if any(";" in ln for ln in lines) and any("," in ln for ln in lines):
        return True
    tokens = [t for ln in lines for t in ln.split()]
    return bool(tokens) and all(_DECIMAL_COMMA.match(t) for t in tokens)


def _axis_name(field: str) -> str:
    """``"X [mm]"``, ``"x_mm"``, ``'"x"'`` -> ``"x"``; other names lower-cased."""
    name = re.sub(r"[\[(].*?[\])]", "", field.strip().strip("\"'").lower()).strip()
    return re.sub(r"[_ -]?(mm|vox|voxel|voxels|index|idx|world|coord)$", "", name)


def _read_point_table(path: Path) -> tuple[np.ndarray, str | None]:
    """(N, 3) numbers of a point file and its header line (None without one).

    Fields are separated by commas, semicolons, tabs or spaces; ``#`` comments are skipped. A file
    with semicolons AND commas (``12,5;-3,25;40,0``), or whose every field is ``digits,digits``, uses
    decimal commas. ONE leading non-numeric line is a header: columns named x, y, z (``x_mm``,
    ``X [mm]``, ...) are picked by name, so ``id,x,y,z`` gives the x y z columns; without names
    the first three columns are used (a warning says when the first column looks like point ids).
    """
    text = read_text(path, "a point file")
    entries = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1)]
    entries = [(n, t) for n, t in entries if t and not t.startswith("#")]
    header: str | None = None
    if entries:
        try:
            [float(p) for p in _split_fields(entries[0][1], False)]
        except ValueError:
            if not _DECIMAL_COMMA.match(entries[0][1].split()[0].split(";")[0]):
                header = entries.pop(0)[1]
    decimal_comma = _uses_decimal_comma([t for _, t in entries])
    if decimal_comma and not any(";" in t for _, t in entries):
        warnings.warn(f"{path}: every value has the form 12,5: read as decimal commas (12.5), fields "
                      f"separated by spaces", stacklevel=3)
    fields = [(lineno, line, _split_fields(line, decimal_comma)) for lineno, line in entries]
    if not fields:
        raise ValueError(f"{path}: no points found")
    lengths = sorted({len(f) for _, _, f in fields})
    if len(lengths) != 1:
        raise ValueError(f"{path}: rows have different numbers of values {lengths}")
    width = lengths[0]
    names = [_axis_name(f) for f in _header_fields(header)] if header is not None else []
    named = bool(names) and all(a in names for a in "xyz")
    if named and len(names) != width:
        raise ValueError(f"{path}: the header {header!r} names {len(names)} columns but rows hold {width}")
    if names and not named and width > 3:
        raise ValueError(f"{path}: cannot tell which of the {width} columns hold x y z from the header "
                         f"{header!r}; name them x, y, z")
    columns = [names.index(a) for a in "xyz"] if named else list(range(width))
    rows: list[list[float]] = []
    for lineno, line, parts in fields:
        try:
            rows.append([float(parts[c]) for c in columns])
        except ValueError:
            raise ValueError(f"{path}: line {lineno} is not numeric: {line[:60]!r}") from None
    arr = np.asarray(rows, dtype=np.float64)
    if arr.shape[1] < 3:
        raise ValueError(f"{path}: need 3 coordinates per line, found {arr.shape[1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: contains NaN/inf coordinates")
    if not named and arr.shape[1] > 3 and len(arr) >= 3:
        first = arr[:, 0]
        if np.all(first == np.round(first)) and np.all(np.diff(first) == 1) and first[0] in (0, 1):
            warnings.warn(f"{path}: the first of {arr.shape[1]} columns counts {first[0]:g}, {first[0] + 1:g}, ...: "
                          f"if it is a point id, the x y z are columns 2-4; add a header 'id,x,y,z'", stacklevel=3)
    if named:
        return arr, header
    return arr[:, :3], header


def _load_numeric_rows(path: Path) -> np.ndarray:
    """The (N, 3) coordinates of a point file (see :func:`_read_point_table`)."""
    return _read_point_table(path)[0]


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


def read_dirlab_landmarks(path: str | Path, grid: Grid, one_based: bool = True) -> np.ndarray:
    """DIR-LAB ``Case{i}_300_T00_xyz.txt``: **1-based** voxel ``x y z`` per line -> world mm
    on ``grid`` (``index_0 = index_1 - 1``). Points outside the image raise ValueError.

    A 0 coordinate cannot occur in a 1-based file: when one is present a warning says the file
    was probably written 0-based (every point would shift by one voxel); read such a file with
    ``one_based=False``."""
    path = Path(path)
    rows = _load_numeric_rows(path)
    if one_based and np.any(rows == 0):
        n = int(np.any(rows == 0, axis=1).sum())
        warnings.warn(
            f"{path}: {n} points have a 0 coordinate, impossible in a 1-based DIR-LAB file: if it was written "
            f"0-based, read it with one_based=False (otherwise every point is one voxel off)", stacklevel=2)
    index = rows - (1.0 if one_based else 0.0)
    basis = "1-based" if one_based else "0-based (one_based=False)"
    _check_index_inside(path, index, grid, f"DIR-LAB files hold {basis} x y z voxel indices")
    return grid.index_to_world(index)


def _fraction_in_mask(index_xyz: np.ndarray, mask: Volume) -> float:
    """Fraction of 0-based (x, y, z) indices whose nearest voxel is inside ``mask`` (outside the grid: no)."""
    idx = np.round(index_xyz).astype(int)
    size = mask.grid.size_xyz.astype(int)
    ok = np.all((idx >= 0) & (idx < size), axis=1)
    hits = np.zeros(len(idx), bool)
    hits[ok] = mask.array[idx[ok, 2], idx[ok, 1], idx[ok, 0]] > 0
    return float(hits.mean())


def read_learn2reg_keypoints(path: str | Path, grid: Grid, mask: Volume | None = None) -> np.ndarray:
    """Learn2Reg keypoint csv (NLST, lung CBCT): no header, **0-based** voxel indices -> world mm.

    Column order is the NIfTI's array order ``(i, j, k)``, which is ITK's index order
    ``(x, y, z)`` — the REVERSE of SimpleITK's ``(z, y, x)`` numpy array. Evidence: the challenge
    evaluates with nibabel arrays ``disp[i, j, k]`` sampled at these columns, and the ThoraxCBCT
    keypoints (images 390 x 280 x 300 voxels) reach ~378 in the FIRST column, which only the
    390-voxel axis i allows. Points outside the image raise ValueError (with a hint when the
    reversed order would fit, the classic 10 mm mistake). With the image's lung ``mask`` (same
    grid) the order is also checked where the extent cannot tell (NLST's 224 x 192 x 224 voxels
    fit both orders): a ValueError when the keypoints lie in the lungs only in (z, y, x) order.
    """
    path = Path(path)
    index = _load_numeric_rows(path)
    convention = "Learn2Reg columns are 0-based (i, j, k) = (x, y, z) voxel indices"
    upper = grid.size_xyz - 1 + _LANDMARK_MARGIN_VOXELS
    reversed_fits = np.all((index[:, ::-1] >= -_LANDMARK_MARGIN_VOXELS) & (index[:, ::-1] <= upper))
    if reversed_fits:
        convention += "; they would fit in (z, y, x) order: was the file written from a SimpleITK array?"
    _check_index_inside(path, index, grid, convention)
    if mask is not None and reversed_fits and mask.grid.shape == grid.shape:
        as_given, swapped = _fraction_in_mask(index, mask), _fraction_in_mask(index[:, ::-1], mask)
        if swapped >= 0.9 and as_given < 0.5:
            raise ValueError(
                f"{path}: only {100 * as_given:.0f} % of the keypoints lie in the lung mask {mask.name or ''} in the "
                f"Learn2Reg (i, j, k) = (x, y, z) column order, but {100 * swapped:.0f} % in (z, y, x) order: the "
                f"file was written in SimpleITK array order; reverse its columns")
    return grid.index_to_world(index)


def _plausibility_warning(path: Path, pts: np.ndarray, grid: Grid) -> None:
    """Warn when points given as mm look like voxel indices on ``grid``."""
    index_fits = bool(np.all((pts >= -0.5) & (pts <= grid.size_xyz - 0.5)))
    if not index_fits or np.allclose(grid.index_to_world(pts), pts, atol=1e-6):
        return  # not indices, or the two readings agree (unit spacing, zero origin)
    mm_fits = bool(np.all(grid.contains(pts, margin_voxels=1.0)))
    integral = bool(np.all(pts == np.round(pts)))
    if not mm_fits:
        warnings.warn(f"{path}: read with units='mm', the points lie outside the image, but they fit inside it "
                      f"as voxel indices: is this a voxel file? pass units='voxel'", stacklevel=3)
    elif integral and len(pts) >= 3:
        warnings.warn(f"{path}: read with units='mm', every coordinate is a whole number and they all fit inside "
                      f"the image as voxel indices: is this a voxel file? pass units='voxel'", stacklevel=3)


def read_points(path: str | Path, units: str, grid: Grid | None = None, one_based: bool = False) -> np.ndarray:
    """Generic point file -> (N, 3) world mm. One point per line, ``x y z`` (comma/semicolon/space
    separated, decimal commas understood; one header line allowed, columns named x, y, z picked by
    name; extra columns ignored).

    ``units`` must be stated: ``"mm"`` (world mm, returned as is) or ``"voxel"`` (continuous
    index (x, y, z) on ``grid``, 0-based unless ``one_based``). With ``units="mm"`` and a ``grid``,
    a warning says when the points look like voxel indices. Elastix point-set files
    (``point``/``index`` on the first line) are read by :func:`read_elastix_points`; their header
    must agree with ``units`` (``point`` = mm, ``index`` = voxel).
    """
    path = Path(path)
    if units not in ("mm", "voxel"):
        raise ValueError(f"{path}: units must be 'mm' or 'voxel', got {units!r}")
    text = read_text(path, "a point file")
    first = text.strip().splitlines()[0].strip().lower() if text.strip() else ""
    if first in ("point", "index"):
        stated = "mm" if first == "point" else "voxel"
        if stated != units:
            raise ValueError(
                f"{path}: elastix '{first}' file holds {stated} coordinates, but units={units!r} was given"
            )
        return read_elastix_points(path, grid)
    pts, header = _read_point_table(path)
    said = header.lower() if header else ""
    if units == "voxel" and "mm" in said:
        warnings.warn(f"{path}: the header {header!r} says mm but units='voxel' was given", stacklevel=2)
    if units == "mm" and re.search(r"vox|index|idx", said):
        warnings.warn(f"{path}: the header {header!r} says voxel indices but units='mm' was given", stacklevel=2)
    if units == "mm":
        if grid is not None:
            _plausibility_warning(path, pts, grid)
        return pts
    if grid is None:
        raise ValueError(f"{path}: voxel units need the image grid")
    return grid.index_to_world(pts - (1.0 if one_based else 0.0))


def write_points_csv(points: np.ndarray, path: str | Path) -> Path:
    """Write (N, 3) world-mm points as csv with the header ``x_mm,y_mm,z_mm``, atomically
    (read back with ``read_points(path, units="mm")``)."""
    path = Path(path)
    pts = as_points(points, f"{path}: points")
    with atomic_path(path) as tmp:
        np.savetxt(tmp, pts, delimiter=",", header="x_mm,y_mm,z_mm", comments="", fmt="%.6f")
    return path


def read_elastix_points(path: str | Path, grid: Grid | None = None) -> np.ndarray:
    """Elastix/transformix point-set file -> (N, 3) world mm. Line 1: ``point`` (world mm) or
    ``index`` (0-based voxel, needs ``grid``); line 2: the number of points; then ``x y z``."""
    path = Path(path)
    lines = [ln.strip() for ln in read_text(path, "an elastix point-set file").splitlines() if ln.strip()]
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
    pts = as_points(points, f"{path}: points")
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(f"point\n{len(pts)}\n")
            for p in pts:
                fh.write(f"{p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n")
    return path
