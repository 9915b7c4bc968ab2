"""Landmarks on real anatomy (the ``bundled:thorax-ct`` pair): where the automatic landmarks sit.

Four panels in the convention of :mod:`reindir_nb.viz.slicing` (coronal: superior on top),
colours of :mod:`reindir_nb.viz.palette`: the fixed axial and coronal slices through the
landmarks' median depth with the fixed landmarks within ``+-slab_mm/2``, a lung-window zoom on
the image-left lung of the axial slice, and the moving coronal slice with the moving landmarks.
Drawn on a pyplot-free ``Figure`` (no backend needed, nothing displayed or left open).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..core.files import atomic_path
from ..core.geometry import Grid
from ..core.pair import Pair
from .palette import FIXED, MOVING
from .slicing import landmarks_in_slab, median_slice, show_slice, slice_spacing, take_slice

__all__ = ["anatomy_figure", "plot_landmarks_on_anatomy"]

_CT_WINDOW = {"cmap": "gray", "vmin": -1000.0, "vmax": 200.0}  # HU
_LUNG_WINDOW = {"cmap": "gray", "vmin": -1000.0, "vmax": 0.0}  # HU


def _slab(points_mm: np.ndarray, grid: Grid, axis: str, index: int, slab_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices, (M, 2) pixels) of the points within ``+-slab_mm/2`` of slice ``index``."""
    return landmarks_in_slab(points_mm, grid, axis, index, half_width=slab_mm / 2 / slice_spacing(grid, axis))


def _coronal_panel(ax, volume, points: np.ndarray, colour: str, slab_mm: float) -> tuple[int, int]:
    """The coronal slice through the median landmark of ``volume`` with the landmarks of its slab
    drawn in ``colour``; returns (slice index, landmarks shown)."""
    grid = volume.grid
    y = median_slice(points, grid, "coronal")
    show_slice(ax, take_slice(volume.array, "coronal", y), grid, "coronal", **_CT_WINDOW)
    sel, px = _slab(points, grid, "coronal", y, slab_mm)
    _circles(ax, px, colour)
    return y, len(sel)


def _circles(ax, pixels: np.ndarray, colour: str, size: float = 40) -> None:
    ax.scatter(pixels[:, 0], pixels[:, 1], s=size, facecolors="none", edgecolors=colour, linewidths=1.3)


def _lung_window(pair: Pair, z: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((x0, x1), (y0, y1)) voxel window around the image-left lung of axial slice ``z`` (3 voxels
    of margin); the whole slice without a fixed mask or when the mask is empty there."""
    ny, nx = pair.fixed.grid.shape[1:]
    lung = take_slice(pair.fixed_mask.array, "axial", z) > 0 if pair.fixed_mask is not None else np.ones((ny, nx), bool)
    cols, rows = np.flatnonzero(lung.any(axis=0)), np.flatnonzero(lung.any(axis=1))
    if len(cols) == 0:
        cols, rows = np.arange(nx), np.arange(ny)
    x0, x1 = max(int(cols.min()) - 3, 0), min((int(cols.min()) + int(cols.max())) // 2 + 3, nx - 1)
    y0, y1 = max(int(rows.min()) - 3, 0), min(int(rows.max()) + 3, ny - 1)
    return (x0, x1), (y0, y1)


def anatomy_figure(pair: Pair, slab_mm: float = 4.0) -> Figure:
    """The four-panel landmark figure of ``pair`` (see the module docstring); ``slab_mm``: full
    thickness (mm) of the slab whose landmarks are drawn on each slice."""
    if not pair.has_landmarks:
        raise ValueError(f"{pair.name}: no landmarks to plot")
    if not slab_mm > 0:
        raise ValueError(f"slab_mm must be > 0 mm, got {slab_mm}")
    fixed, moving = pair.fixed, pair.moving
    grid = fixed.grid
    fig = Figure(figsize=(12, 11))
    ax = fig.subplots(2, 2)

    z = median_slice(pair.fixed_landmarks, grid, "axial")
    axial = take_slice(fixed.array, "axial", z)
    a = ax[0, 0]
    show_slice(a, axial, grid, "axial", **_CT_WINDOW)
    sel, px = _slab(pair.fixed_landmarks, grid, "axial", z, slab_mm)
    _circles(a, px, FIXED)
    z_mm = grid.index_to_world([[0, 0, z]])[0, 2]
    a.set_title(f"fixed (real CT), axial z={z_mm:.0f} mm: {len(sel)} landmarks in a {slab_mm:g} mm slab")

    y, n_c = _coronal_panel(ax[0, 1], fixed, pair.fixed_landmarks, FIXED, slab_mm)
    ax[0, 1].set_title(f"fixed, coronal y={grid.index_to_world([[0, y, 0]])[0, 1]:.0f} mm: {n_c} landmarks")

    a = ax[1, 0]
    (x0, x1), (y0, y1) = _lung_window(pair, z)
    show_slice(a, axial, grid, "axial", **_LUNG_WINDOW)
    a.set_xlim(x0 - 0.5, x1 + 0.5)
    a.set_ylim(y1 + 0.5, y0 - 0.5)
    inside = (px[:, 0] >= x0) & (px[:, 0] <= x1) & (px[:, 1] >= y0) & (px[:, 1] <= y1)
    _circles(a, px[inside], FIXED, size=160)
    a.set_title("zoom (lung window): landmarks at vessel bifurcations")

    _, n_m = _coronal_panel(ax[1, 1], moving, pair.moving_landmarks, MOVING, slab_mm)
    ax[1, 1].set_title(f"moving (simulated exhale), coronal: {n_m} moved landmarks")

    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    d = pair.initial_distances()
    fig.suptitle(f"{pair.name} — {pair.meta.get('label', '')}\n{len(d)} landmarks, initial distance mean "
                 f"{d.mean():.1f} mm, max {d.max():.1f} mm")
    fig.tight_layout()
    return fig


def plot_landmarks_on_anatomy(pair: Pair, path: str | Path, slab_mm: float = 4.0, dpi: int = 110) -> Path:
    """Save :func:`anatomy_figure` of ``pair`` as a PNG at ``path`` (written atomically, folders
    created); returns the path."""
    path = Path(path)
    fig = anatomy_figure(pair, slab_mm)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
