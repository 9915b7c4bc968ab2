"""Interactive viewers (ipywidgets 8 + matplotlib) for pairs and registrations: ``rn.widgets``.

This module holds :class:`SliceScrubber` and re-exports the linked explorers
(:class:`PairExplorer`, :class:`LandmarkErrorExplorer`, :class:`IterationScrubber`,
:class:`LinkedState`) and the slicing helpers of :mod:`reindir_nb.viz.slicing`.

Everything is shown on the FIXED image's grid; moving-side images are resampled there in
world coordinates (never index to index), landmarks (world mm) are projected through the
grid, and pixel aspect ratios come from the spacing. The state each viewer shows (axis,
slice, 2D image, landmark pixels) is exposed as attributes so tests can drive the widgets
from Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.pair import Pair
from .iteration_scrubber import IterationScrubber
from .landmark_explorer import LandmarkErrorExplorer
from .linked import LinkedState
from .pair_explorer import PairExplorer
from .palette import FIXED, MOVING
from .slicing import (AXES, checkerboard, landmarks_in_slab, resample_onto, show_slice, slice_aspect, slice_count,
                      take_slice)

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
    "PairExplorer",
    "LandmarkErrorExplorer",
    "IterationScrubber",
    "LinkedState",
]

TEAL, PINK = FIXED, MOVING  # older names of the palette's fixed / moving landmark colours


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
    """Axis / slice / layer viewer of a pair on the fixed grid.

    Layers: ``fixed``, ``moving`` (resampled onto the fixed grid in world mm), ``difference``
    (moving - fixed, symmetric colour range), ``checkerboard`` (fixed / moving tiles). Fixed
    landmarks (teal) and moving landmarks (pink) within ``slab`` voxels of the slice centre are
    drawn (default 0.5: the slice itself). Pixels are drawn with their mm aspect ratio.

    ``state``: an optional :class:`reindir_nb.viz.linked.LinkedState` shared with other explorers of
    the same fixed grid; axis and slice then follow it both ways (a selected landmark moves the slice).

    State for tests: ``axis``, ``index``, ``layer``, ``image`` (the 2D array shown), ``clim``,
    ``aspect``, ``fixed_points`` / ``moving_points`` ((M, 2) pixel (column, row) drawn) and
    ``fixed_drawn`` / ``moving_drawn`` (indices of those landmarks).
    """

    LAYERS = ("fixed", "moving", "difference", "checkerboard")

    def __init__(self, pair: Pair, axis: str = "axial", layer: str = "fixed", slab: float = 0.5,
                 state=None, figsize: tuple[float, float] = (5, 5)):
        import ipywidgets as W
        import matplotlib.pyplot as plt

        if axis not in AXES:
            raise ValueError(f"{pair.name}: axis must be one of {AXES}, got {axis!r}")
        if layer not in self.LAYERS:
            raise ValueError(f"{pair.name}: layer must be one of {self.LAYERS}, got {layer!r}")
        if not slab >= 0:
            raise ValueError(f"{pair.name}: slab half-width must be >= 0 voxels, got {slab}")
        self.pair = pair
        self.grid = pair.fixed.grid
        self.slab = float(slab)
        self.layers = _Layers.of(pair)
        both = np.concatenate([self.layers.fixed.ravel(), self.layers.moving.ravel()])
        self.intensity_range = (float(np.min(both)), float(np.max(both)))
        self.state = state
        self._syncing = False
        self._shown: tuple | None = None  # (axis, index, layer) drawn last
        self.renders = 0
        if state is not None:
            state.attach(pair)  # ValueError when its grid differs from this pair's fixed grid
            axis = state.axis
        self.axis_w = W.ToggleButtons(options=AXES, value=axis, description="axis")
        self.layer_w = W.Dropdown(options=self.LAYERS, value=layer, description="layer")
        self.slice_w = W.IntSlider(description="slice", continuous_update=True)
        self.output = W.Output()
        with plt.ioff():
            self.figure, self.ax = plt.subplots(figsize=figsize)
        self._set_slice_range(state.index if state is not None else None)
        self.axis_w.observe(self._on_axis, names="value")
        self.layer_w.observe(lambda _: self.update(), names="value")
        self.slice_w.observe(self._on_slice, names="value")
        if state is not None:
            state.observe(self._on_state, names=["axis", "index"])
        self.widget = W.VBox([W.HBox([self.axis_w, self.layer_w]), self.slice_w, self.output])
        self.update()

    # -------------------------------------------------------------- state
    axis = property(lambda self: self.axis_w.value, doc="The slicing axis shown (one of ``AXES``).")
    index = property(lambda self: int(self.slice_w.value), doc="The index of the slice shown (voxels).")
    layer = property(lambda self: self.layer_w.value, doc="The layer shown (one of ``LAYERS``).")

    @property
    def aspect(self) -> float:
        """Row height / column width (mm) of the shown slice."""
        return slice_aspect(self.grid, self.axis)

    def _set_slice_range(self, index: int | None = None) -> None:
        """Slider range of the current axis; ``index`` (default: the middle slice)."""
        n = slice_count(self.grid, self.axis)
        self._syncing = True
        try:
            self.slice_w.max = n - 1
            self.slice_w.value = n // 2 if index is None else int(np.clip(index, 0, n - 1))
        finally:
            self._syncing = False

    def _on_axis(self, _change) -> None:
        if self._syncing:
            return
        if self.state is not None:
            self.state.axis = self.axis  # the state picks the slice; _on_state follows
            return
        self._set_slice_range()
        self.update()

    def _on_slice(self, _change) -> None:
        if self._syncing:
            return
        if self.state is not None:
            self.state.index = self.index
        self.update()

    def _on_state(self, _change) -> None:
        """Follow the linked state (axis first, then the slider range, then the slice)."""
        self._syncing = True
        try:
            self.axis_w.value = self.state.axis
        finally:
            self._syncing = False
        self._set_slice_range(self.state.index)
        self.update()

    def layer_image(self, layer: str) -> np.ndarray:
        """The 2D array of ``layer`` at the current axis and slice."""
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
        raise ValueError(f"unknown layer {layer!r}; choose one of {self.LAYERS}")

    # ------------------------------------------------------------- render
    def update(self, force: bool = False) -> None:
        """Recompute the shown state and redraw (skipped when axis, slice and layer are unchanged)."""
        key = (self.axis, self.index, self.layer)
        if key == self._shown and not force:
            return
        self._shown = key
        self.renders += 1
        self.image = self.layer_image(self.layer)
        if self.layer == "difference":
            half = max(float(np.max(np.abs(self.image))), 1e-6)
            self.clim, cmap = (-half, half), "coolwarm"
        else:
            self.clim, cmap = self.intensity_range, "gray"
        empty = (np.zeros(0, dtype=int), np.zeros((0, 2)))
        (self.fixed_drawn, self.fixed_points), (self.moving_drawn, self.moving_points) = empty, empty
        if self.pair.has_landmarks:
            self.fixed_drawn, self.fixed_points = landmarks_in_slab(
                self.pair.fixed_landmarks, self.grid, self.axis, self.index, self.slab)
            self.moving_drawn, self.moving_points = landmarks_in_slab(
                self.pair.moving_landmarks, self.grid, self.axis, self.index, self.slab)
        ax = self.ax
        ax.clear()
        show_slice(ax, self.image, self.grid, self.axis, cmap=cmap, vmin=self.clim[0], vmax=self.clim[1])
        if len(self.fixed_points):
            ax.scatter(*self.fixed_points.T, s=14, c=FIXED, label="fixed landmarks")
        if len(self.moving_points):
            ax.scatter(*self.moving_points.T, s=14, c=MOVING, label="moving landmarks")
        ax.set_title(f"{self.pair.name}: {self.axis} {self.index} ({self.layer})", fontsize=9)
        ax.set_axis_off()
        from IPython import get_ipython

        if get_ipython() is not None:  # outside IPython there is no front end to draw into
            from IPython.display import display

            self.output.clear_output(wait=True)
            with self.output:
                display(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
