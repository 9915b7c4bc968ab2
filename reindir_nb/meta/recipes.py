"""Training recipes: the one home of what a profile's meta-training of each model is.

A :class:`Recipe` holds everything one training run of one model needs besides its data: the
:class:`TrainSettings` (paper Table 2 for ``paper``), the REINDIR encoder's
:class:`Architecture` and the start policy (``warm_start``: REINDIR's templates start from a
trained Reptile template and, in the CPU profiles, stay fixed while the encoder learns alone).
``python -m reindir_nb.train``, notebook 03, :class:`~reindir_nb.evaluation.workspace.Workspace`
and the benchmarks all get it from :func:`recipe` / :func:`profile_recipes`; a trained model keeps the
recipe's :meth:`Recipe.fingerprint` in ``model.info["recipe"]``.

The recipes per profile:

- ``paper``: Algorithm 1 as published (Reptile sign fixed): REINDIR trains templates, encoder and
  heads from scratch, the encoder on the loss of the adapted networks, 22750 outer steps.
- ``smoke`` / ``demo`` (a CPU, a few hundred outer steps): the encoder learns from the zero-shot
  loss (what iteration 0 measures), at a larger lr with a short warm-up; both models see both
  breathing directions (``swap_probability=0.5``); REINDIR starts from the trained Reptile
  template, keeps it fixed (``inner_steps=0``) and spends its 2/3 of Reptile's outer steps on
  zero-shot encoder updates, reading the pair and its amplified difference.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..core.checks import require_float, require_int
from ..core.profiles import Profile, get_profile
from ..inr.network import SirenConfig
from ..inr.objective import Objective
from .encoder import ENCODER_INPUTS

__all__ = ["TrainSettings", "Architecture", "Recipe", "recipe", "profile_recipes", "reindir_outer_steps", "KINDS"]

KINDS = ("reptile", "reindir")


@dataclass(frozen=True)
class TrainSettings:
    """Meta-training hyper-parameters (steps, points, learning rates; paper Table 2 for ``paper``)."""

    outer_steps: int
    inner_steps: int = 10
    inner_points: int = 5000
    inner_lr: float = 1e-4          # SGD on the template copies
    encoder_lr: float = 1e-5        # Adam peak lr (cosine annealing with warm restarts)
    warmup_steps: int = 250
    cycles: int = 4
    eps: float = 1.0                # Reptile step: phi0 <- phi0 + eps * mean(phi_adapted - phi0)
    scale_range: tuple[float, float] = (0.8, 1.2)
    scale_augment: bool = True
    objective: Objective = Objective()   # the same objective configuration as ``register``
    siren: SirenConfig = SirenConfig()   # the networks (omega lives here only)
    # Which loss trains the encoder (REINDIR): "adapted", the loss of the adapted INRs with the
    # embedding re-attached (Algorithm 1, first order); "template", the zero-shot loss of the
    # infused templates, taken from the first inner step's backward.
    encoder_loss_at: str = "adapted"
    # Tasks drawn from every set per outer step (paper: 1); the effective batch is
    # ``tasks_per_set * sets`` tasks whatever the number of ranks.
    tasks_per_set: int = 1
    # REINDIR encoder/heads updates: "sequential", one Adam step after every task (Algorithm 1;
    # serial runs only); "averaged", one step per outer step on the gradient averaged over its
    # tasks (what several ranks compute in parallel; equal to "sequential" with one task).
    encoder_update: str = "sequential"
    # Probability that a task's pair is registered the other way (fixed and moving swapped).
    swap_probability: float = 0.0
    # Zero-shot encoder/head updates per task (``encoder_loss_at="template"``): the first comes
    # from the first inner step; each further one is an Adam step at fresh sample points.
    encoder_steps: int = 1

    def __post_init__(self) -> None:
        if self.encoder_loss_at not in ("adapted", "template"):
            raise ValueError(f"encoder_loss_at must be 'adapted' or 'template', got {self.encoder_loss_at!r}")
        if self.encoder_update not in ("sequential", "averaged"):
            raise ValueError(f"encoder_update must be 'sequential' or 'averaged', got {self.encoder_update!r}")
        require_int(self.tasks_per_set, "tasks_per_set", 1)
        require_int(self.outer_steps, "outer_steps", 0)  # 0: an untrained model (REINDIR == its template)
        require_int(self.inner_steps, "inner_steps", 0)  # 0: REINDIR encoder only, frozen templates
        require_int(self.encoder_steps, "encoder_steps", 1)
        require_float(self.swap_probability, "swap_probability", minimum=0.0)
        if self.swap_probability > 1:
            raise ValueError(f"swap_probability must be in [0, 1], got {self.swap_probability}")
        if (self.inner_steps == 0 or self.encoder_steps > 1) and self.encoder_loss_at != "template":
            raise ValueError("inner_steps=0 and encoder_steps > 1 train the encoder on the zero-shot loss: "
                             f"they need encoder_loss_at='template' (got {self.encoder_loss_at!r})")
        require_int(self.inner_points, "inner_points", 1)
        require_int(self.warmup_steps, "warmup_steps", 0)
        require_int(self.cycles, "cycles", 1)
        require_float(self.inner_lr, "inner_lr", positive=True)
        require_float(self.encoder_lr, "encoder_lr", positive=True)
        require_float(self.eps, "eps", minimum=0.0)
        lo, hi = (require_float(v, "scale_range", positive=True) for v in self.scale_range)
        if lo > hi:
            raise ValueError(f"scale_range must be (low, high) with low <= high, got {self.scale_range}")
        if not isinstance(self.objective, Objective):
            raise TypeError(f"objective must be an Objective, got {type(self.objective).__name__}")
        if not isinstance(self.siren, SirenConfig):
            raise TypeError(f"siren must be a SirenConfig, got {type(self.siren).__name__}")

    def fingerprint(self) -> dict[str, str]:
        """Every field as a string (what a checkpoint records and a resume compares)."""
        return {f.name: repr(getattr(self, f.name)) for f in fields(self)}

    def with_(self, **changes) -> "TrainSettings":
        """A copy with fields changed; the objective's own fields (``similarity``, ``regulariser``,
        ``weights``, ``derivative_method``) may be given directly as a short form."""
        short = {k: changes.pop(k) for k in [f.name for f in fields(Objective)] if k in changes}
        if short:
            changes["objective"] = replace(changes.get("objective", self.objective), **short)
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"unknown training settings {unknown}; known: {sorted(f.name for f in fields(self))}")
        return replace(self, **changes)

    @classmethod
    def for_profile(cls, profile: "str | Profile", **changes) -> "TrainSettings":
        """The profile's Reptile settings with ``changes`` (see :meth:`with_`); REINDIR's are
        ``recipe("reindir", profile).settings``."""
        return recipe("reptile", profile, **changes).settings


@dataclass(frozen=True)
class Architecture:
    """REINDIR's encoder: start width, embedding length, what it reads
    (:data:`~reindir_nb.meta.encoder.ENCODER_INPUTS`) and the size (z, y, x voxels) its input is
    resampled to (None: the prepared pairs' own patch)."""

    width: int = 6
    embedding_length: int = 1025
    encoder_input: str = "pair"
    patch_size: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        require_int(self.width, "width", 1)
        require_int(self.embedding_length, "embedding_length", 1)
        if self.encoder_input not in ENCODER_INPUTS:
            raise ValueError(f"encoder_input must be one of {sorted(ENCODER_INPUTS)}, got {self.encoder_input!r}")
        if self.patch_size is not None:
            if len(tuple(self.patch_size)) != 3:
                raise ValueError(f"encoder_patch_size must be 3 voxel counts (z, y, x), got {self.patch_size!r}")
            object.__setattr__(self, "patch_size",
                               tuple(require_int(v, "encoder_patch_size", 1) for v in self.patch_size))


# the names ``recipe(...)`` / ``Recipe.with_`` take for Architecture fields
_ARCHITECTURE_NAMES = {"width": "width", "embedding_length": "embedding_length", "encoder_input": "encoder_input",
                       "encoder_patch_size": "patch_size"}


@dataclass(frozen=True)
class Recipe:
    """One model's training recipe in one profile (see the module docstring)."""

    kind: str
    profile: str
    settings: TrainSettings
    architecture: Architecture | None = None  # REINDIR only
    warm_start: bool = False                  # REINDIR: the templates start from a trained Reptile template

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be 'reptile' or 'reindir', got {self.kind!r}")
        if (self.architecture is None) != (self.kind == "reptile"):
            raise ValueError(f"a {self.kind} recipe {'needs' if self.kind == 'reindir' else 'has no'} encoder architecture")
        if self.kind == "reptile" and (self.warm_start or self.settings.inner_steps == 0):
            raise ValueError("inner_steps=0 and warm_start train a REINDIR encoder on frozen templates; "
                             "Reptile needs inner_steps >= 1")

    def with_(self, **changes: Any) -> "Recipe":
        """A copy with settings (:meth:`TrainSettings.with_`) or architecture (``width``,
        ``embedding_length``, ``encoder_input``, ``encoder_patch_size``) changed. The start policy
        comes with the settings it needs: ``recipe(kind, profile, warm_start=...)`` chooses it."""
        arch = {_ARCHITECTURE_NAMES[k]: changes.pop(k) for k in list(changes) if k in _ARCHITECTURE_NAMES}
        out = self
        if arch:
            if out.architecture is None:
                raise TypeError(f"{sorted(arch)}: a Reptile recipe has no encoder")
            out = replace(out, architecture=replace(out.architecture, **arch))
        return replace(out, settings=out.settings.with_(**changes)) if changes else out

    def fingerprint(self) -> dict[str, str]:
        """Kind, profile, start policy, every setting and the architecture, as strings."""
        out = {"kind": self.kind, "profile": self.profile, "warm_start": str(self.warm_start)}
        if self.architecture is not None:
            out.update({f"architecture.{f.name}": repr(getattr(self.architecture, f.name))
                        for f in fields(self.architecture)})
        out.update({f"settings.{k}": v for k, v in self.settings.fingerprint().items()})
        return out


# ---------------------------------------------------------------------------- the recipes
def _base_settings(prof: Profile) -> dict[str, Any]:
    """What both models of a profile share."""
    out: dict[str, Any] = dict(outer_steps=prof.outer_steps, inner_steps=prof.inner_steps,
                               inner_points=prof.inner_points)
    if prof.name != "paper":
        # a few hundred outer steps on a CPU instead of 22750: a larger encoder lr, a short warm-up,
        # the encoder on the zero-shot loss, both breathing directions. The inner SGD lr stays 1e-4
        # (SGD on the SIRENs diverges at 1e-3).
        out.update(encoder_lr=1e-4, warmup_steps=max(1, prof.outer_steps // 10), encoder_loss_at="template",
                   swap_probability=0.5)
    return out


# REINDIR in the CPU profiles: the encoder alone on the frozen Reptile template
_ENCODER_ONLY: dict[str, dict[str, Any]] = {
    "smoke": dict(inner_steps=0, encoder_steps=3),
    "demo": dict(inner_steps=0, encoder_steps=1, tasks_per_set=3, cycles=1),
}
_ENCODER_INPUT = {"smoke": "pair+difference", "demo": "pair+difference"}           # else "pair" (the paper)
_ENCODER_PATCH: dict[str, tuple[int, int, int]] = {"demo": (32, 32, 32)}          # else the prepared patch


def reindir_outer_steps(prof: Profile, reptile_steps: int | None = None, warm_start: bool = True) -> int:
    """REINDIR's outer steps when Reptile trains ``reptile_steps`` (default: the profile's): 2/3
    of them when REINDIR starts from the Reptile template, else all."""
    n = prof.outer_steps if reptile_steps is None else require_int(reptile_steps, "outer_steps", 0)
    return max(1, 2 * n // 3) if warm_start else n


def recipe(kind: str, profile: "str | Profile" = "demo", **changes: Any) -> Recipe:
    """The recipe of ``kind`` ("reptile" or "reindir") in ``profile``, with ``changes`` applied
    (:meth:`Recipe.with_`; ``warm_start=False`` gives REINDIR the from-scratch recipe)."""
    prof = get_profile(profile)
    if kind not in KINDS:
        raise ValueError(f"kind must be 'reptile' or 'reindir', got {kind!r}")
    base = _base_settings(prof)
    if kind == "reptile":
        return Recipe("reptile", prof.name, TrainSettings(**base)).with_(**changes)
    warm = bool(changes.pop("warm_start", prof.name in _ENCODER_ONLY))
    if warm:
        base.update(_ENCODER_ONLY.get(prof.name, {}), outer_steps=reindir_outer_steps(prof))
    arch = Architecture(prof.encoder_width, prof.embedding_length, _ENCODER_INPUT.get(prof.name, "pair"),
                        _ENCODER_PATCH.get(prof.name))
    return Recipe("reindir", prof.name, TrainSettings(**base), arch, warm).with_(**changes)


def profile_recipes(profile: "str | Profile" = "demo", outer_steps: int | None = None) -> dict[str, Recipe]:
    """Both models' recipes, ``{"reptile": ..., "reindir": ...}``; ``outer_steps`` sets Reptile's
    budget and REINDIR's follows it (:func:`reindir_outer_steps`)."""
    prof = get_profile(profile)
    reindir = recipe("reindir", prof)
    if outer_steps is None:
        return {"reptile": recipe("reptile", prof), "reindir": reindir}
    return {"reptile": recipe("reptile", prof, outer_steps=outer_steps),
            "reindir": reindir.with_(outer_steps=reindir_outer_steps(prof, outer_steps, reindir.warm_start))}
