"""LandmarkErrorExplorer: per-landmark errors before/after a run, sortable, with views and a 3D scatter."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.pair import Pair
from .explorer_base import Explorer, draw_marks, guarded, landmark_marks, new_figure
from .linked import LinkedState
from .palette import FIXED, LINK, MOVING, PREDICTED
from .slicing import AXES, landmark_slice, show_slice, take_slice

__all__ = ["LandmarkErrorExplorer"]


class LandmarkErrorExplorer(Explorer):
    """Per-landmark errors of a run: before (identity) and after (cycle estimate at the linked
    iteration), as a list sortable by ``after`` / ``before`` / ``gain`` (before - after) /
    ``index``, a before-vs-after scatter, three orthogonal views through the selected landmark
    (fixed image; fixed teal and moving pink joined by a black line, predicted orange) and a 3D
    plotly scatter of the fixed landmarks coloured by the error after (clicking a point selects
    it when the ``anywidget`` package makes plotly's FigureWidget available).

    State for tests: ``errors_before``, ``errors_after`` (mm), ``order`` (list order),
    ``selected`` (the landmark the views show), ``views`` (axis -> 2D image), ``marks`` (axis ->
    fixed/moving/predicted pixels), ``scatter3d`` (the plotly figure). The views are zoomed to
    ``zoom_mm`` around the landmark.
    """

    SORT_KEYS = ("after", "before", "gain", "index")
    css_class = "rn-landmark-explorer"

    def __init__(self, pair: Pair, run: Any, state: LinkedState | None = None, sort: str = "after",
                 figsize: tuple[float, float] = (11.0, 3.1), dpi: int = 80, plot3d: bool = True,
                 zoom_mm: float = 40.0):
        import ipywidgets as W

        if not pair.has_landmarks:
            raise ValueError(f"{pair.name}: LandmarkErrorExplorer needs landmarks")
        if run is None:
            raise ValueError(f"{pair.name}: LandmarkErrorExplorer needs a registration run")
        if sort not in self.SORT_KEYS:
            raise ValueError(f"sort must be one of {self.SORT_KEYS}, got {sort!r}")
        self._bind(pair, run, state)
        self.fixed = np.asarray(pair.fixed.array, dtype=np.float32)
        self.zoom_mm = float(zoom_mm)
        self.errors_before = pair.initial_distances()
        self.sort_w = W.ToggleButtons(options=self.SORT_KEYS, value=sort, description="sort by")
        self.table_w = W.Select(options=[], rows=14, description="", layout=W.Layout(width="230px", min_width="230px"))
        self.header_w = W.HTML("<b>landmark: before &rarr; after (mm)</b>", layout=W.Layout(width="230px"))
        self.image_w = W.Image(format="png", width=int(figsize[0] * dpi))
        self.figure = new_figure(figsize, dpi)
        axes = self.figure.subplots(1, 4, gridspec_kw={"width_ratios": [1.2, 1, 1, 1]})
        self.ax_scatter, self.ax_views = axes[0], dict(zip(AXES, axes[1:]))
        self.figure.subplots_adjust(left=0.06, right=0.99, bottom=0.16, top=0.88, wspace=0.25)
        self.scatter3d = self._make_scatter3d() if plot3d else None
        plot_w = self._plot_widget()

        self.sort_w.observe(lambda _c: self._fill_table(), names="value")
        self.table_w.observe(guarded(self, self._on_pick), names="value")
        table = W.VBox([self.header_w, self.table_w], layout=W.Layout(min_width="240px", flex="0 0 auto"))
        children = [self.sort_w, W.HBox([table, self.image_w])]
        if plot_w is not None:
            children.append(plot_w)
        self.widget = W.VBox(children)
        self.widget.add_class(self.css_class)
        self._connect()
        self._fill_table()
        self.update()

    # ---------------------------------------------------------------- state
    @property
    def iteration(self) -> int | None:
        return self._iteration()

    @property
    def errors_after(self) -> np.ndarray:
        return self.volumes.errors(self.iteration)

    @property
    def selected(self) -> int:
        """The landmark the views show: the linked selection, else the worst one after."""
        return self.state.landmark if self.state.landmark >= 0 else int(np.argmax(self.errors_after))

    def sort_order(self, key: str | None = None) -> np.ndarray:
        """Landmark indices in list order: largest error after/before, smallest gain, or index."""
        key = key or self.sort_w.value
        after, before = self.errors_after, self.errors_before
        if key == "index":
            return np.arange(len(after))
        values = {"after": -after, "before": -before, "gain": before - after}[key]
        return np.argsort(values, kind="stable")

    def _fill_table(self) -> None:
        after, before = self.errors_after, self.errors_before
        self.order = self.sort_order()
        self._syncing = True
        try:
            self.table_w.options = [(f"#{i}: {before[i]:.2f} \u2192 {after[i]:.2f}", int(i)) for i in self.order]
            self.table_w.value = self.state.landmark if self.state.landmark >= 0 else None
        finally:
            self._syncing = False

    def _on_pick(self, change) -> None:
        if change["new"] is not None:
            self.state.landmark = int(change["new"])

    def _on_state(self) -> None:
        if self._last_key is not None and self._last_key[0] != self.iteration:
            self._fill_table()  # errors changed: list labels and order
        self._syncing = True
        try:
            self.table_w.value = self.state.landmark if self.state.landmark >= 0 else None
        finally:
            self._syncing = False
        self.update()

    def _key(self) -> tuple:
        return (self.iteration, self.state.landmark)

    # ------------------------------------------------------------- plotly 3D
    def _make_scatter3d(self):
        import plotly.graph_objects as go

        try:
            fig = go.FigureWidget()
        except ImportError:  # plotly >= 6 needs anywidget for FigureWidget
            fig = go.Figure()
        pts = self.pair.fixed_landmarks
        fig.add_scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", name="fixed landmarks", showlegend=False,
                          marker=dict(size=3, color=self.errors_after, colorscale="Reds", cmin=0,
                                      colorbar=dict(title="error (mm)")),
                          customdata=np.arange(len(pts)), hovertemplate="#%{customdata}: %{marker.color:.2f} mm<extra></extra>")
        fig.add_scatter3d(x=[], y=[], z=[], mode="markers+lines", name="selected", showlegend=False,
                          line=dict(color=LINK, width=4), marker=dict(size=6, color=[FIXED, MOVING, PREDICTED]))
        fig.update_layout(height=380, margin=dict(l=0, r=0, t=24, b=0),
                          title=dict(text="fixed landmarks (mm), colour = error after", font=dict(size=12)),
                          scene=dict(aspectmode="data", xaxis_title="x (mm)", yaxis_title="y (mm)", zaxis_title="z (mm)"))
        if hasattr(fig.data[0], "on_click") and type(fig).__name__ == "FigureWidget":
            fig.data[0].on_click(self._on_click3d)
        return fig

    def _on_click3d(self, _trace, points, _state) -> None:
        inds = list(getattr(points, "point_inds", []) or [])
        if inds:
            self.state.landmark = int(inds[0])

    def _plot_widget(self):
        import ipywidgets as W

        if self.scatter3d is None:
            return None
        if isinstance(self.scatter3d, W.DOMWidget):
            return self.scatter3d
        self._plot_out = W.Output()
        with self._plot_out:
            from IPython.display import display

            display(self.scatter3d)
        return self._plot_out

    def _update_scatter3d(self) -> None:
        fig = self.scatter3d
        if fig is None:
            return
        lm = self.selected
        track = np.stack([self.pair.fixed_landmarks[lm], self.pair.moving_landmarks[lm],
                          self.volumes.predicted(self.iteration)[lm]])
        with fig.batch_update():
            fig.data[0].marker.color = self.errors_after
            fig.data[1].x, fig.data[1].y, fig.data[1].z = track[:, 0], track[:, 1], track[:, 2]

    def view_limits(self, axis: str) -> tuple[tuple[float, float], tuple[float, float]]:
        """((col0, col1), (row0, row1)) pixel window of a landmark view: ``zoom_mm`` around the
        fixed position (at least 8 voxels), grown to hold all marks, clipped to the slice."""
        marks = np.stack(list(self.marks[axis].values()))
        rows, cols = self.views[axis].shape
        sx, sy, sz = self.grid.spacing
        col_mm, row_mm = {"axial": (sx, sy), "coronal": (sx, sz), "sagittal": (sy, sz)}[axis]
        centre = self.marks[axis]["fixed"]
        out = []
        for k, (mm, n) in enumerate(((col_mm, cols), (row_mm, rows))):
            half = max(self.zoom_mm / mm, 8.0, float(np.abs(marks[:, k] - centre[k]).max()) + 3.0)
            lo, hi = max(centre[k] - half, -0.5), min(centre[k] + half, n - 0.5)
            out.append((float(lo), float(hi)))
        return out[0], out[1]

    # --------------------------------------------------------------- render
    def _draw(self) -> None:
        after, before, lm, it = self.errors_after, self.errors_before, self.selected, self.iteration
        ax = self.ax_scatter
        ax.clear()
        top = float(max(before.max(), after.max(), 1e-6)) * 1.05
        ax.plot([0, top], [0, top], color="0.6", linewidth=0.8)
        ax.scatter(before, after, s=8, c=after, cmap="Reds", vmin=0, vmax=top, edgecolors="0.4", linewidths=0.3)
        ax.scatter([before[lm]], [after[lm]], s=70, facecolors="none", edgecolors="black", linewidths=1.5)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("error before (mm)", fontsize=8)
        ax.set_ylabel(f"error at iteration {it} (mm)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(f"mean {before.mean():.2f} -> {after.mean():.2f} mm", fontsize=9)
        self.views, self.marks = {}, {}
        point = self.pair.fixed_landmarks[lm]
        for axis, vax in self.ax_views.items():
            k = landmark_slice(point, self.grid, axis)
            self.views[axis] = take_slice(self.fixed, axis, k)
            self.marks[axis] = landmark_marks(self.pair, self.volumes, it, lm, self.grid, axis)
            vax.clear()
            show_slice(vax, self.views[axis], self.grid, axis, cmap="gray")
            draw_marks(vax, self.marks[axis])
            (c0, c1), (r0, r1) = self.view_limits(axis)
            vax.set_xlim(c0, c1)
            vax.set_ylim(r1, r0)
            vax.set_title(f"#{lm} {axis} {k}: {before[lm]:.1f} -> {after[lm]:.1f} mm", fontsize=8)
            vax.set_axis_off()
        self._update_scatter3d()
