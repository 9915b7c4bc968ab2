"""Linked failure-case explorers (ipywidgets 8 + matplotlib + plotly) and the failure ranking.

Three explorers look at one pair and one registration run, on the FIXED image's grid (world mm,
moving-side images resampled there in world coordinates; aspect ratios from the spacing):

* :class:`PairExplorer` — axis, slice, window/level and a layer (fixed, moving, warped moving,
  differences before/after, checkerboard, det J, cycle uncertainty, displacement magnitude,
  deformed grid), landmarks drawn (fixed teal, moving pink, predicted orange);
* :class:`LandmarkErrorExplorer` — per-landmark error before/after (sortable list, scatter plot, 3D
  plotly scatter coloured by error); picking a landmark jumps every linked view to it and draws its
  fixed and moving positions joined by a black line, and the predicted position;
* :class:`IterationScrubber` — a slider over the recorded iterations: TRE curve with a cursor,
  the warped image and the landmark errors at that iteration.

Explorers built with the same :class:`LinkedState` share the selected landmark, axis, slice and
iteration, and one cache of the run's volumes (warped image, det J, uncertainty, displacement),
each computed once per iteration; moving a slider afterwards only re-slices and redraws. Every
explorer renders into an ``ipywidgets.Image`` (PNG) and keeps the state it shows as attributes
(``image``, ``clim``, point arrays, ``update_seconds``) so tests can drive it from Python.

A run is anything with the :class:`reindir_nb.register.RegistrationRun` API used here: ``pair``,
``iterations``, ``recorded_iterations``, ``history``, ``warp``, ``jacobian_determinant``,
``uncertainty``, ``displacement``, ``transform_points``, ``point_uncertainty`` (all taking
``iteration=``).
"""

from __future__ import annotations

import io
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import traitlets

from ..core.geometry import Grid
from ..core.metrics import per_pair_gain
from ..core.pair import Pair
from .widgets import AXES, PINK, TEAL, checkerboard, landmarks_in_slab, resample_onto, slice_aspect, take_slice

__all__ = [
    "PREDICTED",
    "LinkedState",
    "RunVolumes",
    "PairExplorer",
    "LandmarkErrorExplorer",
    "IterationScrubber",
    "rank_failures",
    "update_latency",
    "project_points",
    "landmark_slice",
]

PREDICTED = "#ff8c00"  # predicted landmark positions (orange)
_AXIS_OF = {"axial": 0, "coronal": 1, "sagittal": 2}  # array axis (z, y, x) held constant
_HELD_XYZ = {"axial": 2, "coronal": 1, "sagittal": 0}  # component of an (x, y, z) index held constant


# ----------------------------------------------------------------------------- geometry helpers
def project_points(points_mm: np.ndarray, grid: Grid, axis: str) -> np.ndarray:
    """(N, 2) pixel coordinates (column, row) of world points (N, 3) mm in the slice orientation
    of :func:`reindir_nb.widgets.take_slice`, whatever their depth (no slab selection)."""
    pts = np.asarray(points_mm, float).reshape(-1, 3)
    _, px = landmarks_in_slab(pts, grid, axis, 0, half_width=np.inf)
    return px


def landmark_slice(point_mm: np.ndarray, grid: Grid, axis: str) -> int:
    """Index of the slice (along ``axis``) nearest to a world point, clipped to the grid."""
    idx = grid.world_to_index(np.asarray(point_mm, float).reshape(1, 3))[0]
    n = grid.shape[_AXIS_OF[axis]]
    return int(np.clip(np.rint(idx[_HELD_XYZ[axis]]), 0, n - 1))


def _png(figure) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    return buf.getvalue()


def _figure(figsize: tuple[float, float], dpi: int):
    from matplotlib.figure import Figure  # no pyplot: explorers never auto-display or leak figures

    return Figure(figsize=figsize, dpi=dpi)


def _check_run(pair: Pair, run: Any) -> None:
    if run is not None and not pair.fixed.grid.same_as(run.pair.fixed.grid):
        raise ValueError(
            f"{pair.name}: the run registered a pair on another fixed grid ({run.pair.fixed.grid.shape}, "
            f"{run.pair.fixed.grid.spacing} mm) than the pair given ({pair.fixed.grid.shape}, "
            f"{pair.fixed.grid.spacing} mm); explore run.pair (the prepared pair) instead"
        )


# ----------------------------------------------------------------------------------- run cache
class RunVolumes:
    """Volumes of one run on the fixed grid, computed lazily and kept (least recently used first
    out): ``"warped"`` (moving image through the forward estimate), ``"det_j"``, ``"uncertainty"``
    (mm), ``"displacement"`` ((z, y, x, 3) mm vectors, forward estimate). Also the predicted
    landmark positions (cycle estimate, mm) and errors (mm) per iteration.

    :meth:`plane` returns one slice: from the cached volume when there is one (or when
    ``full=True``, computing it), else by evaluating the run at that slice's voxel centres only
    (same numbers as slicing the full volume, ~1/n of the cost; det J always uses the volume).
    ``compute_seconds[(kind, iteration)]`` records how long each volume took.
    """

    KINDS = ("warped", "det_j", "uncertainty", "displacement")

    def __init__(self, run: Any, max_volumes: int = 24, max_planes: int = 512):
        self.run = run
        self.grid: Grid = run.pair.fixed.grid
        self.max_volumes, self.max_planes = int(max_volumes), int(max_planes)
        self._volumes: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._planes: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._predicted: dict[int, np.ndarray] = {}
        self._centres: np.ndarray | None = None
        self.compute_seconds: dict[tuple, float] = {}

    @property
    def final(self) -> int:
        return int(self.run.iterations)

    def _it(self, iteration: int | None) -> int:
        return self.final if iteration is None or int(iteration) < 0 else int(iteration)

    def _arg(self, it: int) -> int | None:
        return None if it == self.final else it

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in RunVolumes.KINDS:
            raise ValueError(f"unknown run volume {kind!r}; choose one of {RunVolumes.KINDS}")

    def has_volume(self, kind: str, iteration: int | None = None) -> bool:
        return (kind, self._it(iteration)) in self._volumes

    def volume(self, kind: str, iteration: int | None = None) -> np.ndarray:
        """The full volume of ``kind`` at ``iteration`` (None/-1 = final), computed once."""
        self._check_kind(kind)
        it = self._it(iteration)
        key = (kind, it)
        if key in self._volumes:
            self._volumes.move_to_end(key)
            return self._volumes[key]
        t0 = time.perf_counter()
        arg = self._arg(it)
        run = self.run
        if kind == "warped":
            arr = run.warp(iteration=arg).array
        elif kind == "det_j":
            arr = run.jacobian_determinant(iteration=arg).array
        elif kind == "uncertainty":
            arr = run.uncertainty(iteration=arg).array
        else:
            arr = run.displacement(iteration=arg).array
        self.compute_seconds[key] = time.perf_counter() - t0
        self._volumes[key] = np.asarray(arr, dtype=np.float32)
        while len(self._volumes) > self.max_volumes:
            self._volumes.popitem(last=False)
        return self._volumes[key]

    def centres(self) -> np.ndarray:
        """World mm of the fixed voxel centres, (z, y, x, 3)."""
        if self._centres is None:
            self._centres = self.grid.voxel_centres_world()
        return self._centres

    def plane(self, kind: str, iteration: int | None, axis: str, index: int, full: bool = True) -> np.ndarray:
        """Slice ``index`` along ``axis`` of volume ``kind`` (orientation of ``take_slice``)."""
        self._check_kind(kind)
        it = self._it(iteration)
        if full or kind == "det_j" or (kind, it) in self._volumes:
            return take_slice(self.volume(kind, it), axis, index)
        key = (kind, it, axis, int(index))
        if key in self._planes:
            self._planes.move_to_end(key)
            return self._planes[key]
        pts = take_slice(self.centres(), axis, index)  # (rows, cols, 3) world mm
        flat = pts.reshape(-1, 3)
        arg = self._arg(it)
        run = self.run
        if kind == "warped":  # exactly what run.warp does, at these points only
            moved = run.transform_points(flat, estimate="forward", iteration=arg)
            values = run.pair.moving.sample_world(moved, order=1)
        elif kind == "displacement":
            values = run.transform_points(flat, estimate="forward", iteration=arg) - flat
        else:
            values = run.point_uncertainty(flat, iteration=arg)
        out = np.asarray(values, dtype=np.float32).reshape(*pts.shape[:2], *np.shape(values)[1:])
        self._planes[key] = out
        while len(self._planes) > self.max_planes:
            self._planes.popitem(last=False)
        return out

    def predicted(self, iteration: int | None = None) -> np.ndarray:
        """Predicted moving positions (N, 3) mm of the fixed landmarks (cycle estimate)."""
        it = self._it(iteration)
        if it not in self._predicted:
            self._predicted[it] = np.asarray(
                self.run.transform_points(self.run.pair.fixed_landmarks, estimate="cycle", iteration=self._arg(it)))
        return self._predicted[it]

    def errors(self, iteration: int | None = None) -> np.ndarray:
        """Per-landmark error (mm) at ``iteration``: ``|| predicted - moving landmark ||``."""
        return np.linalg.norm(self.predicted(iteration) - self.run.pair.moving_landmarks, axis=1)

    def precompute(self, kinds: Sequence[str] = KINDS, iterations: Sequence[int] | None = None,
                   progress: bool = True) -> None:
        """Fill the cache (e.g. before a demo) for ``kinds`` x ``iterations`` (default: final)."""
        from tqdm.auto import tqdm

        its = [self.final] if iterations is None else list(iterations)
        jobs = [(k, i) for i in its for k in kinds]
        for kind, it in tqdm(jobs, desc="explorer volumes", disable=not progress, leave=False):
            self.volume(kind, it)


# -------------------------------------------------------------------------------- linked state
class LinkedState(traitlets.HasTraits):
    """What linked explorers share: the view ``axis`` and slice ``index`` (on the fixed grid), the
    selected ``landmark`` (-1: none) and the run ``iteration`` (-1: the final state), plus one
    :class:`RunVolumes` cache per run. Selecting a landmark moves ``index`` to its slice; changing
    the axis keeps the landmark in view (or goes to the middle slice)."""

    axis = traitlets.Unicode("axial")
    index = traitlets.Int(-1)
    landmark = traitlets.Int(-1)
    iteration = traitlets.Int(-1)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.grid: Grid | None = None
        self.fixed_landmarks: np.ndarray | None = None
        self._caches: dict[int, RunVolumes] = {}

    def attach(self, pair: Pair, run: Any = None) -> None:
        """Bind to a pair's fixed grid (every explorer of one state must share it)."""
        grid = pair.fixed.grid
        if self.grid is not None and not self.grid.same_as(grid):
            raise ValueError(f"{pair.name}: linked explorers must show pairs on the same fixed grid "
                             f"({self.grid.shape} vs {grid.shape})")
        self.grid = grid
        if pair.has_landmarks:
            self.fixed_landmarks = pair.fixed_landmarks
        if self.index < 0 or self.index >= self.slices:
            self.index = self.slices // 2
        if run is not None and self.iteration < 0:
            self.iteration = int(run.iterations)

    @property
    def slices(self) -> int:
        """Number of slices along the current axis."""
        return 1 if self.grid is None else self.grid.shape[_AXIS_OF[self.axis]]

    def volumes(self, run: Any) -> RunVolumes:
        """The shared cache of ``run`` (kept as long as this state)."""
        cache = self._caches.get(id(run))
        if cache is None or cache.run is not run:
            cache = self._caches[id(run)] = RunVolumes(run)
        return cache

    def select_landmark(self, landmark: int) -> None:
        self.landmark = int(landmark)

    @traitlets.validate("axis")
    def _valid_axis(self, proposal):
        if proposal["value"] not in AXES:
            raise traitlets.TraitError(f"axis must be one of {AXES}, got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("index")
    def _valid_index(self, proposal):
        return int(np.clip(proposal["value"], 0, self.slices - 1)) if self.grid is not None else proposal["value"]

    @traitlets.validate("landmark")
    def _valid_landmark(self, proposal):
        value = int(proposal["value"])
        n = 0 if self.fixed_landmarks is None else len(self.fixed_landmarks)
        if value != -1 and not 0 <= value < n:
            raise traitlets.TraitError(f"landmark must be -1 (none) or in 0..{n - 1}, got {value}")
        return value

    @traitlets.observe("axis")
    def _axis_changed(self, _change) -> None:
        if self.grid is None:
            return
        if self.landmark >= 0 and self.fixed_landmarks is not None:
            self.index = landmark_slice(self.fixed_landmarks[self.landmark], self.grid, self.axis)
        else:
            self.index = self.slices // 2

    @traitlets.observe("landmark")
    def _landmark_changed(self, change) -> None:
        if change["new"] >= 0 and self.grid is not None and self.fixed_landmarks is not None:
            self.index = landmark_slice(self.fixed_landmarks[change["new"]], self.grid, self.axis)


# ------------------------------------------------------------------------------- base explorer
class _Explorer:
    """Shared plumbing: state binding, render-on-change with a view key, PNG output."""

    css_class = "rn-explorer"

    def _bind(self, pair: Pair, run: Any, state: LinkedState | None) -> None:
        _check_run(pair, run)
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
        self.image_w.value = _png(self.figure)
        self._last_key = key
        self.renders += 1
        self.update_seconds = time.perf_counter() - t0

    def png(self) -> bytes:
        """The PNG currently shown."""
        return bytes(self.image_w.value)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _guarded(explorer: _Explorer, fn):
    def handler(change):
        if not explorer._syncing:
            fn(change)
    return handler


# ------------------------------------------------------------------------------- PairExplorer
class PairExplorer(_Explorer):
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
        self.figure = _figure(figsize, dpi)
        self.ax = self.figure.add_axes((0.01, 0.02, 0.80, 0.90))
        self.cax = self.figure.add_axes((0.84, 0.10, 0.03, 0.74))

        self.axis_w.observe(_guarded(self, lambda c: setattr(self.state, "axis", c["new"])), names="value")
        self.slice_w.observe(_guarded(self, lambda c: setattr(self.state, "index", c["new"])), names="value")
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
        im = ax.imshow(self.image, cmap=cmap, vmin=self.clim[0], vmax=self.clim[1], aspect=slice_aspect(self.grid, axis),
                       interpolation="nearest")
        self.figure.colorbar(im, cax=self.cax)
        self.grid_lines = []
        if self.layer == "deformed grid":
            self.grid_lines = self.deformed_grid()
            ax.add_collection(LineCollection(self.grid_lines, colors="#ffd000", linewidths=0.8))
        empty = np.zeros((0, 2))
        self.fixed_points = self.moving_points = self.predicted_points = empty
        self.selected_marks: dict[str, np.ndarray] = {}
        pair = self.pair
        if pair.has_landmarks:
            _, self.fixed_points = landmarks_in_slab(pair.fixed_landmarks, self.grid, axis, index)
            _, self.moving_points = landmarks_in_slab(pair.moving_landmarks, self.grid, axis, index)
            if self.run is not None:
                _, self.predicted_points = landmarks_in_slab(self.volumes.predicted(self.iteration), self.grid, axis, index)
            for pts, colour, marker in ((self.fixed_points, TEAL, "o"), (self.moving_points, PINK, "o"),
                                        (self.predicted_points, PREDICTED, "x")):
                if len(pts):
                    ax.scatter(*pts.T, s=16, c=colour, marker=marker, linewidths=1.2)
            lm = self.state.landmark
            if lm >= 0:
                self.selected_marks = _landmark_marks(pair, self.volumes, self.iteration, lm, self.grid, axis)
                _draw_marks(ax, self.selected_marks)
        rows, cols = self.image.shape
        ax.set_xlim(-0.5, cols - 0.5)
        ax.set_ylim(rows - 0.5, -0.5)
        it = "" if self.run is None else f", iteration {self.iteration}"
        ax.set_title(f"{pair.name}: {axis} {index}, {self.layer}{it}", fontsize=9)
        ax.set_axis_off()
        lm = self.state.landmark
        self.info_w.value = (f"<span style='font-size:90%'>landmarks: <b style='color:{TEAL}'>fixed</b>, "
                             f"<b style='color:{PINK}'>moving</b>, <b style='color:{PREDICTED}'>predicted</b>"
                             + (f"; selected #{lm}" if lm >= 0 else "") + "</span>")


def _landmark_marks(pair: Pair, volumes: RunVolumes | None, iteration: int | None, landmark: int, grid: Grid,
                    axis: str) -> dict[str, np.ndarray]:
    """Pixels of landmark ``landmark``'s fixed, moving and (with a run) predicted positions."""
    marks = {"fixed": project_points(pair.fixed_landmarks[landmark], grid, axis)[0],
             "moving": project_points(pair.moving_landmarks[landmark], grid, axis)[0]}
    if volumes is not None:
        marks["predicted"] = project_points(volumes.predicted(iteration)[landmark], grid, axis)[0]
    return marks


def _draw_marks(ax, marks: dict[str, np.ndarray]) -> None:
    """Fixed (teal) and moving (pink) positions joined by a black line; predicted (orange x)."""
    f, m = marks["fixed"], marks["moving"]
    ax.plot([f[0], m[0]], [f[1], m[1]], color="black", linewidth=1.5, zorder=3)
    ax.scatter([f[0]], [f[1]], s=60, c=TEAL, edgecolors="black", zorder=4)
    ax.scatter([m[0]], [m[1]], s=60, c=PINK, edgecolors="black", zorder=4)
    if "predicted" in marks:
        p = marks["predicted"]
        ax.plot([f[0], p[0]], [f[1], p[1]], color=PREDICTED, linewidth=1.0, linestyle=":", zorder=3)
        ax.scatter([p[0]], [p[1]], s=70, c=PREDICTED, marker="x", linewidths=2, zorder=5)


# ---------------------------------------------------------------------- LandmarkErrorExplorer
class LandmarkErrorExplorer(_Explorer):
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
        self.figure = _figure(figsize, dpi)
        axes = self.figure.subplots(1, 4, gridspec_kw={"width_ratios": [1.2, 1, 1, 1]})
        self.ax_scatter, self.ax_views = axes[0], dict(zip(AXES, axes[1:]))
        self.figure.subplots_adjust(left=0.06, right=0.99, bottom=0.16, top=0.88, wspace=0.25)
        self.scatter3d = self._make_scatter3d() if plot3d else None
        plot_w = self._plot_widget()

        self.sort_w.observe(lambda _c: self._fill_table(), names="value")
        self.table_w.observe(_guarded(self, self._on_pick), names="value")
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
                          line=dict(color="black", width=4), marker=dict(size=6, color=[TEAL, PINK, PREDICTED]))
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
            self.marks[axis] = _landmark_marks(self.pair, self.volumes, it, lm, self.grid, axis)
            vax.clear()
            vax.imshow(self.views[axis], cmap="gray", aspect=slice_aspect(self.grid, axis), interpolation="nearest")
            _draw_marks(vax, self.marks[axis])
            (c0, c1), (r0, r1) = self.view_limits(axis)
            vax.set_xlim(c0, c1)
            vax.set_ylim(r1, r0)
            vax.set_title(f"#{lm} {axis} {k}: {before[lm]:.1f} -> {after[lm]:.1f} mm", fontsize=8)
            vax.set_axis_off()
        self._update_scatter3d()


# ---------------------------------------------------------------------------- IterationScrubber
class IterationScrubber(_Explorer):
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
        self.figure = _figure(figsize, dpi)
        self.ax_curve, self.ax_image, self.ax_errors = self.figure.subplots(1, 3)
        self.figure.subplots_adjust(left=0.06, right=0.99, bottom=0.16, top=0.88, wspace=0.3)
        self.iteration_w.observe(_guarded(self, lambda c: setattr(self.state, "iteration", int(c["new"]))),
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
        ax.axvline(it, color="black", linewidth=1)
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
        ax.imshow(self.image, cmap="gray", aspect=slice_aspect(self.grid, axis), interpolation="nearest")
        if self.pair.has_landmarks and self.state.landmark >= 0:
            _draw_marks(ax, _landmark_marks(self.pair, self.volumes, it, self.state.landmark, self.grid, axis))
        rows, cols = self.image.shape
        ax.set_xlim(-0.5, cols - 0.5)
        ax.set_ylim(rows - 0.5, -0.5)
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


# ------------------------------------------------------------------------------ failure ranking
def rank_failures(
    table: pd.DataFrame,
    method: str | None = None,
    learned: str = "REINDIR",
    baseline: str = "Reptile",
    gain_iteration: int = 0,
    regulariser: str | None = "jacobian",
    by: str = "tre",
) -> pd.DataFrame:
    """Rank the pairs of a sweep table (:func:`reindir_nb.evaluate.sweep`) worst first.

    Per pair (medians over seeds): ``tre_after_mm`` — ``tre_mean_mm`` of ``method`` (default:
    ``learned`` if in the table, else ``ccIDIR``, else the first method) at its last recorded
    iteration; ``reindir_gain_mm`` — ``baseline`` minus ``learned`` TRE at ``gain_iteration``
    (NaN when either is missing; small = REINDIR did not help); ``uncertainty_mm`` —
    ``uncertainty_mean_mm`` of ``method`` at its last iteration; ``worst_seed`` — the seed with the
    largest TRE after. Ranks (1 = worst): ``rank_tre`` (largest TRE), ``rank_gain`` (smallest
    gain), ``rank_uncertainty`` (largest); ``mean_rank`` over the available ranks. Sorted by
    ``by`` in ``"tre"``, ``"gain"``, ``"uncertainty"``, ``"overall"`` (mean rank).
    """
    if by not in ("tre", "gain", "uncertainty", "overall"):
        raise ValueError(f"by must be 'tre', 'gain', 'uncertainty' or 'overall', got {by!r}")
    missing = [c for c in ("pair", "method", "seed", "iteration", "tre_mean_mm") if c not in table.columns]
    if missing:
        raise ValueError(f"rank_failures: results table lacks columns {missing}")
    t = table.copy()
    t["iteration"] = t["iteration"].astype(int)
    if regulariser is not None and "regulariser" in t.columns and (t["regulariser"].astype(str) == regulariser).any():
        t = t[t["regulariser"].astype(str) == regulariser]
    methods = list(dict.fromkeys(t["method"]))
    if method is None:
        method = learned if learned in methods else ("ccIDIR" if "ccIDIR" in methods else methods[0])
    if method not in methods:
        raise ValueError(f"rank_failures: method {method!r} not in the table (have {methods})")
    m = t[(t["method"] == method) & (t["iteration"] >= 0)]
    if m.empty:
        raise ValueError(f"rank_failures: no iterative rows for method {method!r}")
    last = m.groupby("pair")["iteration"].transform("max")
    final = m[m["iteration"] == last]
    per_pair = final.groupby("pair")
    out = pd.DataFrame({
        "tre_after_mm": per_pair["tre_mean_mm"].median(),
        "iteration": per_pair["iteration"].first(),
        "worst_seed": final.loc[final.groupby("pair")["tre_mean_mm"].idxmax()].set_index("pair")["seed"].astype(int),
    })
    out["uncertainty_mm"] = per_pair["uncertainty_mean_mm"].median() if "uncertainty_mean_mm" in final else np.nan
    if "dataset" in t.columns:
        out.insert(0, "dataset", t.groupby("pair")["dataset"].first())
    out["reindir_gain_mm"] = per_pair_gain(t, learned, baseline, gain_iteration).reindex(out.index)
    out["rank_tre"] = out["tre_after_mm"].rank(ascending=False, method="min")
    out["rank_gain"] = out["reindir_gain_mm"].rank(ascending=True, method="min")
    out["rank_uncertainty"] = out["uncertainty_mm"].rank(ascending=False, method="min")
    out["mean_rank"] = out[["rank_tre", "rank_gain", "rank_uncertainty"]].mean(axis=1, skipna=True)
    out["method"] = method
    key = {"tre": ("tre_after_mm", False), "gain": ("reindir_gain_mm", True),
           "uncertainty": ("uncertainty_mm", False), "overall": ("mean_rank", True)}[by]
    out = out.reset_index().sort_values([key[0], "pair"], ascending=[key[1], True], na_position="last", kind="stable")
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------ latency
def update_latency(explorers: Sequence[_Explorer], steps: int = 5) -> pd.DataFrame:
    """Drive each explorer like a user and time it: PairExplorer moves the slice slider over
    ``steps`` slices (each layer volume already cached after the first), LandmarkErrorExplorer picks
    the ``steps`` worst landmarks, IterationScrubber steps through up to ``steps`` recorded
    iterations twice (``first visit``: slice-wise INR evaluation; ``cached``: re-slice only).

    One row per explorer and action: ``own_median_s`` / ``own_max_s`` (the explorer's own redraw,
    ``update_seconds``) and ``wall_median_s`` (setting the widget value, linked explorers'
    redraws included), seconds. The linked state is restored afterwards."""
    rows = []
    for ex in explorers:
        state = ex.state
        saved = (state.axis, state.index, state.landmark, state.iteration)

        def drive(action: str, setter, values) -> None:
            own, wall = [], []
            for v in values:
                t0 = time.perf_counter()
                setter(v)
                wall.append(time.perf_counter() - t0)
                own.append(ex.update_seconds)
            rows.append({"explorer": type(ex).__name__, "action": action, "updates": len(values),
                         "own_median_s": float(np.median(own)), "own_max_s": float(np.max(own)),
                         "wall_median_s": float(np.median(wall))})

        if isinstance(ex, PairExplorer):
            n = ex.slice_w.max + 1
            start = ex.slice_w.value
            values = [int((start + 1 + k * max(1, n // (steps + 1))) % n) for k in range(steps)]
            ex.update(force=True)
            drive(f"slice slider ({ex.layer})", lambda v: setattr(ex.slice_w, "value", v), values)
        elif isinstance(ex, LandmarkErrorExplorer):
            values = [int(i) for i in ex.sort_order("after")[:steps]]
            drive("pick landmark", lambda v: setattr(ex.table_w, "value", v), values)
        elif isinstance(ex, IterationScrubber):
            values = list(ex.iteration_w.options)
            values = [values[int(round(k))] for k in np.linspace(0, len(values) - 1, min(steps, len(values)))]
            drive("iteration (first visit)", lambda v: setattr(ex.iteration_w, "value", v), values)
            drive("iteration (cached)", lambda v: setattr(ex.iteration_w, "value", v), values)
        else:
            raise ValueError(f"update_latency: unknown explorer {type(ex).__name__}")
        state.axis, state.index, state.landmark, state.iteration = saved
    return pd.DataFrame(rows)
