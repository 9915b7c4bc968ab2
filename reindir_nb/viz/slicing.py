"""The ONE slicing / projection convention of every picture in the kit.

A 3D array is indexed ``(z, y, x)``; a world point is ``(x, y, z)`` mm and its continuous voxel
index ``(x, y, z)`` comes from :meth:`reindir_nb.core.geometry.Grid.world_to_index`. A slice is
shown with ``imshow``'s default ``origin="upper"`` (array row 0 at the top) and pixel
coordinates ``(column, row)``:

========  ============  ===========================  ===========================
axis      held (array)  columns                      rows (top to bottom)
========  ============  ===========================  ===========================
axial     z (0)         x index                      y index
coronal   y (1)         x index                      ``nz - 1 - z``: superior on top
sagittal  x (2)         y index                      ``nz - 1 - z``: superior on top
========  ============  ===========================  ===========================

:func:`take_slice` cuts an array that way, :func:`project_points` / :func:`landmarks_in_slab`
put world points on it, :func:`slice_aspect` gives the mm aspect and :func:`show_slice` draws a
slice with that aspect and the matching axis limits. Widgets, explorers, the paper figures
and the anatomy plot all go through these functions.
"""

from __future__ import annotations

import numpy as np

from ..core.geometry import Grid
from ..core.volume import Volume

__all__ = [
    "AXES",
    "AXIS_OF",
    "HELD_XYZ",
    "check_axis",
    "slice_count",
    "take_slice",
    "slice_aspect",
    "slice_spacing",
    "resample_onto",
    "slice_depth",
    "project_points",
    "landmarks_in_slab",
    "landmark_slice",
    "median_slice",
    "show_slice",
    "checkerboard",
]

AXES = ("axial", "coronal", "sagittal")
AXIS_OF = {"axial": 0, "coronal": 1, "sagittal": 2}  # array axis (z, y, x) held constant
HELD_XYZ = {"axial": 2, "coronal": 1, "sagittal": 0}  # component of an (x, y, z) index held constant
_IN_PLANE_XYZ = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}  # (column, row) index components


def check_axis(axis: str) -> str:
    """``axis`` itself; ValueError naming the choices when it is not one of :data:`AXES`."""
    if axis not in AXIS_OF:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    return axis


def slice_count(grid: Grid, axis: str) -> int:
    """Number of slices of ``grid`` along ``axis``."""
    return int(grid.shape[AXIS_OF[check_axis(axis)]])


def take_slice(array: np.ndarray, axis: str, index: int) -> np.ndarray:
    """2D slice ``index`` of a (z, y, x[, c]) array, oriented for ``imshow`` (origin upper):
    axial (y, x) with row = y; coronal (z, x) and sagittal (z, y) with superior (high z) on top."""
    sl = np.take(array, int(index), axis=AXIS_OF[check_axis(axis)])
    return sl if axis == "axial" else sl[::-1]


def slice_aspect(grid: Grid, axis: str) -> float:
    """``imshow`` aspect of a slice: row height / column width, both in mm."""
    sx, sy, sz = grid.spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[check_axis(axis)]


def slice_spacing(grid: Grid, axis: str) -> float:
    """Distance (mm) between neighbouring slices of ``grid`` along ``axis``."""
    return float(grid.spacing[HELD_XYZ[check_axis(axis)]])


def resample_onto(volume: Volume, grid: Grid, order: int = 1) -> np.ndarray:
    """``volume`` sampled at the voxel centres of ``grid`` in world coordinates (never index to
    index), float32 array (z, y, x); outside the volume: its minimum."""
    if volume.grid.same_as(grid):
        return np.asarray(volume.array, dtype=np.float32)
    pts = grid.voxel_centres_world().reshape(-1, 3)
    values = volume.sample_world(pts, order=order, cval=float(np.min(volume.array)))
    return values.reshape(grid.shape).astype(np.float32)


def slice_depth(points_mm: np.ndarray, grid: Grid, axis: str) -> np.ndarray:
    """(N,) continuous slice index (voxels) of world points (N, 3) mm along ``axis``."""
    idx = grid.world_to_index(np.asarray(points_mm, float).reshape(-1, 3))
    return idx[:, HELD_XYZ[check_axis(axis)]]


def project_points(points_mm: np.ndarray, grid: Grid, axis: str) -> np.ndarray:
    """(N, 2) pixel coordinates (column, row) of world points (N, 3) mm on a slice of ``grid``
    along ``axis``, in the orientation of :func:`take_slice`, whatever their depth."""
    idx = grid.world_to_index(np.asarray(points_mm, float).reshape(-1, 3))
    c, r = _IN_PLANE_XYZ[check_axis(axis)]
    cols, rows = idx[:, c], idx[:, r]
    if axis != "axial":
        rows = (grid.shape[0] - 1) - rows  # rows count z from the top (superior first)
    return np.stack([cols, rows], axis=1)


def landmarks_in_slab(points_mm: np.ndarray, grid: Grid, axis: str, index: int,
                      half_width: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Points within ``half_width`` voxels of slice ``index``: (indices into the points, (M, 2)
    pixel coordinates (column, row) in the orientation of :func:`take_slice`)."""
    if not half_width >= 0:
        raise ValueError(f"half_width must be >= 0 voxels, got {half_width}")
    pts = np.asarray(points_mm, float).reshape(-1, 3)
    sel = np.flatnonzero(np.abs(slice_depth(pts, grid, axis) - index) <= half_width)
    return sel, project_points(pts[sel], grid, axis) if len(sel) else np.zeros((0, 2))


def landmark_slice(point_mm: np.ndarray, grid: Grid, axis: str) -> int:
    """Index of the slice along ``axis`` nearest to one world point (3,) mm, clipped to the grid."""
    depth = slice_depth(np.asarray(point_mm, float).reshape(1, 3), grid, axis)[0]
    return int(np.clip(np.rint(depth), 0, slice_count(grid, axis) - 1))


def median_slice(points_mm: np.ndarray, grid: Grid, axis: str) -> int:
    """Index of the slice along ``axis`` through the median depth of world points (N, 3) mm."""
    pts = np.asarray(points_mm, float).reshape(-1, 3)
    if len(pts) == 0:
        raise ValueError("median_slice: no points given")
    return int(np.clip(np.rint(np.median(slice_depth(pts, grid, axis))), 0, slice_count(grid, axis) - 1))


def show_slice(ax, image: np.ndarray, grid: Grid, axis: str, **imshow_kwargs):
    """Draw a :func:`take_slice` image on ``ax`` with the mm aspect of ``grid`` (origin upper,
    nearest-neighbour pixels) and limits on the whole slice; returns the ``AxesImage``.
    Points from :func:`project_points` then land on their pixels."""
    kwargs = {"interpolation": "nearest", **imshow_kwargs, "origin": "upper", "aspect": slice_aspect(grid, axis)}
    im = ax.imshow(image, **kwargs)
    rows, cols = np.shape(image)[:2]
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    return im


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Alternate ``tiles`` x ``tiles`` tiles of two equally shaped 2D images (``a`` top left)."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"checkerboard: images differ in shape ({np.shape(a)} vs {np.shape(b)})")
    r = (np.arange(a.shape[0]) * tiles // max(1, a.shape[0]))[:, None]
    c = (np.arange(a.shape[1]) * tiles // max(1, a.shape[1]))[None, :]
    return np.where((r + c) % 2 == 0, a, b)
