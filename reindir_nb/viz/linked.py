"""What linked explorers share: view axis, slice, selected landmark, run iteration, run caches."""

from __future__ import annotations

from typing import Any

import numpy as np
import traitlets

from ..core.geometry import Grid
from ..core.pair import Pair
from .run_volumes import RunVolumes
from .slicing import AXES, landmark_slice, slice_count

__all__ = ["LinkedState"]


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
        return 1 if self.grid is None else slice_count(self.grid, self.axis)

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
