"""The one interface every evaluated method exposes: :class:`Registration`.

A sweep runs a method on a pair and gets a Registration back; one row builder turns any
Registration into table rows (TRE, det J statistics, uncertainty, timings). INR runs, VoxelMorph
and elastix are adapted to it in :mod:`reindir_nb.evaluation.methods`.

Conventions: points are (N, 3) world mm ``(x, y, z)``; a registration maps FIXED points to
MOVING points. ``iterations`` are the recorded step counts (0 = before any step); a method that
runs to its own convergence records only :data:`CONVERGED` (-1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..core.volume import Volume

__all__ = ["CONVERGED", "Timings", "Registration", "UncertaintyAware"]

CONVERGED = -1  # iteration label of methods that ran to their own convergence (elastix)


@dataclass(frozen=True)
class Timings:
    """Wall-clock costs of one registration (seconds).

    ``encoder_seconds``: one-off forward/encoder time before any optimisation step;
    ``step_seconds``: mean time of one optimisation step (NaN when no step was taken);
    ``seconds``: cumulative optimisation time at each recorded iteration (0 at iteration 0,
    encoder time excluded)."""

    encoder_seconds: float
    step_seconds: float
    seconds: Mapping[int, float]


@runtime_checkable
class Registration(Protocol):
    """A finished registration of one pair, as the evaluation sees it.

    - ``name``: the method's label in result tables;
    - ``iterations``: recorded iterations (sorted; ``[CONVERGED]`` for converged methods);
    - ``timings``: :class:`Timings`;
    - ``transform_points(points_mm, estimate="cycle", iteration=None)``: fixed world mm (N, 3)
      -> moving world mm at a recorded iteration (None = last), the argument order of
      :meth:`reindir_nb.inr.registration.RegistrationRun.transform_points`. ``estimate`` is
      "cycle" or "forward"; methods with a single estimate return it for both. Callers pass
      ``estimate`` and ``iteration`` by keyword;
    - ``jacobian_determinant(iteration=None)``: det J of the fixed -> moving map on the fixed
      grid, always a :class:`Volume` (unitless, <= 0 = folding).

    Optional: ``uncertainty_at(points_mm, iteration)`` (see :class:`UncertaintyAware`) and
    ``diverged`` (bool) / ``diverged_at(iteration)`` (bool) for runs that blew up."""

    name: str

    @property
    def iterations(self) -> list[int]: ...

    @property
    def timings(self) -> Timings: ...

    def transform_points(self, points_mm: np.ndarray, estimate: str = "cycle",
                         iteration: int | None = None) -> np.ndarray: ...

    def jacobian_determinant(self, iteration: int | None = None) -> Volume: ...


@runtime_checkable
class UncertaintyAware(Protocol):
    """A Registration that also reports a per-point uncertainty (mm), e.g. ccIDIR's cycle
    uncertainty: the distance between the forward and the inverted backward estimate."""

    def uncertainty_at(self, points_mm: np.ndarray, iteration: int | None = None) -> np.ndarray: ...
