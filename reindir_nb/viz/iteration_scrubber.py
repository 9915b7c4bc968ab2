"""IterationScrubber: a slider over a run's recorded iterations (TRE curve, warped slice, errors)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.pair import Pair
from .explorer_base import Explorer, draw_marks, guarded, landmark_marks, new_figure
from .linked import LinkedState
from .palette import LINK, PREDICTED
from .slicing import show_slice

__all__ = ["IterationScrubber"]


class IterationScrubber(Explorer):
    """A slider over the run's recorded iterations: the TRE curve (cycle estimate; forward dashed)
    with a cursor, the warped moving image on the linked axis/slice and the per-landmark errors
    (sorted; grey: before registration) at that iteration. Warped slices of iterations whose
    volume is not cached are computed at that slice's points only.

    State for tests: ``cursor_iteration``, ``image`` (warped slice shown), ``errors`` (mm at the
    cursor), ``tre_at_cursor`` (mean, mm).
    """

    css_class = "rn-iteration-scrubber"

    def __init__(self, pair: Pair, run: Any, state: LinkedState | None = None,
                 figsize: tuple[float, float] = (11.0, 3.1), dpi: int = 80):
        import ipywidgets as W

        if run is None:
            raise ValueError(f"{pair.name}: IterationScrubber needs a registration run")
        self._bind(pair, run, state)
        its = list(run.recorded_iterations)
        self.iteration_w = W.SelectionSlider(options=its, value=self._iteration(), description="iteration",
                                             continuous_update=False)
        self.image_w = W.Image(format="png", width=int(figsize[0] * dpi))
        self.figure = new_figure(figsize, dpi)
        self.ax_curve, self.ax_image, self.ax_errors = self.figure.subplots(1, 3)
        self.figure.subplots_adjust(left=0.06, right=0.99, bottom=0.16, top=0.88, wspace=0.3)
        self.iteration_w.observe(guarded(self, lambda c: setattr(self.state, "iteration", int(c["new"]))),
                                 names="value")
        self.widget = W.VBox([self.iteration_w, self.image_w])
        self.widget.add_class(self.css_class)
        self._connect()
        self.update()

    @property
    def cursor_iteration(self) -> int:
        return int(self._iteration())

    def _pull(self) -> None:
        self._syncing = True
        try:
            self.iteration_w.value = self._iteration()
        finally:
            self._syncing = False

    def _key(self) -> tuple:
        return (self.cursor_iteration, self.state.axis, self.state.index, self.state.landmark)

    def _draw(self) -> None:
        from matplotlib.ticker import MaxNLocator

        it, axis, index = self.cursor_iteration, self.state.axis, self.state.index
        hist = self.run.history
        ax = self.ax_curve
        ax.clear()
        column = "tre_mean_mm" if "tre_mean_mm" in hist else "total"
        ax.plot(hist["iteration"], hist[column], marker="o", markersize=3, label="cycle" if column == "tre_mean_mm" else column)
        if "tre_mean_forward_mm" in hist:
            ax.plot(hist["iteration"], hist["tre_mean_forward_mm"], linestyle="--", linewidth=1, label="forward")
        ax.axvline(it, color=LINK, linewidth=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.tre_at_cursor = float("nan")
        if self.pair.has_landmarks:
            self.errors = self.volumes.errors(it)
            self.tre_at_cursor = float(self.errors.mean())
            ax.scatter([it], [self.tre_at_cursor], s=40, c="black", zorder=4)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("mean TRE (mm)" if column == "tre_mean_mm" else column, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        ax.set_title(f"iteration {it}" + ("" if np.isnan(self.tre_at_cursor) else f": {self.tre_at_cursor:.2f} mm"),
                     fontsize=9)

        self.image = self.volumes.plane("warped", it, axis, index, full=False)
        ax = self.ax_image
        ax.clear()
        show_slice(ax, self.image, self.grid, axis, cmap="gray")
        if self.pair.has_landmarks and self.state.landmark >= 0:
            draw_marks(ax, landmark_marks(self.pair, self.volumes, it, self.state.landmark, self.grid, axis))
        ax.set_title(f"warped moving, {axis} {index}", fontsize=9)
        ax.set_axis_off()

        ax = self.ax_errors
        ax.clear()
        if self.pair.has_landmarks:
            before = np.sort(self.pair.initial_distances())[::-1]
            ax.plot(before, color="0.6", label="before")
            ax.plot(np.sort(self.errors)[::-1], color=PREDICTED, label=f"iteration {it}")
            ax.set_xlabel("landmarks, sorted", fontsize=8)
            ax.set_ylabel("error (mm)", fontsize=8)
            ax.legend(fontsize=7)
            ax.tick_params(labelsize=7)
            ax.set_title("landmark errors", fontsize=9)
