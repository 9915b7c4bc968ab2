"""PairExplorer: slices of a pair and of its registration run on the fixed grid, with landmarks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.pair import Pair
from .explorer_base import Explorer, draw_marks, guarded, landmark_marks, new_figure
from .linked import LinkedState
from .palette import DEFORMED_GRID, FIXED, MOVING, PREDICTED
from .slicing import AXES, checkerboard, landmarks_in_slab, project_points, resample_onto, show_slice, take_slice

__all__ = ["PairExplorer"]


class PairExplorer(Explorer):
    """Slices of a pair (and of a run, when given) on the fixed grid.

    Layers: ``fixed``, ``moving`` (resampled in world mm), and with a run ``warped`` (moving
    image through the registration), ``difference before`` (moving - fixed),
    ``difference after`` (warped - fixed), ``checkerboard`` (fixed / warped, or fixed / moving
    without a run), ``det J`` (0..2; <= 0 folds), ``uncertainty`` (cycle, mm),
    ``displacement`` (magnitude, mm), ``deformed grid`` (fixed grid points drawn at phi(x)).
    Window/level (image units) apply to the intensity layers; differences use +-width/2.

    State for tests: ``axis``, ``index``, ``layer``, ``iteration``, ``image`` (2D array shown),
    ``clim``, ``fixed_points`` / ``moving_points`` / ``predicted_points`` ((M, 2) pixels of the
    landmarks within half a voxel of the slice), ``selected_marks`` (pixels of the selected
    landmark's fixed/moving/predicted positions), ``grid_lines`` (deformed grid polylines).
    """

    LAYERS = ("fixed", "moving", "warped", "difference before", "difference after", "checkerboard",
              "det J", "uncertainty", "displacement", "deformed grid")
    RUN_LAYERS = frozenset({"warped", "difference after", "det J", "uncertainty", "displacement", "deformed grid"})
    css_class = "rn-pair-explorer"

    def __init__(self, pair: Pair, run: Any = None, state: LinkedState | None = None, layer: str | None = None,
                 axis: str | None = None, figsize: tuple[float, float] = (5.4, 4.6), dpi: int = 80,
                 grid_step: int | None = None):
        import ipywidgets as W

        self._bind(pair, run, state)
        if axis is not None:
            self.state.axis = axis
        self.fixed = np.asarray(pair.fixed.array, dtype=np.float32)
        self.moving = resample_onto(pair.moving, self.grid)
        layers = [name for name in self.LAYERS if run is not None or name not in self.RUN_LAYERS]
        layer = layer or ("warped" if run is not None else "fixed")
        if layer not in layers:
            raise ValueError(f"{pair.name}: layer {layer!r} not available (choose one of {layers})")
        self.grid_step = grid_step
        lo, hi = (float(v) for v in np.percentile(self.fixed, [1, 99]))
        full_lo, full_hi = float(min(self.fixed.min(), self.moving.min())), float(max(self.fixed.max(), self.moving.max()))
        span = max(full_hi - full_lo, 1e-6)

        self.axis_w = W.ToggleButtons(options=AXES, value=self.state.axis, description="axis")
        self.layer_w = W.Dropdown(options=layers, value=layer, description="layer")
        self.slice_w = W.IntSlider(value=self.state.index, min=0, max=self.state.slices - 1, description="slice",
                                   continuous_update=True)
        self.level_w = W.FloatSlider(value=(lo + hi) / 2, min=full_lo, max=full_hi, step=span / 200,
                                     description="level", continuous_update=True)
        self.width_w = W.FloatSlider(value=max(hi - lo, span / 100), min=span / 100, max=span, step=span / 200,
                                     description="window", continuous_update=True)
        self.image_w = W.Image(format="png", width=int(figsize[0] * dpi))
        self.info_w = W.HTML()
        self.figure = new_figure(figsize, dpi)
        self.ax = self.figure.add_axes((0.01, 0.02, 0.80, 0.90))
        self.cax = self.figure.add_axes((0.84, 0.10, 0.03, 0.74))

        self.axis_w.observe(guarded(self, lambda c: setattr(self.state, "axis", c["new"])), names="value")
        self.slice_w.observe(guarded(self, lambda c: setattr(self.state, "index", c["new"])), names="value")
        for w in (self.layer_w, self.level_w, self.width_w):
            w.observe(lambda _c: self.update(), names="value")
        self.widget = W.VBox([W.HBox([self.axis_w, self.layer_w]), self.slice_w, W.HBox([self.level_w, self.width_w]),
                              self.image_w, self.info_w])
        self.widget.add_class(self.css_class)
        self._connect()
        self._pull()
        self.update()

    # ---------------------------------------------------------------- state
    @property
    def axis(self) -> str:
        return self.state.axis

    @property
    def index(self) -> int:
        return int(self.state.index)

    @property
    def layer(self) -> str:
        return self.layer_w.value

    @property
    def iteration(self) -> int | None:
        return self._iteration()

    def _pull(self) -> None:
        self._syncing = True
        try:
            self.axis_w.value = self.state.axis
            self.slice_w.max = self.state.slices - 1
            self.slice_w.value = self.state.index
        finally:
            self._syncing = False

    def _key(self) -> tuple:
        return (self.axis, self.index, self.layer, self.iteration, self.state.landmark,
                self.level_w.value, self.width_w.value)

    @property
    def window(self) -> tuple[float, float]:
        """Display range (image units) of the intensity layers from level and window."""
        half = self.width_w.value / 2
        return self.level_w.value - half, self.level_w.value + half

    def layer_image(self, layer: str) -> tuple[np.ndarray, str, tuple[float, float]]:
        """(2D image, colour map, (vmin, vmax)) of ``layer`` at the current axis/slice/iteration."""
        axis, index, it = self.axis, self.index, self.iteration
        f = take_slice(self.fixed, axis, index)
        win = self.window
        half = self.width_w.value / 2
        if layer == "fixed" or layer == "deformed grid":
            return f, "gray", win
        if layer == "moving":
            return take_slice(self.moving, axis, index), "gray", win
        if layer == "difference before":
            return take_slice(self.moving, axis, index) - f, "coolwarm", (-half, half)
        if layer == "checkerboard":
            other = self._run_plane("warped") if self.run is not None else take_slice(self.moving, axis, index)
            return checkerboard(f, other), "gray", win
        if self.run is None:
            raise ValueError(f"layer {layer!r} needs a registration run")
        if layer == "warped":
            return self._run_plane("warped"), "gray", win
        if layer == "difference after":
            return self._run_plane("warped") - f, "coolwarm", (-half, half)
        if layer == "det J":
            return self._run_plane("det_j"), "coolwarm", (0.0, 2.0)
        if layer == "uncertainty":
            vol = self.volumes.volume("uncertainty", it)
            return take_slice(vol, axis, index), "magma", (0.0, max(float(np.percentile(vol, 99)), 1e-6))
        if layer == "displacement":
            vol = np.linalg.norm(self.volumes.volume("displacement", it), axis=-1)
            return take_slice(vol, axis, index), "viridis", (0.0, max(float(vol.max()), 1e-6))
        raise ValueError(f"unknown layer {layer!r}; choose one of {self.LAYERS}")

    def _run_plane(self, kind: str) -> np.ndarray:
        """A slice of a run volume: from the full volume at the final iteration (computed once, then
        re-sliced); at other iterations from the cache if there, else evaluated at this slice only
        (keeps iteration scrubbing interactive while linked)."""
        full = kind == "det_j" or self.iteration == self.volumes.final
        return self.volumes.plane(kind, self.iteration, self.axis, self.index, full=full)

    def deformed_grid(self) -> list[np.ndarray]:
        """Polylines ((K, 2) pixels: column, row) of every ``grid_step``-th row and column of the
        slice's voxel centres x, drawn at phi(x) = x + displacement (projected on the slice)."""
        disp = self._run_plane("displacement")  # (rows, cols, 3) mm
        pts = take_slice(self.volumes.centres(), self.axis, self.index)
        moved = project_points((pts + disp).reshape(-1, 3), self.grid, self.axis).reshape(*pts.shape[:2], 2)
        rows, cols = moved.shape[:2]
        step = self.grid_step or max(1, max(rows, cols) // 16)
        lines = [moved[r, :, :] for r in range(0, rows, step)]
        lines += [moved[:, c, :] for c in range(0, cols, step)]
        return lines

    # --------------------------------------------------------------- render
    def _draw(self) -> None:
        from matplotlib.collections import LineCollection

        axis, index = self.axis, self.index
        self.image, cmap, self.clim = self.layer_image(self.layer)
        ax = self.ax
        ax.clear()
        self.cax.clear()
        im = show_slice(ax, self.image, self.grid, axis, cmap=cmap, vmin=self.clim[0], vmax=self.clim[1])
        self.figure.colorbar(im, cax=self.cax)
        self.grid_lines = []
        if self.layer == "deformed grid":
            self.grid_lines = self.deformed_grid()
            ax.add_collection(LineCollection(self.grid_lines, colors=DEFORMED_GRID, linewidths=0.8))
        empty = np.zeros((0, 2))
        self.fixed_points = self.moving_points = self.predicted_points = empty
        self.selected_marks: dict[str, np.ndarray] = {}
        pair = self.pair
        if pair.has_landmarks:
            _, self.fixed_points = landmarks_in_slab(pair.fixed_landmarks, self.grid, axis, index)
            _, self.moving_points = landmarks_in_slab(pair.moving_landmarks, self.grid, axis, index)
            if self.run is not None:
                _, self.predicted_points = landmarks_in_slab(self.volumes.predicted(self.iteration), self.grid, axis, index)
            for pts, colour, marker in ((self.fixed_points, FIXED, "o"), (self.moving_points, MOVING, "o"),
                                        (self.predicted_points, PREDICTED, "x")):
                if len(pts):
                    ax.scatter(*pts.T, s=16, c=colour, marker=marker, linewidths=1.2)
            lm = self.state.landmark
            if lm >= 0:
                self.selected_marks = landmark_marks(pair, self.volumes, self.iteration, lm, self.grid, axis)
                draw_marks(ax, self.selected_marks)
        it = "" if self.run is None else f", iteration {self.iteration}"
        ax.set_title(f"{pair.name}: {axis} {index}, {self.layer}{it}", fontsize=9)
        ax.set_axis_off()
        lm = self.state.landmark
        self.info_w.value = (f"<span style='font-size:90%'>landmarks: <b style='color:{FIXED}'>fixed</b>, "
                             f"<b style='color:{MOVING}'>moving</b>, <b style='color:{PREDICTED}'>predicted</b>"
                             + (f"; selected #{lm}" if lm >= 0 else "") + "</span>")
