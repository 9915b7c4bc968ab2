"""Cache of one registration run's volumes on the fixed grid (what the explorers slice).

A run is anything with the :class:`reindir_nb.inr.registration.RegistrationRun` API used here:
``pair``, ``iterations``, ``warp``, ``jacobian_determinant``, ``uncertainty``, ``displacement``,
``transform_points`` and ``point_uncertainty`` (all taking ``iteration=``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

from ..core.geometry import Grid
from .slicing import take_slice

__all__ = ["RunVolumes"]


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
