"""Meta-learning of INR initialisations: Reptile templates and REINDIR (paper Algorithm 1).

Per outer step, one task (image pair) is sampled from every training set. For each task the
INRs are reset to the templates, the (frozen) encoder embeds the pair, ``inner_steps`` SGD
steps adapt the template copies under the full ccIDIR loss (REINDIR: the infused weights are
used in every step, the adapted tensors are the template copies), then the encoder and infusion
heads take one first-order Adam step on the loss at the adapted weights with the embedding
re-attached (``encoder_loss_at="adapted"``, Algorithm 1) or on the zero-shot loss of the
infused templates, i.e. the first inner step's loss (``encoder_loss_at="template"``, what
iteration 0 at test time measures; see :class:`TrainSettings`). The templates move TOWARD the adapted weights (Reptile)::

    phi0 <- phi0 + eps * mean_over_sets(phi_adapted - phi0)

(Algorithm 1 as printed subtracts; that moves away from the adapted weights — a sign slip.)

Every task (the ``tasks_per_set`` tasks of every set, in sorted set order, per outer step) draws
its pair, its scale factor and its sample points from generators seeded by (seed, outer step,
task index) alone, so the tasks of one outer step are independent and can run on any rank:
under ``torchrun`` (:mod:`reindir_nb.meta.distributed`) rank r runs tasks r, r+K, ...; the
Reptile deltas (and, with ``encoder_update="averaged"``, the encoder/head gradients) are
all-reduced and averaged over the tasks in task order, so a K-rank run equals the serial run
(docs/distributed.md).

Checkpoints hold everything needed to continue with identical numbers (templates, encoder,
optimiser and scheduler states, the step); they do not depend on the number of ranks. ``model.save(path)`` and
:func:`load` write/read models; training logs are CSV files appended every outer step.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..core.checks import require_float, require_int
from ..core.device import get_device, make_generator
from ..core.files import atomic_path, ensure_writable
from ..core.fingerprint import content_hash, data_identity, mismatch
from ..core.pair import Pair
from ..core.profiles import Profile, get_profile
from ..inr.network import Params, SirenConfig, clone_params, init_siren
from ..inr.objective import Objective, Problem, landmark_error_mm
from ..inr.registration import register
from .distributed import Comm, setup
from .encoder import ENCODER_INPUTS, Encoder, encoder_channels
from .infusion import InfusionHeads

# version of the files written by ``.save`` and training checkpoints (plain tensors, numbers,
# strings, lists and dicts: read with ``torch.load(weights_only=True)``)
FORMAT_VERSION = 2

__all__ = [
    "ReptileTemplate",
    "ReindirModel",
    "TrainSettings",
    "train_reptile",
    "train_reindir",
    "train_folds",
    "reptile_update",
    "load",
    "save_atomic",
    "TrainingFiles",
    "HeldOut",
    "Diverged",
    "FORMAT_VERSION",
]


def save_atomic(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def reptile_update(template: Params, adapted: Sequence[Params], eps: float) -> Params:
    """``phi0 + eps * mean_k(adapted_k - phi0)`` — moves TOWARD the adapted weights."""
    return [p0 + eps * torch.stack([a[i] - p0 for a in adapted]).mean(0) for i, p0 in enumerate(template)]


# ---------------------------------------------------------------------------------- models
@dataclass
class ReptileTemplate:
    """Learned initialisation of both INRs (an ``Initialiser`` for :func:`reindir_nb.register`)."""

    forward: Params
    backward: Params
    siren_config: SirenConfig = SirenConfig()
    info: dict = field(default_factory=dict)
    encoder_seconds: float = 0.0

    def initial_params(self, problem: Problem) -> tuple[Params, Params]:
        dev = problem.device
        return [p.to(dev) for p in self.forward], [p.to(dev) for p in self.backward]

    def state(self) -> dict:
        return {"kind": "reptile", "format_version": FORMAT_VERSION, "forward": [p.detach().cpu() for p in self.forward],
                "backward": [p.detach().cpu() for p in self.backward],
                "siren_config": vars(self.siren_config), "info": self.info}

    def save(self, path: str | Path) -> Path:
        return save_atomic(self.state(), path)


class ReindirModel(nn.Module):
    """Encoder + infusion heads + template INRs (an ``Initialiser`` for :func:`reindir_nb.register`).

    ``initial_params(problem)`` embeds the pair (its prepared fixed and moving patches) and
    returns the infused forward/backward params; ``encoder_seconds`` is the time it took.
    """

    def __init__(self, template: ReptileTemplate, patch_size: tuple[int, int, int], width: int = 6,
                 embedding_length: int = 1025, info: dict | None = None, encoder_input: str = "pair",
                 output_shift: bool = False):
        super().__init__()
        if encoder_input not in ENCODER_INPUTS:
            raise ValueError(f"encoder_input must be one of {sorted(ENCODER_INPUTS)}, got {encoder_input!r}")
        self.template = template
        self.siren_config = template.siren_config
        self.encoder_input = encoder_input
        self.encoder = Encoder(patch_size, width, embedding_length, ENCODER_INPUTS[encoder_input])
        self.heads = InfusionHeads(embedding_length, template.siren_config.hidden, output_shift=output_shift)
        self.info = dict(info or {})
        self.encoder_seconds = 0.0

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def patches(self, problem: Problem) -> Tensor:
        """``(1, C, D, H, W)``: the encoder input (:data:`ENCODER_INPUTS`) on its patch size."""
        fixed, moving = problem.encoder_images  # the coarse view of a fine view
        size = self.encoder.patch_size
        if tuple(fixed.shape[2:]) != size:
            fixed = nn.functional.interpolate(fixed, size=size, mode="trilinear", align_corners=True)
        if tuple(moving.shape[2:]) != size:
            moving = nn.functional.interpolate(moving, size=size, mode="trilinear", align_corners=True)
        return encoder_channels(fixed, moving, self.encoder_input).to(self.device)

    def embed(self, problem: Problem) -> Tensor:
        return self.encoder(self.patches(problem))[0]

    def infused(self, embedding: Tensor, forward: Params, backward: Params) -> tuple[Params, Params]:
        return self.heads.infuse(embedding, forward, backward)

    @torch.no_grad()
    def initial_params(self, problem: Problem) -> tuple[Params, Params]:
        t0 = time.perf_counter()
        self.to(problem.device)
        fwd, bwd = self.template.initial_params(problem)
        out = self.infused(self.embed(problem), fwd, bwd)
        if problem.device.type == "cuda":
            torch.cuda.synchronize()
        self.encoder_seconds = time.perf_counter() - t0
        return out

    def state(self) -> dict:
        return {"kind": "reindir", "format_version": FORMAT_VERSION, "template": self.template.state(),
                "patch_size": list(self.encoder.patch_size),
                "width": self.encoder.width, "embedding_length": self.encoder.embedding_length,
                "encoder_input": self.encoder_input, "output_shift": self.heads.output_shift,
                "encoder": {k: v.cpu() for k, v in self.encoder.state_dict().items()},
                "heads": {k: v.cpu() for k, v in self.heads.state_dict().items()}, "info": self.info}

    def save(self, path: str | Path) -> Path:
        return save_atomic(self.state(), path)


def _check_finite(tensors, what: str) -> None:
    for i, t in enumerate(tensors):
        if not torch.isfinite(t).all():
            raise ValueError(f"{what}: tensor {i} holds NaN or infinite values")


def _template_from_state(state: dict, where: str = "model") -> ReptileTemplate:
    _check_finite(state["forward"] + state["backward"], f"{where}: template")
    return ReptileTemplate(list(state["forward"]), list(state["backward"]), SirenConfig(**state["siren_config"]),
                           state.get("info", {}))


def _model_from_state(state: dict, where: str = "model") -> "ReptileTemplate | ReindirModel":
    if state["kind"] == "reptile":
        return _template_from_state(state, where)
    model = ReindirModel(_template_from_state(state["template"], where), tuple(state["patch_size"]), state["width"],
                         state["embedding_length"], state.get("info"), state.get("encoder_input", "pair"),
                         bool(state.get("output_shift", False)))
    _check_finite(list(state["encoder"].values()) + list(state["heads"].values()), f"{where}: encoder/heads")
    try:
        model.encoder.load_state_dict(state["encoder"])
        model.heads.load_state_dict(state["heads"])
    except RuntimeError as err:  # shapes that do not match the stated architecture
        raise ValueError(f"{where}: encoder/heads do not match width {state['width']}, embedding length "
                         f"{state['embedding_length']}, output_shift {bool(state.get('output_shift', False))}: "
                         f"{str(err).splitlines()[0]}") from None
    return model


def _read_state(path: Path) -> dict:
    """A file written by the kit, read safely (``weights_only=True``: no code runs on load)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for crafted files, RuntimeError for others
        raise ValueError(f"{path}: not a reindir_nb model or checkpoint that can be read safely "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a reindir_nb model (a {type(state).__name__})")
    return state


def load(path: str | Path, embedding_length: int | None = None) -> "ReptileTemplate | ReindirModel":
    """Read a model written by ``.save`` (or the model inside a training checkpoint). Files are
    read with ``weights_only=True``; other versions, NaN weights and (with ``embedding_length``)
    another embedding length are refused with an error naming the path."""
    path = Path(path)
    state = _read_state(path)
    if "model" in state and "step" in state:  # a training checkpoint
        state = state["model"]
    if not isinstance(state, dict) or state.get("kind") not in ("reptile", "reindir"):
        raise ValueError(f"{path}: not a reindir_nb model (kind {state.get('kind') if isinstance(state, dict) else None!r})")
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: written by another version of the kit (format {state.get('format_version')}, "
                         f"this kit reads {FORMAT_VERSION}); retrain or re-save it")
    if embedding_length is not None and state["kind"] == "reindir" and state["embedding_length"] != embedding_length:
        raise ValueError(f"{path}: embedding length {state['embedding_length']}, expected {embedding_length}")
    return _model_from_state(state, str(path))


# -------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainSettings:
    """Meta-training hyper-parameters (paper Table 2 for ``profile="paper"``)."""

    outer_steps: int
    inner_steps: int = 10
    inner_points: int = 5000
    inner_lr: float = 1e-4          # SGD on the template copies
    encoder_lr: float = 1e-5        # Adam peak lr (cosine annealing with warm restarts)
    warmup_steps: int = 250
    cycles: int = 4
    eps: float = 1.0                # Reptile step
    anneal_eps: bool = False        # eps decays linearly to 0 over training
    scale_range: tuple[float, float] = (0.8, 1.2)
    scale_augment: bool = True
    objective: Objective = Objective()   # the same objective configuration as ``register``
    siren: SirenConfig = SirenConfig()  # the networks (omega lives here only)
    # Which loss trains the encoder (REINDIR). "adapted": the loss of the adapted INRs with the
    # embedding re-attached (Algorithm 1, first order). "template": the zero-shot loss of the
    # infused templates, taken from the first inner step's backward (no extra INR evaluation).
    # Measured at demo (frozen Reptile template, 6 held-out phantoms): 100-300 encoder steps on
    # the zero-shot loss cut the zero-shot TRE from 4.04 to 3.56-3.65 mm; on the adapted loss the
    # encoder learns nothing (README, benchmarks/results/meta_demo).
    encoder_loss_at: str = "adapted"
    # Tasks drawn from every set per outer step (paper: 1). The effective batch of an outer step is
    # ``tasks_per_set * sets`` tasks whatever the number of ranks; raise it to keep more ranks busy.
    tasks_per_set: int = 1
    # REINDIR encoder/heads updates. "sequential": one Adam step after every task, in task order
    # (Algorithm 1 as printed; serial runs only). "averaged": one Adam step per outer step on the
    # gradient averaged over its tasks, all with the encoder of the start of the step (what
    # several ranks can compute in parallel; equals "sequential" with a single task per step).
    encoder_update: str = "sequential"
    # Probability that a task's pair is registered the other way (fixed and moving swapped,
    # :func:`reindir_nb.data.preprocess.swap_direction`): the templates then see both breathing
    # directions and only the encoder can tell which way a pair moves. 0: as given (paper).
    swap_probability: float = 0.0
    # Zero-shot encoder/head updates per task (``encoder_loss_at="template"``): the first comes
    # from the first inner step; each further one is an Adam step on the zero-shot loss at fresh
    # sample points, before the inner loop (one more encoder forward/backward, no inner loop).
    encoder_steps: int = 1
    # Landmark supervision of the zero-shot encoder updates (REINDIR, ``encoder_loss_at="template"``):
    # their loss adds ``landmark_weight`` x the mean landmark distance (mm) of the infused templates
    # (both networks, :func:`reindir_nb.inr.objective.landmark_error_mm`) on the task's landmarks
    # (every training pair needs them). The templates, the inner loop and test time never see
    # landmarks. 0: unsupervised (the paper).
    landmark_weight: float = 0.0
    # Peak Adam lr of the infusion heads (REINDIR); None: ``encoder_lr`` like the encoder. The
    # pair-specific part of a modulation comes from the pair-to-pair variation of the embedding
    # (~25 % of its norm), so at the encoder's lr the heads move it slowly.
    heads_lr: float | None = None

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
        require_float(self.landmark_weight, "landmark_weight", minimum=0.0)
        if self.landmark_weight > 0 and self.encoder_loss_at != "template":
            raise ValueError("landmark_weight supervises the zero-shot encoder updates: it needs "
                             f"encoder_loss_at='template' (got {self.encoder_loss_at!r})")
        if self.landmark_weight > 0 and self.inner_steps > 0 and self.encoder_steps == 1:
            raise ValueError("landmark_weight acts on the extra zero-shot encoder updates: with inner steps it needs "
                             "encoder_steps >= 2 (or inner_steps=0, the encoder alone on frozen templates)")
        require_int(self.inner_points, "inner_points", 1)
        require_int(self.warmup_steps, "warmup_steps", 0)
        require_int(self.cycles, "cycles", 1)
        require_float(self.inner_lr, "inner_lr", positive=True)
        require_float(self.encoder_lr, "encoder_lr", positive=True)
        if self.heads_lr is not None:
            require_float(self.heads_lr, "heads_lr", positive=True)
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

    @classmethod
    def for_profile(cls, profile: "str | Profile", **changes) -> "TrainSettings":
        """Paper values for ``paper``; CPU-sized steps for ``demo``/``smoke`` (see README).
        ``changes`` override fields; the objective's own fields (``similarity``, ``regulariser``,
        ``weights``, ``derivative_method``) may be given directly as a short form."""
        prof = get_profile(profile)
        short = {k: changes.pop(k) for k in [f.name for f in fields(Objective)] if k in changes}
        if short:
            changes["objective"] = replace(changes.get("objective", Objective()), **short)
        unknown = sorted(set(changes) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown training settings {unknown}; known: {sorted(f.name for f in fields(cls))}")
        base = dict(outer_steps=prof.outer_steps, inner_steps=prof.inner_steps, inner_points=prof.inner_points,
                    swap_probability=prof.swap_probability)
        if prof.name != "paper":
            # a few hundred outer steps on a CPU instead of 22750: a larger encoder lr and a short
            # warm-up. The inner SGD lr stays 1e-4: SGD on the SIRENs diverges at 1e-3 (measured).
            # Encoder lr 1e-4: at demo with 3e-4 the zero-shot loss of the infused template jumped
            # from 0.4 to 2.5 once the warm-up passed ~2.5e-4 and stayed > 1.2 (measured).
            # The encoder learns from the zero-shot loss: at demo the adapted-loss signal (Algorithm 1)
            # taught it nothing in 150 outer steps (see encoder_loss_at).
            base.update(encoder_lr=1e-4, warmup_steps=max(1, prof.outer_steps // 10), encoder_loss_at="template")
        base.update(changes)
        return cls(**base)


def _cosine_with_restarts(total: int, warmup: int, cycles: int):
    """lr factor per step: linear warm-up, then ``cycles`` cosine cycles (warm restarts)."""
    length = max(1, math.ceil(max(1, total - warmup) / max(1, cycles)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = ((step - warmup) % length) / length
        return 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _as_cohorts(cohorts) -> dict[str, list[Pair]]:
    if isinstance(cohorts, dict):
        out = {k: list(v) for k, v in cohorts.items() if len(v)}
    else:
        out = {}
        for p in cohorts:
            out.setdefault(p.dataset, []).append(p)
    if not out:
        raise ValueError("meta-training needs at least one non-empty cohort")
    return out


class Diverged(RuntimeError):
    """A meta-training loss became non-finite."""


def _require_finite(value: Tensor, what: str) -> None:
    if not torch.isfinite(value).all():
        raise Diverged(f"{what} is not finite ({float(value.detach().reshape(-1)[0])})")


def _patch_shapes(cohorts: dict[str, list[Pair]]) -> set[tuple[int, int, int]]:
    """The prepared patch sizes (z, y, x) of every training pair."""
    return {tuple(p.fixed.grid.shape) for ps in cohorts.values() for p in ps}


class Architecture(NamedTuple):
    """REINDIR's encoder: start width, embedding length, what it reads and its input patch size
    (``None`` fields: the profile's, and for the patch size the prepared pairs' own)."""

    width: int | None = None
    embedding_length: int | None = None
    encoder_input: str = "pair"
    patch_size: tuple[int, int, int] | None = None
    output_shift: bool = False  # the infusion heads also translate each INR's output (meta.infusion)


class _Trainer:
    """State of one meta-training run (templates, encoder, optimiser, generators, log)."""

    def __init__(self, kind: str, cohorts: dict[str, list[Pair]], settings: TrainSettings, profile: Profile,
                 seed: int, device: torch.device, architecture: Architecture,
                 start: ReptileTemplate | None = None, comm: Comm | None = None):
        self.kind, self.cohorts, self.settings, self.profile = kind, cohorts, settings, profile
        self.device, self.seed, self.step = device, seed, 0
        self.comm = comm or Comm.serial(device)
        if kind == "reptile" and settings.inner_steps == 0:
            raise ValueError("inner_steps=0 trains a REINDIR encoder on frozen templates; Reptile needs inner_steps >= 1")
        if settings.landmark_weight > 0:
            if kind != "reindir":
                raise ValueError("landmark_weight supervises REINDIR's encoder; Reptile trains without landmarks")
            missing = [p.name for ps in cohorts.values() for p in ps
                       if p.fixed_landmarks is None or p.moving_landmarks is None or not len(p.fixed_landmarks)]
            if missing:
                raise ValueError(f"landmark_weight={settings.landmark_weight}: training pairs without landmarks: "
                                 f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if kind == "reindir" and settings.encoder_update == "sequential" and self.comm.world > 1:
            raise ValueError(f"encoder_update='sequential' (one encoder step after every task, in order) cannot be "
                             f"spread over {self.comm.world} ranks; pass encoder_update='averaged' (one step per outer "
                             "step on the task-averaged gradient, docs/distributed.md)")
        config = settings.siren
        gen = make_generator(seed)
        template = ReptileTemplate(init_siren(config, gen), init_siren(config, gen), config)
        if start is not None:  # warm start: a copy of a trained template
            if start.siren_config != config:
                raise ValueError(f"start template has networks {start.siren_config}, settings {config}")
            template = ReptileTemplate([p.detach().clone() for p in start.forward],
                                       [p.detach().clone() for p in start.backward], start.siren_config)
        self.model: ReptileTemplate | ReindirModel = template
        self.optimiser = self.scheduler = None
        if kind == "reindir":
            torch.manual_seed(seed)  # encoder init
            shapes = _patch_shapes(cohorts)
            if len(shapes) != 1:
                raise ValueError(f"REINDIR needs prepared pairs of one patch size, got {sorted(shapes)}")
            a = architecture
            self.model = ReindirModel(template, a.patch_size or shapes.pop(), a.width, a.embedding_length,
                                      encoder_input=a.encoder_input, output_shift=a.output_shift).to(device)
            encoder, heads = list(self.model.encoder.parameters()), list(self.model.heads.parameters())
            groups = ([{"params": encoder + heads}] if settings.heads_lr is None else
                      [{"params": encoder}, {"params": heads, "lr": settings.heads_lr}])
            self.optimiser = torch.optim.Adam(groups, lr=settings.encoder_lr)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimiser, _cosine_with_restarts(settings.outer_steps, settings.warmup_steps, settings.cycles))
        self._seed_task(0)  # self.rng (pair, scale) and self.points (sample points): reseeded per task
        self.log_rows: list[dict] = []
        self.elapsed = 0.0

    @property
    def template(self) -> ReptileTemplate:
        return self.model if isinstance(self.model, ReptileTemplate) else self.model.template

    @property
    def averaged(self) -> bool:
        """REINDIR with one encoder step per outer step on the task-averaged gradient."""
        return isinstance(self.model, ReindirModel) and self.settings.encoder_update == "averaged"

    def learned(self) -> list[Tensor]:
        """The encoder and head parameters (what Adam updates), in a fixed order."""
        return [p for g in self.optimiser.param_groups for p in g["params"]] if self.optimiser is not None else []

    def tasks(self) -> list[str]:
        """The set of each task of one outer step, in task order: every set (sorted by name),
        ``tasks_per_set`` times in a row."""
        return [name for name in sorted(self.cohorts) for _ in range(self.settings.tasks_per_set)]

    def _seed_task(self, index: int) -> None:
        """Generators of task ``index`` of the current outer step, seeded by (seed, step, index)
        only (not by the rank): ``self.rng`` picks the pair and the scale factor, ``self.points``
        (CPU, so every device draws the same points) the sample points."""
        pick, points = np.random.SeedSequence([self.seed, self.step, int(index)]).spawn(2)
        self.rng = np.random.default_rng(pick)
        self.points = make_generator(int(points.generate_state(1, np.uint64)[0] >> np.uint64(1)))

    # ------------------------------------------------------------ one task
    def _problem(self, pair: Pair) -> Problem:
        """The task's tensors, scale-augmented (one factor per task drawn from ``scale_range``)."""
        from ..data.preprocess import scale_augment, swap_direction

        s = self.settings
        if s.scale_augment:
            pair = scale_augment(pair, float(self.rng.uniform(*s.scale_range)))
        if s.swap_probability > 0 and self.rng.uniform() < s.swap_probability:  # no draw at 0 (old runs unchanged)
            pair = swap_direction(pair)
        return Problem.from_pair(pair, device=self.device)

    def _loss(self, forward: Params, backward: Params, problem: Problem) -> dict[str, Tensor]:
        s = self.settings
        xf = problem.sample_points(s.inner_points, self.points, "fixed")
        xb = problem.sample_points(s.inner_points, self.points, "moving")
        return s.objective.terms(forward, backward, problem, xf, xb, s.siren.omega)

    def adapt(self, problem: Problem, encoder_grad: bool = False) -> tuple[Params, Params, float, dict | None]:
        """Inner loop: ``inner_steps`` SGD steps from the templates (REINDIR: on the infused weights,
        the modulations from the frozen encoder). Returns the adapted (pre-infusion) template copies,
        detached, the loss of the first step and the (detached) modulations used (None for Reptile).

        ``encoder_grad`` (REINDIR): the first step's loss, the zero-shot loss of the infused
        templates, also back-propagates into the encoder and heads (accumulated in their ``.grad``)."""
        s = self.settings
        fwd, bwd = (clone_params(ps, requires_grad=True) for ps in self._templates_here())
        mods = frozen = None
        if isinstance(self.model, ReindirModel):
            with torch.set_grad_enabled(encoder_grad):
                embedding = self.model.embed(problem)
                mods = self.model.heads.modulations(embedding)
            with torch.no_grad():  # what the later steps use: the frozen encoder's modulations
                frozen = self.model.heads.modulations(embedding) if encoder_grad else mods
        sgd = torch.optim.SGD(fwd + bwd, lr=s.inner_lr)
        first = float("nan")
        for i in range(s.inner_steps):
            if mods is None:
                used = (fwd, bwd)
            else:
                used = self.model.heads.modulated(mods if (i == 0 and encoder_grad) else frozen, fwd, bwd)
            total = self._loss(*used, problem)["total"]
            _require_finite(total, f"inner step {i}")
            if i == 0:
                first = float(total.detach())
            sgd.zero_grad(set_to_none=True)
            total.backward()
            sgd.step()
        return [p.detach() for p in fwd], [p.detach() for p in bwd], first, frozen

    def encoder_step(self, problem: Problem, forward: Params, backward: Params, step: bool = True) -> float:
        """First-order encoder update: the loss at the adapted weights ``forward``/``backward`` (held
        fixed) infused with the embedding re-attached; one Adam step on encoder + heads only.
        ``step=False``: only accumulate the gradient in ``.grad`` (``encoder_update="averaged"``)."""
        adapted = [p.detach() for p in forward], [p.detach() for p in backward]
        total = self._loss(*self.model.infused(self.model.embed(problem), *adapted), problem)["total"]
        _require_finite(total, "encoder loss")
        if step:
            self.optimiser.zero_grad(set_to_none=True)
        total.backward()
        if step:
            self.optimiser.step()
        return float(total.detach())

    def _templates_here(self) -> tuple[Params, Params]:
        """The (forward, backward) template tensors on this trainer's device (not copied)."""
        tmpl = self.template
        return [p.to(self.device) for p in tmpl.forward], [p.to(self.device) for p in tmpl.backward]

    def zero_shot_step(self, problem: Problem, step: bool = True) -> float:
        """One encoder/head update on the zero-shot loss (the infused templates, fresh sample
        points). ``step=False``: only accumulate the gradient in ``.grad`` ("averaged"; the
        gradients of a task's several zero-shot steps then add up, which Adam's normalisation
        makes equivalent to their mean)."""
        templates = self._templates_here()
        if step:
            self.optimiser.zero_grad(set_to_none=True)
        infused = self.model.infused(self.model.embed(problem), *templates)
        total = self._loss(*infused, problem)["total"]
        if self.settings.landmark_weight > 0:
            total = total + self.settings.landmark_weight * landmark_error_mm(*infused, problem, self.settings.siren.omega)
        _require_finite(total, "zero-shot encoder loss")
        total.backward()
        if step:
            self.optimiser.step()
        return float(total.detach())

    def _task(self, pair: Pair) -> tuple[Params, Params, dict[str, float]]:
        """One task: adapted (forward, backward) template copies and the losses. REINDIR with
        ``encoder_update="sequential"`` also takes the task's Adam step(s); with "averaged" the
        task's encoder/head gradient is left in ``.grad`` for :meth:`outer_step`. With
        ``inner_steps=0`` (encoder only) the templates are returned unchanged."""
        problem = self._problem(pair)
        s = self.settings
        reindir = isinstance(self.model, ReindirModel)
        at_template = reindir and s.encoder_loss_at == "template"
        step_now = reindir and not self.averaged
        if at_template:  # the zero-shot updates that do not come from the first inner step
            extra = [self.zero_shot_step(problem, step_now)
                     for _ in range(s.encoder_steps - (1 if s.inner_steps else 0))]
            if s.inner_steps == 0:
                return (*self._templates_here(), {"loss_first": extra[0], "loss_adapted": extra[-1]})
        if at_template and step_now:
            self.optimiser.zero_grad(set_to_none=True)
        fwd, bwd, first, mods = self.adapt(problem, encoder_grad=at_template)
        if reindir and not at_template:
            adapted_loss = self.encoder_step(problem, fwd, bwd, step=step_now)
        else:
            if at_template and step_now:
                self.optimiser.step()  # the gradient of the first inner step's (zero-shot) loss
            used = (fwd, bwd) if mods is None else self.model.heads.modulated(mods, fwd, bwd)
            with torch.set_grad_enabled(self.settings.objective.needs_grad):  # for the log
                adapted_loss = float(self._loss(*used, problem)["total"].detach())
        _require_finite(torch.tensor(adapted_loss), "adapted loss")
        return fwd, bwd, {"loss_first": first, "loss_adapted": adapted_loss}

    def outer_step(self) -> dict:
        """One outer step over every set; on a non-finite loss the trainer is put back to the
        state before the step and :class:`Diverged` is raised."""
        before = copy.deepcopy(self.checkpoint_state(with_log=False))
        try:
            return self._outer_step()
        except Diverged as err:
            self.restore({**before, "log": self.log_rows})
            raise Diverged(f"outer step {self.step}: {err}") from None

    def _outer_step(self) -> dict:
        """Run this rank's tasks, then all-reduce one ``(tasks, values)`` buffer: per task its Reptile
        delta (adapted - template), its encoder/head gradient (``averaged``) and its two losses, in
        its own row (zeros elsewhere, so the sum over ranks is exact); rows are summed in task
        order and divided by the number of tasks, as in a serial run. A Diverged task on any rank
        stops every rank (an all-reduced flag) before anything changes."""
        t0 = time.perf_counter()
        s, comm = self.settings, self.comm
        names = self.tasks()
        count = len(names)
        tmpl = self.template
        base = [p.to(self.device) for p in tmpl.forward + tmpl.backward]
        n_forward = len(tmpl.forward)
        learned = self.learned() if self.averaged else []
        n_siren, n_learned = sum(p.numel() for p in base), sum(p.numel() for p in learned)
        rows = torch.zeros(count, n_siren + n_learned + 2, dtype=base[0].dtype, device=self.device)
        failed, message = count, ""
        for t in comm.mine(count):
            self._seed_task(t)
            pairs = self.cohorts[names[t]]
            pair = pairs[int(self.rng.integers(len(pairs)))]
            if learned:
                self.optimiser.zero_grad(set_to_none=True)
            try:
                fwd, bwd, stats = self._task(pair)
            except Diverged as err:
                failed, message = t, f"task {t} ({names[t]}, {pair.name}): {err}"
                break
            rows[t, :n_siren] = torch.cat([(a - p0).reshape(-1) for a, p0 in zip(fwd + bwd, base)])
            if learned:
                rows[t, n_siren:n_siren + n_learned] = torch.cat(
                    [(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in learned])
            rows[t, -2] = stats["loss_first"]
            rows[t, -1] = stats["loss_adapted"]
        first_failed = comm.min_int(failed)
        if first_failed < count:
            raise Diverged(message if failed == first_failed else
                           f"task {first_failed} ({names[first_failed]}) on rank {first_failed % comm.world} diverged")
        comm.sum_(rows)
        total = rows[0].clone()
        for t in range(1, count):  # task order: the same additions on every rank and in a serial run
            total += rows[t]
        mean = total / count
        eps = s.eps * (1 - self.step / s.outer_steps) if s.anneal_eps else s.eps
        new, offset = [], 0
        for p0 in base:
            new.append((p0 + eps * mean[offset:offset + p0.numel()].view_as(p0)).detach())
            offset += p0.numel()
        tmpl.forward, tmpl.backward = new[:n_forward], new[n_forward:]
        if learned:
            for p in learned:
                p.grad = mean[offset:offset + p.numel()].view_as(p).clone()
                offset += p.numel()
            self.optimiser.step()
        row = {"step": self.step}
        losses = rows[:, -2:].double().cpu().numpy()
        for name in sorted(self.cohorts):
            mine = [t for t, n in enumerate(names) if n == name]
            row[f"{name}/loss_first"] = float(losses[mine, 0].mean())
            row[f"{name}/loss_adapted"] = float(losses[mine, 1].mean())
        if self.scheduler is not None:
            row["encoder_lr"] = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
        self.step += 1
        self.elapsed += time.perf_counter() - t0
        row["eps"] = eps
        row["seconds"] = self.elapsed
        self.log_rows.append(row)
        return row

    # --------------------------------------------------------- checkpoints
    def checkpoint_state(self, with_log: bool = True) -> dict:
        return {
            "step": self.step, "kind": self.kind, "model": self.model.state(), "elapsed": self.elapsed,
            "optimiser": None if self.optimiser is None else self.optimiser.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "log": self.log_rows if with_log else [], "torch_rng": torch.get_rng_state(),
        }

    def restore(self, state: dict) -> None:
        if state["kind"] != self.kind:
            raise ValueError(f"checkpoint is a {state['kind']} run, not {self.kind}")
        model = _model_from_state(state["model"])
        if isinstance(model, ReindirModel):
            self.model.template = model.template
            self.model.encoder.load_state_dict(model.encoder.state_dict())
            self.model.heads.load_state_dict(model.heads.state_dict())
            self.optimiser.load_state_dict(state["optimiser"])
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.model = model
        self.step, self.elapsed = state["step"], state["elapsed"]
        torch.set_rng_state(state["torch_rng"])
        self.log_rows = list(state["log"])


def _write_log(rows: list[dict], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


@dataclass(frozen=True)
class TrainingFiles:
    """Where a training run writes: ``checkpoint`` (every ``checkpoint_every`` outer steps and at
    the end; with ``resume`` an existing one for the SAME fingerprint is continued, one for other
    inputs is an error; ``resume=False`` starts over and overwrites it) and the CSV ``log``."""

    checkpoint: Path | None = None
    checkpoint_every: int = 25
    log: Path | None = None
    resume: bool = True

    def __post_init__(self) -> None:
        require_int(self.checkpoint_every, "checkpoint_every", 1)


@dataclass(frozen=True)
class HeldOut:
    """Pairs never trained on whose zero-shot TRE (mm, mean over pairs, iteration 0 of
    ``register``) is logged every ``every`` outer steps as ``heldout_tre_mm``: the curve that
    shows whether the start is learning, not only the loss."""

    pairs: tuple[Pair, ...]
    every: int = 25

    def __post_init__(self) -> None:
        require_int(self.every, "heldout_every", 1)
        if not self.pairs or not all(p.has_landmarks for p in self.pairs):
            raise ValueError("held-out pairs must be a non-empty list of pairs with landmarks")


def _fingerprint(kind: str, trainer: "_Trainer", start: ReptileTemplate | None) -> dict[str, str]:
    """Everything that determines a training result (settings, profile, seed, architecture, the
    data's names and contents, the warm start)."""
    out = {"kind": kind, "profile": trainer.profile.name, "seed": str(trainer.seed),
           "data": data_identity(p for ps in trainer.cohorts.values() for p in ps),
           "sets": ",".join(f"{k}:{len(v)}" for k, v in sorted(trainer.cohorts.items())),
           "start": "none" if start is None else content_hash(list(start.forward) + list(start.backward))}
    if isinstance(trainer.model, ReindirModel):
        out.update(width=str(trainer.model.encoder.width), embedding_length=str(trainer.model.encoder.embedding_length))
        out["encoder_input"] = trainer.model.encoder_input
        out["encoder_patch_size"] = "x".join(map(str, trainer.model.encoder.patch_size))
        if trainer.model.heads.output_shift:  # only when on: older checkpoints (without it) still resume
            out["output_shift"] = "True"
    out.update({f"settings.{k}": v for k, v in trainer.settings.fingerprint().items() if k != "outer_steps"})
    return out


def _heldout_tre(model, heldout: HeldOut) -> float:
    """Mean zero-shot TRE (mm) of ``model`` over the held-out pairs (no test-time step)."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    tres = [float(register(p, init=model, iterations=0, progress=False, prealign="none", safe_start=False)
                  .history["tre_mean_mm"].iloc[0]) for p in heldout.pairs]
    if was_training:
        model.train()
    return float(np.mean(tres))


def _resume(trainer: "_Trainer", files: TrainingFiles, fingerprint: dict[str, str]) -> None:
    """Continue from ``files.checkpoint`` when it was written for the same fingerprint."""
    if not (files.resume and files.checkpoint is not None and files.checkpoint.is_file()):
        return
    state = _read_state(files.checkpoint)
    if state.get("format_version") != FORMAT_VERSION or "fingerprint" not in state:
        raise ValueError(f"{files.checkpoint}: a checkpoint of another kit version; pass resume=False to start over "
                         "(it will be overwritten)")
    differs = mismatch(state["fingerprint"], fingerprint)
    if differs:
        raise ValueError(f"{files.checkpoint}: written for other inputs, so it cannot be resumed:\n  "
                         + "\n  ".join(differs) + "\npass resume=False to start over (the checkpoint is overwritten)")
    if state["step"] > trainer.settings.outer_steps:
        raise ValueError(f"{files.checkpoint}: already at outer step {state['step']} > outer_steps "
                         f"{trainer.settings.outer_steps}; pass resume=False to start over")
    trainer.restore(state)


def _encoder_patch(requested, profile: Profile, cohorts: dict[str, list[Pair]]) -> tuple[int, int, int] | None:
    """The encoder's input size: ``requested``, else the profile's ``encoder_patch_size``, else
    None (the pairs' own patch). Three positive ints; larger than the pairs' patch warns (the
    encoder would read an upsampled image: slower, nothing gained)."""
    size = requested if requested is not None else profile.encoder_patch_size
    if size is None:
        return None
    if len(tuple(size)) != 3:
        raise ValueError(f"encoder_patch_size must be 3 voxel counts (z, y, x), got {size!r}")
    size = tuple(require_int(v, "encoder_patch_size", 1) for v in size)
    shapes = _patch_shapes(cohorts)
    if any(a > b for shape in shapes for a, b in zip(size, shape)):
        warnings.warn(f"encoder_patch_size {size} is larger than the prepared patch {sorted(shapes)}: the encoder "
                      "reads an upsampled image (slower, no more information)", RuntimeWarning, stacklevel=4)
    return size


def _train(kind: str, cohorts, profile: "str | Profile", seed: int, device, files: TrainingFiles, progress: bool,
           stop_after: int | None, architecture: Architecture = Architecture(),
           start: "ReptileTemplate | str | Path | None" = None, heldout: HeldOut | None = None,
           distributed: bool | None = None, **changes) -> "ReptileTemplate | ReindirModel":
    prof = get_profile(profile)
    seed = require_int(seed, "seed", 0)
    if stop_after is not None:
        stop_after = require_int(stop_after, "stop_after", 0)
    if isinstance(start, (str, Path)):
        start = load(start)
    if start is not None and not isinstance(start, ReptileTemplate):
        raise ValueError(f"start must be a Reptile template (or its file), got {type(start).__name__}")
    settings = TrainSettings.for_profile(prof, **changes)
    cohorts = _as_cohorts(cohorts)
    comm = _comm(distributed, device)
    architecture = architecture._replace(
        width=architecture.width or prof.encoder_width,
        embedding_length=architecture.embedding_length or prof.embedding_length,
        patch_size=_encoder_patch(architecture.patch_size, prof, cohorts) if kind == "reindir" else None)
    trainer = _Trainer(kind, cohorts, settings, prof, seed, comm.device, architecture, start, comm)
    fingerprint = _fingerprint(kind, trainer, start)
    comm.verify_same(json.dumps(fingerprint, sort_keys=True) + _model_hash(trainer),
                     "the training inputs (data, settings, seed, initial model)")
    _resume(trainer, files, fingerprint)
    comm.verify_same(_model_hash(trainer), "the state to continue from (step and model; after resuming "
                     f"{files.checkpoint} where one exists)")
    tasks = len(trainer.tasks())
    if comm.is_main and comm.world > tasks:
        warnings.warn(f"{comm.world} ranks but {tasks} tasks per outer step: ranks {tasks}..{comm.world - 1} idle; "
                      f"tasks_per_set={-(-comm.world // len(trainer.cohorts))} would use them (a larger batch)",
                      RuntimeWarning, stacklevel=3)
    if comm.is_main:  # a folder that cannot be written fails now, not after the training
        for path, what in ((files.checkpoint, "the training checkpoint"), (files.log, "the training log")):
            if path is not None:
                ensure_writable(path.parent, f"{what} {path.name}")
    last = settings.outer_steps if stop_after is None else min(settings.outer_steps, stop_after)
    diverged = None
    bar = tqdm(total=settings.outer_steps, initial=trainer.step, desc=f"{kind} ({prof.name})",
               disable=not (progress and comm.is_main))
    while trainer.step < last:
        try:
            row = trainer.outer_step()
        except Diverged as err:
            diverged = str(err)
            if comm.is_main:
                warnings.warn(f"{kind} training stopped: {err}; the model is the last finite state (outer step "
                              f"{trainer.step}){'' if files.checkpoint is None else f', {files.checkpoint} keeps it'}",
                              RuntimeWarning, stacklevel=3)
            break
        if heldout is not None and (trainer.step % heldout.every == 0 or trainer.step == last):
            # rank 0 evaluates, every rank logs the same number (the log rows are in the checkpoint)
            row["heldout_tre_mm"] = comm.broadcast_float(_heldout_tre(trainer.model, heldout) if comm.is_main else None)
        bar.update(1)
        bar.set_postfix(loss=np.mean([v for k, v in row.items() if k.endswith("loss_adapted")]))
        if files.log and comm.is_main:
            _write_log(trainer.log_rows, files.log)
        if comm.is_main and files.checkpoint is not None and (
                trainer.step % files.checkpoint_every == 0 or trainer.step == last):
            save_atomic({**trainer.checkpoint_state(), "format_version": FORMAT_VERSION,
                         "fingerprint": fingerprint}, files.checkpoint)
    bar.close()
    comm.barrier()  # rank 0's last checkpoint is on disk before any rank goes on (and may read it)
    model = trainer.model
    info = {"profile": prof.name, "outer_steps": trainer.step, "seconds": trainer.elapsed, "seed": seed,
            "sets": sorted(trainer.cohorts), "settings": {k: str(v) for k, v in vars(settings).items()},
            "start": None if start is None else dict(start.info), "fingerprint": fingerprint,
            "diverged": diverged, "ranks": comm.world}
    model.info = info
    if isinstance(model, ReindirModel):
        model.template.info = info
        model.eval()
    return model


def _comm(distributed: bool | None, device) -> Comm:
    """This process's :class:`Comm`: distributed when ``distributed`` is True (joining the process
    group torchrun describes if none is initialised yet) or None with a process group already
    initialised; serial otherwise."""
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed:
        return Comm.serial(get_device(device))
    return setup(device)


def _model_hash(trainer: "_Trainer") -> str:
    """Hash of the trainer's model parameters and step (to check that ranks agree)."""
    model = trainer.model
    tensors = list(trainer.template.forward) + list(trainer.template.backward)
    if isinstance(model, ReindirModel):
        tensors += [p.detach() for p in model.parameters()]
    return f"{trainer.step}:{content_hash(tensors)}"


def _files(checkpoint, checkpoint_every, log_path, resume) -> TrainingFiles:
    return TrainingFiles(Path(checkpoint) if checkpoint else None, checkpoint_every,
                         Path(log_path) if log_path else None, bool(resume))


def _heldout(pairs: Sequence[Pair] | None, every: int) -> HeldOut | None:
    return None if not pairs else HeldOut(tuple(pairs), every)


def train_reptile(cohorts, profile: "str | Profile" = "demo", seed: int = 0, device=None,
                  checkpoint: str | Path | None = None, checkpoint_every: int = 25, log_path: str | Path | None = None,
                  resume: bool = True, progress: bool = True, stop_after: int | None = None,
                  heldout: Sequence[Pair] | None = None, heldout_every: int = 25, distributed: bool | None = None,
                  **settings) -> ReptileTemplate:
    """Reptile templates for both INRs. ``cohorts``: {set name: [prepared Pair, ...]} (or a list of
    pairs, grouped by ``dataset``); ``settings`` override :class:`TrainSettings` fields (and the
    objective's, e.g. ``similarity="lncc"``). ``checkpoint`` is written every
    ``checkpoint_every`` steps and at the end; with ``resume`` an existing checkpoint written for
    the same inputs is continued (other inputs: an error naming what differs; ``resume=False``
    starts over). ``heldout`` pairs: their zero-shot TRE is logged every ``heldout_every`` steps.
    ``stop_after`` ends early (to test resuming). A non-finite loss (on any rank) stops training with
    a warning; ``model.info["diverged"]`` says where.

    ``distributed``: spread the tasks of every outer step over the ranks of a torch.distributed
    process group (True: join the one ``torchrun`` describes; None: only if one is initialised).
    Every rank passes the same arguments and gets the same model; rank 0 alone writes the log and
    the checkpoint. The result equals the serial run's to float rounding (docs/distributed.md):
    the number of ranks changes the speed, not the effective batch (``tasks_per_set`` x sets)."""
    return _train("reptile", cohorts, profile, seed, device, _files(checkpoint, checkpoint_every, log_path, resume),
                  progress, stop_after, heldout=_heldout(heldout, heldout_every), distributed=distributed,
                  **settings)


def train_reindir(cohorts, profile: "str | Profile" = "demo", seed: int = 0, device=None,
                  checkpoint: str | Path | None = None, checkpoint_every: int = 25, log_path: str | Path | None = None,
                  resume: bool = True, progress: bool = True, width: int | None = None,
                  embedding_length: int | None = None, stop_after: int | None = None,
                  start: "ReptileTemplate | str | Path | None" = None, heldout: Sequence[Pair] | None = None,
                  heldout_every: int = 25, distributed: bool | None = None, encoder_input: str = "pair",
                  encoder_patch_size: tuple[int, int, int] | None = None, output_shift: bool = False,
                  **settings) -> ReindirModel:
    """REINDIR (encoder + infusion heads + templates), Algorithm 1 with the Reptile sign fixed.
    Arguments as :func:`train_reptile`, plus the encoder's ``width``, ``embedding_length`` and
    ``encoder_input`` (what it reads, :data:`reindir_nb.meta.encoder.ENCODER_INPUTS`) and
    ``encoder_patch_size`` (the size its input is resampled to; default: the profile's
    ``encoder_patch_size``, else the prepared patch) and ``output_shift`` (the heads also
    translate each INR's output, :mod:`reindir_nb.meta.infusion`; off in every profile).

    Encoder only: ``inner_steps=0`` with ``start=`` a trained template keeps the templates fixed
    and spends every step on zero-shot encoder updates (``encoder_steps`` per task; no inner loop).

    ``start``: a trained Reptile template (or its file) to start the templates from instead of a
    fresh initialisation (a CPU shortcut: the paper trains everything from scratch; with a small
    ``eps`` the encoder then learns against a nearly stationary template).

    Distributed runs need ``encoder_update="averaged"`` (one encoder step per outer step on the
    gradient averaged over its tasks; the default "sequential" steps after every task in turn)."""
    return _train("reindir", cohorts, profile, seed, device, _files(checkpoint, checkpoint_every, log_path, resume),
                  progress, stop_after,
                  Architecture(width, embedding_length, encoder_input, encoder_patch_size, bool(output_shift)),
                  start=start, heldout=_heldout(heldout, heldout_every), distributed=distributed, **settings)


def train_folds(pairs: Sequence[Pair], folder: str | Path, kind: str = "reindir", k: int = 5, seed: int = 0,
                profile: "str | Profile" = "demo", progress: bool = True, warm_start: bool = False,
                only: Sequence[int] | None = None, **kwargs) -> dict[int, Path]:
    """k-fold cross-validation: one model per fold trained on the other folds' pairs (stratified per
    set, :func:`reindir_nb.datasets.kfold_splits`), saved as ``folder/{kind}_fold{i}.pt``; also
    writes ``folder/folds.csv`` (pair name -> fold that holds it out). ``warm_start`` (REINDIR):
    start fold i from ``folder/reptile_fold{i}.pt`` (train the Reptile folds first).

    Distributed (``distributed=True``, or under an initialised process group): every fold is one
    distributed run of all ranks, one fold after the other; rank 0 writes the files (``folder``
    must be the same shared folder on every rank).

    ``only``: train just these fold indices (e.g. one fold per cluster job); ``folds.csv`` still
    lists every fold (the split depends only on the pairs, ``k`` and ``seed``)."""
    from ..data.datasets import kfold_splits

    if kind not in ("reindir", "reptile"):
        raise ValueError(f"kind must be 'reptile' or 'reindir', got {kind!r}")
    comm = _comm(kwargs.get("distributed"), kwargs.get("device"))
    folder = Path(folder)
    if comm.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    train = train_reindir if kind == "reindir" else train_reptile
    paths = {}
    rows = []
    splits = kfold_splits(pairs, k, seed)
    wanted = set(range(k)) if only is None else {int(i) for i in only}
    if not wanted <= set(range(k)):
        raise ValueError(f"only: fold indices {sorted(wanted - set(range(k)))} not in 0..{k - 1}")
    for i, (train_idx, test_idx) in enumerate(splits):
        rows += [{"pair": pairs[j].name, "dataset": pairs[j].dataset, "fold": i} for j in test_idx]
        if i not in wanted:
            continue
        if kind == "reindir" and warm_start:
            kwargs["start"] = folder / f"reptile_fold{i}.pt"
        model = train([pairs[j] for j in train_idx], profile=profile, seed=seed + i, progress=progress,
                      checkpoint=folder / f"{kind}_fold{i}.ckpt", **kwargs)
        paths[i] = folder / f"{kind}_fold{i}.pt"
        if comm.is_main:
            model.save(paths[i])
    if comm.is_main:
        _write_log(rows, folder / "folds.csv")
    comm.barrier()  # the fold files exist before any rank returns (and may read them)
    return paths
