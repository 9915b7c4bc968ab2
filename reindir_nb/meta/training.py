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

Checkpoints hold everything needed to continue with identical numbers (templates, encoder,
optimiser and scheduler states, random generator states, the step). ``model.save(path)`` and
:func:`load` write/read models; training logs are CSV files appended every outer step.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..core.files import atomic_path
from ..core.device import get_device, make_generator
from .encoder import Encoder
from .infusion import InfusionHeads
from ..inr.network import Params, SirenConfig, clone_params, init_siren
from ..inr.objective import LossWeights, Problem, ccidir_terms
from ..core.pair import Pair
from ..core.profiles import Profile, get_profile

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
        return {"kind": "reptile", "forward": [p.detach().cpu() for p in self.forward],
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
                 embedding_length: int = 1025, info: dict | None = None):
        super().__init__()
        self.template = template
        self.siren_config = template.siren_config
        self.encoder = Encoder(patch_size, width, embedding_length)
        self.heads = InfusionHeads(embedding_length, template.siren_config.hidden)
        self.info = dict(info or {})
        self.encoder_seconds = 0.0

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def patches(self, problem: Problem) -> Tensor:
        """``(1, 2, D, H, W)``: fixed and moving intensities on the encoder's patch size."""
        fixed, moving = problem.fixed, problem.moving
        size = self.encoder.patch_size
        if tuple(fixed.shape[2:]) != size:
            fixed = nn.functional.interpolate(fixed, size=size, mode="trilinear", align_corners=True)
        if tuple(moving.shape[2:]) != size:
            moving = nn.functional.interpolate(moving, size=size, mode="trilinear", align_corners=True)
        return torch.cat([fixed, moving], dim=1).to(self.device)

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
        return {"kind": "reindir", "template": self.template.state(), "patch_size": list(self.encoder.patch_size),
                "width": self.encoder.features[0][0].out_channels, "embedding_length": self.encoder.embedding_length,
                "encoder": {k: v.cpu() for k, v in self.encoder.state_dict().items()},
                "heads": {k: v.cpu() for k, v in self.heads.state_dict().items()}, "info": self.info}

    def save(self, path: str | Path) -> Path:
        return save_atomic(self.state(), path)


def _template_from_state(state: dict) -> ReptileTemplate:
    return ReptileTemplate(state["forward"], state["backward"], SirenConfig(**state["siren_config"]), state.get("info", {}))


def _model_from_state(state: dict) -> "ReptileTemplate | ReindirModel":
    if state["kind"] == "reptile":
        return _template_from_state(state)
    model = ReindirModel(_template_from_state(state["template"]), tuple(state["patch_size"]), state["width"],
                         state["embedding_length"], state.get("info"))
    model.encoder.load_state_dict(state["encoder"])
    model.heads.load_state_dict(state["heads"])
    return model


def load(path: str | Path) -> "ReptileTemplate | ReindirModel":
    """Read a model written by ``.save`` (or the model inside a training checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "model" in state and "step" in state:  # a training checkpoint
        state = state["model"]
    if state.get("kind") not in ("reptile", "reindir"):
        raise ValueError(f"{path}: not a reindir_nb model (kind {state.get('kind')!r})")
    return _model_from_state(state)


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
    regulariser: str = "jacobian"
    weights: LossWeights = LossWeights()
    omega: float = 30.0
    # Which loss trains the encoder (REINDIR). "adapted": the loss of the adapted INRs with the
    # embedding re-attached (Algorithm 1, first order). "template": the zero-shot loss of the
    # infused templates, taken from the first inner step's backward (no extra INR evaluation).
    # Measured at demo (frozen Reptile template, 6 held-out phantoms): 100-300 encoder steps on
    # the zero-shot loss cut the zero-shot TRE from 4.04 to 3.56-3.65 mm; on the adapted loss the
    # encoder learns nothing (README, benchmarks/results/meta_demo).
    encoder_loss_at: str = "adapted"

    def __post_init__(self) -> None:
        if self.encoder_loss_at not in ("adapted", "template"):
            raise ValueError(f"encoder_loss_at must be 'adapted' or 'template', got {self.encoder_loss_at!r}")

    @classmethod
    def for_profile(cls, profile: "str | Profile", **changes) -> "TrainSettings":
        """Paper values for ``paper``; CPU-sized steps for ``demo``/``smoke`` (see README)."""
        prof = get_profile(profile)
        base = dict(outer_steps=prof.outer_steps, inner_steps=prof.inner_steps, inner_points=prof.inner_points)
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


class _Trainer:
    """State of one meta-training run (templates, encoder, optimiser, generators, log)."""

    def __init__(self, kind: str, cohorts: dict[str, list[Pair]], settings: TrainSettings, profile: Profile,
                 seed: int, device: torch.device, width: int, embedding_length: int,
                 start: ReptileTemplate | None = None):
        self.kind, self.cohorts, self.settings, self.profile = kind, cohorts, settings, profile
        self.device, self.seed, self.step = device, seed, 0
        config = SirenConfig(omega=settings.omega)
        gen = make_generator(seed)
        template = ReptileTemplate(init_siren(config, gen), init_siren(config, gen), config)
        if start is not None:  # warm start: a copy of a trained template
            if start.siren_config.omega != settings.omega:
                raise ValueError(f"start template has omega {start.siren_config.omega}, settings {settings.omega}")
            template = ReptileTemplate([p.detach().clone() for p in start.forward],
                                       [p.detach().clone() for p in start.backward], start.siren_config)
        self.model: ReptileTemplate | ReindirModel = template
        self.optimiser = self.scheduler = None
        if kind == "reindir":
            torch.manual_seed(seed)  # encoder init
            shapes = {tuple(p.fixed.grid.shape) for ps in cohorts.values() for p in ps}
            if len(shapes) != 1:
                raise ValueError(f"REINDIR needs prepared pairs of one patch size, got {sorted(shapes)}")
            self.model = ReindirModel(template, shapes.pop(), width, embedding_length).to(device)
            params = list(self.model.encoder.parameters()) + list(self.model.heads.parameters())
            self.optimiser = torch.optim.Adam(params, lr=settings.encoder_lr)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimiser, _cosine_with_restarts(settings.outer_steps, settings.warmup_steps, settings.cycles))
        self.rng = np.random.default_rng(seed)
        self.points = make_generator(seed + 1)
        self.log_rows: list[dict] = []
        self.elapsed = 0.0

    @property
    def template(self) -> ReptileTemplate:
        return self.model if isinstance(self.model, ReptileTemplate) else self.model.template

    # ------------------------------------------------------------ one task
    def _problem(self, pair: Pair) -> Problem:
        """The task's tensors, scale-augmented (one factor per task drawn from ``scale_range``)."""
        from ..data.preprocess import scale_augment

        s = self.settings
        if s.scale_augment:
            pair = scale_augment(pair, float(self.rng.uniform(*s.scale_range)))
        return Problem.from_pair(pair, device=self.device)

    def _loss(self, forward: Params, backward: Params, problem: Problem) -> dict[str, Tensor]:
        s = self.settings
        xf = problem.sample_points(s.inner_points, self.points, "fixed")
        xb = problem.sample_points(s.inner_points, self.points, "moving")
        return ccidir_terms(forward, backward, problem, xf, xb, s.regulariser, s.weights, s.omega)

    def adapt(self, problem: Problem, encoder_grad: bool = False) -> tuple[Params, Params, float, dict | None]:
        """Inner loop: ``inner_steps`` SGD steps from the templates (REINDIR: on the infused weights,
        the modulations from the frozen encoder). Returns the adapted (pre-infusion) template copies,
        detached, the loss of the first step and the (detached) modulations used (None for Reptile).

        ``encoder_grad`` (REINDIR): the first step's loss, the zero-shot loss of the infused
        templates, also back-propagates into the encoder and heads (accumulated in their ``.grad``)."""
        s = self.settings
        fwd = clone_params([p.to(self.device) for p in self.template.forward], requires_grad=True)
        bwd = clone_params([p.to(self.device) for p in self.template.backward], requires_grad=True)
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
            if i == 0:
                first = float(total.detach())
            sgd.zero_grad(set_to_none=True)
            total.backward()
            sgd.step()
        return [p.detach() for p in fwd], [p.detach() for p in bwd], first, frozen

    def encoder_step(self, problem: Problem, forward: Params, backward: Params) -> float:
        """First-order encoder update: the loss at the adapted weights ``forward``/``backward`` (held
        fixed) infused with the embedding re-attached; one Adam step on encoder + heads only."""
        adapted = [p.detach() for p in forward], [p.detach() for p in backward]
        total = self._loss(*self.model.infused(self.model.embed(problem), *adapted), problem)["total"]
        self.optimiser.zero_grad(set_to_none=True)
        total.backward()
        self.optimiser.step()
        return float(total.detach())

    def _task(self, pair: Pair) -> tuple[Params, Params, dict[str, float]]:
        problem = self._problem(pair)
        reindir = isinstance(self.model, ReindirModel)
        at_template = reindir and self.settings.encoder_loss_at == "template"
        if at_template:
            self.optimiser.zero_grad(set_to_none=True)
        fwd, bwd, first, mods = self.adapt(problem, encoder_grad=at_template)
        if reindir and not at_template:
            adapted_loss = self.encoder_step(problem, fwd, bwd)
        else:
            if at_template:
                self.optimiser.step()  # the gradient of the first inner step's (zero-shot) loss
            used = (fwd, bwd) if mods is None else self.model.heads.modulated(mods, fwd, bwd)
            with torch.set_grad_enabled(self.settings.regulariser == "bending"):  # for the log
                adapted_loss = float(self._loss(*used, problem)["total"].detach())
        return fwd, bwd, {"loss_first": first, "loss_adapted": adapted_loss}

    def outer_step(self) -> dict:
        t0 = time.perf_counter()
        adapted_f, adapted_b, row = [], [], {"step": self.step}
        for name in sorted(self.cohorts):
            pairs = self.cohorts[name]
            pair = pairs[int(self.rng.integers(len(pairs)))]
            fwd, bwd, stats = self._task(pair)
            adapted_f.append(fwd)
            adapted_b.append(bwd)
            row.update({f"{name}/{k}": v for k, v in stats.items()})
        s = self.settings
        eps = s.eps * (1 - self.step / s.outer_steps) if s.anneal_eps else s.eps
        tmpl = self.template
        dev_f = [p.to(self.device) for p in tmpl.forward]
        dev_b = [p.to(self.device) for p in tmpl.backward]
        tmpl.forward = [p.detach() for p in reptile_update(dev_f, adapted_f, eps)]
        tmpl.backward = [p.detach() for p in reptile_update(dev_b, adapted_b, eps)]
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
    def checkpoint_state(self) -> dict:
        return {
            "step": self.step, "kind": self.kind, "model": self.model.state(), "elapsed": self.elapsed,
            "optimiser": None if self.optimiser is None else self.optimiser.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": self.rng.bit_generator.state, "points": self.points.get_state(), "log": self.log_rows,
            "torch_rng": torch.get_rng_state(),
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
        self.rng.bit_generator.state = state["rng"]
        self.points.set_state(state["points"])
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


def _train(kind: str, cohorts, profile, seed: int, device, checkpoint: str | Path | None, checkpoint_every: int,
           log_path: str | Path | None, resume: bool, progress: bool, width: int | None,
           embedding_length: int | None, stop_after: int | None, start=None, **changes):
    prof = get_profile(profile)
    if isinstance(start, (str, Path)):
        start = load(start)
    if start is not None and not isinstance(start, ReptileTemplate):
        raise ValueError(f"start must be a Reptile template (or its file), got {type(start).__name__}")
    settings = TrainSettings.for_profile(prof, **changes)
    trainer = _Trainer(kind, _as_cohorts(cohorts), settings, prof, seed, get_device(device),
                       width or prof.encoder_width, embedding_length or prof.embedding_length, start)
    checkpoint = Path(checkpoint) if checkpoint else None
    if resume and checkpoint is not None and checkpoint.is_file():
        trainer.restore(torch.load(checkpoint, map_location="cpu", weights_only=False))
    log_path = Path(log_path) if log_path else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    last = settings.outer_steps if stop_after is None else min(settings.outer_steps, stop_after)
    bar = tqdm(total=settings.outer_steps, initial=trainer.step, desc=f"{kind} ({prof.name})", disable=not progress)
    while trainer.step < last:
        row = trainer.outer_step()
        bar.update(1)
        bar.set_postfix(loss=np.mean([v for k, v in row.items() if k.endswith("loss_adapted")]))
        if log_path:
            _write_log(trainer.log_rows, log_path)
        if checkpoint is not None and (trainer.step % checkpoint_every == 0 or trainer.step == last):
            save_atomic(trainer.checkpoint_state(), checkpoint)
    bar.close()
    model = trainer.model
    info = {"profile": prof.name, "outer_steps": trainer.step, "seconds": trainer.elapsed, "seed": seed,
            "sets": sorted(trainer.cohorts), "settings": {k: str(v) for k, v in vars(settings).items()},
            "start": None if start is None else dict(start.info)}
    if isinstance(model, ReptileTemplate):
        model.info = info
    else:
        model.info = info
        model.template.info = info
        model.eval()
    return model


def train_reptile(cohorts, profile: "str | Profile" = "demo", seed: int = 0, device=None,
                  checkpoint: str | Path | None = None, checkpoint_every: int = 25, log_path: str | Path | None = None,
                  resume: bool = True, progress: bool = True, stop_after: int | None = None, **settings) -> ReptileTemplate:
    """Reptile templates for both INRs. ``cohorts``: {set name: [prepared Pair, ...]} (or a list of
    pairs, grouped by ``dataset``); ``settings`` override :class:`TrainSettings` fields.
    ``checkpoint`` is written every ``checkpoint_every`` steps and at the end; with ``resume`` an
    existing checkpoint is continued. ``stop_after`` ends early (to test resuming)."""
    return _train("reptile", cohorts, profile, seed, device, checkpoint, checkpoint_every, log_path, resume,
                  progress, None, None, stop_after, **settings)


def train_reindir(cohorts, profile: "str | Profile" = "demo", seed: int = 0, device=None,
                  checkpoint: str | Path | None = None, checkpoint_every: int = 25, log_path: str | Path | None = None,
                  resume: bool = True, progress: bool = True, width: int | None = None,
                  embedding_length: int | None = None, stop_after: int | None = None,
                  start: "ReptileTemplate | str | Path | None" = None, **settings) -> ReindirModel:
    """REINDIR (encoder + infusion heads + templates), Algorithm 1 with the Reptile sign fixed.

    ``start``: a trained Reptile template (or its file) to start the templates from instead of a
    fresh initialisation (a CPU shortcut: the paper trains everything from scratch; with a small
    ``eps`` the encoder then learns against a nearly stationary template)."""
    return _train("reindir", cohorts, profile, seed, device, checkpoint, checkpoint_every, log_path, resume,
                  progress, width, embedding_length, stop_after, start=start, **settings)


def train_folds(pairs: Sequence[Pair], folder: str | Path, kind: str = "reindir", k: int = 5, seed: int = 0,
                profile: "str | Profile" = "demo", progress: bool = True, warm_start: bool = False,
                **kwargs) -> dict[int, Path]:
    """k-fold cross-validation: one model per fold trained on the other folds' pairs (stratified per
    set, :func:`reindir_nb.datasets.kfold_splits`), saved as ``folder/{kind}_fold{i}.pt``; also
    writes ``folder/folds.csv`` (pair name -> fold that holds it out). ``warm_start`` (REINDIR):
    start fold i from ``folder/reptile_fold{i}.pt`` (train the Reptile folds first)."""
    from ..data.datasets import kfold_splits

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train = train_reindir if kind == "reindir" else train_reptile
    paths = {}
    rows = []
    for i, (train_idx, test_idx) in enumerate(kfold_splits(pairs, k, seed)):
        if kind == "reindir" and warm_start:
            kwargs["start"] = folder / f"reptile_fold{i}.pt"
        model = train([pairs[j] for j in train_idx], profile=profile, seed=seed + i, progress=progress,
                      checkpoint=folder / f"{kind}_fold{i}.ckpt", **kwargs)
        paths[i] = model.save(folder / f"{kind}_fold{i}.pt")
        rows += [{"pair": pairs[j].name, "dataset": pairs[j].dataset, "fold": i} for j in test_idx]
    _write_log(rows, folder / "folds.csv")
    return paths
