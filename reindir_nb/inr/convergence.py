"""When a test-time registration has converged, without landmarks.

Every ``check_every`` steps the forward map is evaluated at a fixed set of probe points (drawn
once, inside the fixed mask, from a generator of their own: the run's point sequence is not
touched). The map change is how far the probes' images moved over the last ``window`` steps, in
mm (its 95th percentile over the probes, so that a region still moving counts).

With a constant Adam step the map never stops moving: once the registration has settled, the
change levels off at the jitter of the stochastic optimisation (a few tenths of a mm on the
bundled thorax CT at 2 mm) instead of falling to zero. So the rule is relative: the run stops
when the change has not fallen below ``(1 - min_improvement)`` times its best value for
``patience`` checks in a row, or at once when it is below ``tolerance_mm``; never before
``min_steps``. A run still improving (a hard case: noise, large motion) keeps setting new bests
and runs on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from ..core.checks import require_float, require_int
from ..core.device import make_generator
from .network import Params, siren
from .objective import Problem, apply_matrix

__all__ = ["Convergence", "Plateau", "MapChange"]


@dataclass(frozen=True)
class Convergence:
    """The stopping rule (see the module docstring); mm, steps, checks."""

    min_improvement: float = 0.1
    patience: int = 6
    tolerance_mm: float = 0.02
    window: int = 20
    check_every: int = 5
    min_steps: int = 40
    probes: int = 4096

    def __post_init__(self) -> None:
        require_float(self.min_improvement, "min_improvement", minimum=0.0)
        if self.min_improvement >= 1:
            raise ValueError(f"min_improvement must be a fraction below 1, got {self.min_improvement}")
        require_float(self.tolerance_mm, "tolerance_mm", positive=True)
        for name in ("window", "check_every", "patience", "probes"):
            require_int(getattr(self, name), name, 1)
        require_int(self.min_steps, "min_steps", 0)
        if self.window % self.check_every:
            raise ValueError(f"window ({self.window}) must be a multiple of check_every ({self.check_every})")


class Plateau:
    """The rule's decision from the sequence of map changes (mm), one per check."""

    def __init__(self, rule: Convergence):
        self.rule = rule
        self.best: float | None = None
        self.since_best = 0

    def update(self, step: int, change: float) -> bool:
        """Take the change measured at ``step``; True when the run has converged."""
        if self.best is None or change < self.best * (1.0 - self.rule.min_improvement):
            self.best, self.since_best = change, 0
        else:
            self.since_best += 1
        settled = change < self.rule.tolerance_mm or self.since_best >= self.rule.patience
        return step >= self.rule.min_steps and settled


class MapChange:
    """Measures the map change of one run and applies the rule (:class:`Convergence`)."""

    def __init__(self, rule: Convergence, problem: Problem, omega: float, seed: int):
        self.rule, self.omega = rule, omega
        self.probes = problem.sample_points(rule.probes, make_generator(seed + 65537), "fixed")
        self.to_mm = problem.moving_to_mm[:3, :3].t()
        self.f2m = problem.f2m
        self.positions: deque[torch.Tensor] = deque(maxlen=rule.window // rule.check_every + 1)
        self.plateau = Plateau(rule)
        self.last: float | None = None  # the last change measured (mm, p95 over the probes)
        self.last_mean: float | None = None  # its mean over the probes (mm), for the history

    @torch.no_grad()
    def check(self, step: int, forward: Params) -> bool:
        """Measure at ``step`` (when it is a check step); True when the run has converged."""
        if step % self.rule.check_every:
            return False
        self.positions.append(apply_matrix(self.f2m, self.probes + siren(forward, self.probes, self.omega)))
        if len(self.positions) < self.positions.maxlen:
            return False
        moved = torch.linalg.norm((self.positions[-1] - self.positions[0]) @ self.to_mm, dim=1)
        self.last = float(torch.quantile(moved.float(), 0.95))
        self.last_mean = float(moved.mean())
        return self.plateau.update(step, self.last)
