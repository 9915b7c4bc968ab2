"""Plumbing shared by the linked explorers: state binding, redraw-on-change into a PNG, the
selected-landmark marks (fixed teal, moving pink joined by a line; predicted orange cross)."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np

from ..core.geometry import Grid
from ..core.pair import Pair
from .linked import LinkedState
from .palette import FIXED, LINK, MOVING, PREDICTED
from .run_volumes import RunVolumes
from .slicing import project_points

__all__ = ["Explorer", "check_run", "draw_marks", "guarded", "landmark_marks", "new_figure", "png_bytes"]


def png_bytes(figure) -> bytes:
    """The PNG bytes of a matplotlib figure."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    return buf.getvalue()


def new_figure(figsize: tuple[float, float], dpi: int):
    """A pyplot-free ``matplotlib.figure.Figure`` (``figsize`` inches): needs no backend."""
    from matplotlib.figure import Figure  # no pyplot: explorers never auto-display or leak figures

    return Figure(figsize=figsize, dpi=dpi)


def check_run(pair: Pair, run: Any) -> None:
    """ValueError when ``run`` registered a pair on another fixed grid than ``pair``'s."""
    if run is not None and not pair.fixed.grid.same_as(run.pair.fixed.grid):
        raise ValueError(
            f"{pair.name}: the run registered a pair on another fixed grid ({run.pair.fixed.grid.shape}, "
            f"{run.pair.fixed.grid.spacing} mm) than the pair given ({pair.fixed.grid.shape}, "
            f"{pair.fixed.grid.spacing} mm); explore run.pair (the prepared pair) instead"
        )


class Explorer:
    """Base of the linked explorers: state binding, render-on-change with a view key, PNG output.
    Subclasses build their widgets (``image_w``, ``figure``, ``widget``) and define ``_key`` (what
    is shown) and ``_draw`` (draw it on ``figure``)."""

    css_class = "rn-explorer"

    def _bind(self, pair: Pair, run: Any, state: LinkedState | None) -> None:
        check_run(pair, run)
        self.pair, self.run = pair, run
        self.grid: Grid = pair.fixed.grid
        self.state = state if state is not None else LinkedState()
        self.state.attach(pair, run)
        self.volumes: RunVolumes | None = None if run is None else self.state.volumes(run)
        self._syncing = False
        self._last_key: tuple | None = None
        self.update_seconds = float("nan")
        self.renders = 0

    def _connect(self) -> None:
        """Follow the linked state (called once the widgets exist)."""
        self.state.observe(lambda _c: self._on_state(), names=["axis", "index", "landmark", "iteration"])

    def _on_state(self) -> None:
        self._pull()
        self.update()

    def _pull(self) -> None:  # copy state -> own widgets (without writing back)
        pass

    def _key(self) -> tuple:
        raise NotImplementedError

    def _draw(self) -> None:
        raise NotImplementedError

    def _iteration(self) -> int | None:
        """The state's iteration mapped to one this run recorded (nearest not above, else first)."""
        if self.run is None:
            return None
        its = list(self.run.recorded_iterations)
        want = self.state.iteration if self.state.iteration >= 0 else int(self.run.iterations)
        below = [i for i in its if i <= want]
        return below[-1] if below else its[0]

    def update(self, force: bool = False) -> None:
        """Redraw when what is shown changed (or ``force``); records ``update_seconds``."""
        key = self._key()
        if not force and key == self._last_key:
            return
        t0 = time.perf_counter()
        self._draw()
        self.image_w.value = png_bytes(self.figure)
        self._last_key = key
        self.renders += 1
        self.update_seconds = time.perf_counter() - t0

    def png(self) -> bytes:
        """The PNG currently shown."""
        return bytes(self.image_w.value)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def guarded(explorer: Explorer, fn):
    """A widget observer calling ``fn(change)`` unless ``explorer`` is copying state into its widgets."""
    def handler(change):
        if not explorer._syncing:
            fn(change)
    return handler


def landmark_marks(pair: Pair, volumes: RunVolumes | None, iteration: int | None, landmark: int, grid: Grid,
                   axis: str) -> dict[str, np.ndarray]:
    """Pixels of landmark ``landmark``'s fixed, moving and (with a run) predicted positions."""
    marks = {"fixed": project_points(pair.fixed_landmarks[landmark], grid, axis)[0],
             "moving": project_points(pair.moving_landmarks[landmark], grid, axis)[0]}
    if volumes is not None:
        marks["predicted"] = project_points(volumes.predicted(iteration)[landmark], grid, axis)[0]
    return marks


def draw_marks(ax, marks: dict[str, np.ndarray]) -> None:
    """Fixed (teal) and moving (pink) positions joined by a black line; predicted (orange x)."""
    f, m = marks["fixed"], marks["moving"]
    ax.plot([f[0], m[0]], [f[1], m[1]], color=LINK, linewidth=1.5, zorder=3)
    ax.scatter([f[0]], [f[1]], s=60, c=FIXED, edgecolors="black", zorder=4)
    ax.scatter([m[0]], [m[1]], s=60, c=MOVING, edgecolors="black", zorder=4)
    if "predicted" in marks:
        p = marks["predicted"]
        ax.plot([f[0], p[0]], [f[1], p[1]], color=PREDICTED, linewidth=1.0, linestyle=":", zorder=3)
        ax.scatter([p[0]], [p[1]], s=70, c=PREDICTED, marker="x", linewidths=2, zorder=5)
