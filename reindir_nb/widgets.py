"""Interactive viewers (ipywidgets 8 + matplotlib) for pairs and registrations.

Everything is shown on the FIXED image's grid; moving-side images are resampled there in
world coordinates (never index to index), landmarks (world mm) are projected through the
grid, and pixel aspect ratios come from the spacing. The state each viewer shows (axis,
slice, 2D image, landmark pixels) is exposed as attributes so tests can drive the widgets
from Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Grid
from .pair import Pair
from .volume import Volume

__all__ = [
    "AXES",
    "TEAL",
    "PINK",
    "resample_onto",
    "take_slice",
    "slice_aspect",
    "landmarks_in_slab",
    "checkerboard",
    "SliceScrubber",
]

AXES = ("axial", "coronal", "sagittal")
TEAL, PINK = "#009999", "#ff3399"  # fixed / moving landmark colours (paper figures)
_AXIS_OF = {"axial": 0, "coronal": 1, "sagittal": 2}  # array axis (z, y, x) held constant


def resample_onto(volume: Volume, grid: Grid, order: int = 1) -> np.ndarray:
    """``volume`` sampled at the voxel centres of ``grid`` (world coordinates), array (z, y, x)."""
    if volume.grid.same_as(grid):
        return np.asarray(volume.array, dtype=np.float32)
    pts = grid.voxel_centres_world().reshape(-1, 3)
    return volume.sample_world(pts, order=order, cval=float(np.min(volume.array))).reshape(grid.shape).astype(np.float32)


def take_slice(array: np.ndarray, axis: str, index: int) -> np.ndarray:
    """2D slice of a (z, y, x[, c]) array, oriented for ``imshow``: axial (y, x) rows y; coronal and
    sagittal with superior (high z) at the top."""
    a = _AXIS_OF[axis]
    sl = np.take(array, int(index), axis=a)
    return sl if axis == "axial" else sl[::-1]


def slice_aspect(grid: Grid, axis: str) -> float:
    """``imshow`` aspect (row height / column width in mm) of a slice."""
    sx, sy, sz = grid.spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[axis]


def landmarks_in_slab(points_mm: np.ndarray, grid: Grid, axis: str, index: int, half_width: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Points within ``half_width`` voxels of slice ``index``: (indices into points, (M, 2) pixel
    coordinates (column, row) in the orientation of :func:`take_slice`)."""
    idx = grid.world_to_index(np.asarray(points_mm, float).reshape(-1, 3))  # (x, y, z)
    nz = grid.shape[0]
    held = {"axial": 2, "coronal": 1, "sagittal": 0}[axis]
    sel = np.flatnonzero(np.abs(idx[:, held] - index) <= half_width)
    p = idx[sel]
    if axis == "axial":
        cols, rows = p[:, 0], p[:, 1]
    elif axis == "coronal":
        cols, rows = p[:, 0], (nz - 1) - p[:, 2]
    else:
        cols, rows = p[:, 1], (nz - 1) - p[:, 2]
    return sel, np.stack([cols, rows], axis=1) if len(sel) else np.zeros((0, 2))


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Alternate tiles of two equally shaped 2D images."""
    r = (np.arange(a.shape[0]) * tiles // max(1, a.shape[0]))[:, None]
    c = (np.arange(a.shape[1]) * tiles // max(1, a.shape[1]))[None, :]
    return np.where((r + c) % 2 == 0, a, b)


@dataclass
class _Layers:
    """Pair images on the fixed grid (computed once)."""

    fixed: np.ndarray
    moving: np.ndarray

    @classmethod
    def of(cls, pair: Pair) -> "_Layers":
        grid = pair.fixed.grid
        return cls(np.asarray(pair.fixed.array, np.float32), resample_onto(pair.moving, grid))


class SliceScrubber:
    """Axis / slice / layer viewer of a pair: layers fixed, moving, difference, checkerboard;
    fixed landmarks (teal) and moving landmarks (pink) within half a voxel of the slice.

    State for tests: ``axis``, ``index``, ``layer``, ``image`` (the 2D array shown),
    ``fixed_points`` / ``moving_points`` ((M, 2) pixel coordinates drawn).
    """

    LAYERS = ("fixed", "moving", "difference", "checkerboard")

    def __init__(self, pair: Pair, axis: str = "axial", layer: str = "fixed", figsize=(5, 5)):
        import ipywidgets as W
        import matplotlib.pyplot as plt

        self.pair = pair
        self.grid = pair.fixed.grid
        self.layers = _Layers.of(pair)
        self.axis_w = W.ToggleButtons(options=AXES, value=axis, description="axis")
        self.layer_w = W.Dropdown(options=self.LAYERS, value=layer, description="layer")
        self.slice_w = W.IntSlider(description="slice", continuous_update=True)
        self.output = W.Output()
        with plt.ioff():
            self.figure, self.ax = plt.subplots(figsize=figsize)
        self._set_slice_range()
        self.axis_w.observe(self._on_axis, names="value")
        self.layer_w.observe(lambda _: self.update(), names="value")
        self.slice_w.observe(lambda _: self.update(), names="value")
        self.widget = W.VBox([W.HBox([self.axis_w, self.layer_w]), self.slice_w, self.output])
        self.update()

    # -------------------------------------------------------------- state
    @property
    def axis(self) -> str:
        return self.axis_w.value

    @property
    def index(self) -> int:
        return int(self.slice_w.value)

    @property
    def layer(self) -> str:
        return self.layer_w.value

    def _set_slice_range(self) -> None:
        n = self.grid.shape[_AXIS_OF[self.axis]]
        self.slice_w.max = n - 1
        self.slice_w.value = n // 2

    def _on_axis(self, _change) -> None:
        self._set_slice_range()
        self.update()

    def layer_image(self, layer: str) -> np.ndarray:
        f = take_slice(self.layers.fixed, self.axis, self.index)
        m = take_slice(self.layers.moving, self.axis, self.index)
        if layer == "fixed":
            return f
        if layer == "moving":
            return m
        if layer == "difference":
            return m - f
        if layer == "checkerboard":
            return checkerboard(f, m)
        raise ValueError(f"unknown layer {layer!r}")

    # ------------------------------------------------------------- render
    def update(self) -> None:
        self.image = self.layer_image(self.layer)
        self.fixed_points = self.moving_points = np.zeros((0, 2))
        if self.pair.has_landmarks:
            _, self.fixed_points = landmarks_in_slab(self.pair.fixed_landmarks, self.grid, self.axis, self.index)
            _, self.moving_points = landmarks_in_slab(self.pair.moving_landmarks, self.grid, self.axis, self.index)
        ax = self.ax
        ax.clear()
        cmap = "coolwarm" if self.layer == "difference" else "gray"
        ax.imshow(self.image, cmap=cmap, aspect=slice_aspect(self.grid, self.axis), interpolation="nearest")
        if len(self.fixed_points):
            ax.scatter(*self.fixed_points.T, s=14, c=TEAL, label="fixed landmarks")
        if len(self.moving_points):
            ax.scatter(*self.moving_points.T, s=14, c=PINK, label="moving landmarks")
        ax.set_title(f"{self.pair.name}: {self.axis} {self.index} ({self.layer})", fontsize=9)
        ax.set_axis_off()
        self.output.clear_output(wait=True)
        with self.output:
            from IPython.display import display

            display(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


# The linked explorers live in reindir_nb/explorers.py (which imports the helpers above); they are
# re-exported here lazily so that importing either module first works.
_EXPLORERS = ("PairExplorer", "LandmarkErrorExplorer", "IterationScrubber", "LinkedState")
__all__ += list(_EXPLORERS)


def __getattr__(name: str):
    if name in _EXPLORERS:
        from . import explorers

        return getattr(explorers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
