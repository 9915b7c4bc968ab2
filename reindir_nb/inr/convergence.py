"""When a test-time registration has converged, without landmarks.

Every ``check_every`` steps the forward map is evaluated at a fixed set of probe points (drawn
once, inside the fixed mask, from a generator of their own: the run's point sequence is not
touched). The map change is how far the probes' images moved over the last ``window`` steps, in
mm (its 95th percentile over the probes, so that a region still moving counts). A run stops when
the change has stayed below ``tolerance_mm`` at ``patience`` checks in a row, not before
``min_steps``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from ..core.checks import require_float, require_int
from ..core.device import make_generator
from .network import Params, siren
from .objective import Problem, apply_matrix

__all__ = ["Convergence", "MapChange"]


@dataclass(frozen=True)
class Convergence:
    """The stopping rule (see the module docstring); mm and steps."""

    tolerance_mm: float = 0.02
    window: int = 20
    check_every: int = 5
    patience: int = 2
    min_steps: int = 40
    probes: int = 4096

    def __post_init__(self) -> None:
        require_float(self.tolerance_mm, "tolerance_mm", positive=True)
        for name in ("window", "check_every", "patience", "probes"):
            require_int(getattr(self, name), name, 1)
        require_int(self.min_steps, "min_steps", 0)
        if self.window % self.check_every:
            raise ValueError(f"window ({self.window}) must be a multiple of check_every ({self.check_every})")


class MapChange:
    """Tracks the map change of one run (:class:`Convergence`)."""

    def __init__(self, rule: Convergence, problem: Problem, omega: float, seed: int):
        self.rule, self.omega = rule, omega
        self.probes = problem.sample_points(rule.probes, make_generator(seed + 65537), "fixed")
        self.to_mm = problem.moving_to_mm[:3, :3].t()
        self.f2m = problem.f2m
        self.positions: deque[torch.Tensor] = deque(maxlen=rule.window // rule.check_every + 1)
        self.below = 0
        self.last: float | None = None  # the last change measured (mm)

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
        self.below = self.below + 1 if self.last < self.rule.tolerance_mm else 0
        return step >= self.rule.min_steps and self.below >= self.rule.patience
