"""The state and steps of one meta-training run (paper Algorithm 1, Reptile sign fixed).

Per outer step, ``tasks_per_set`` tasks (image pairs) are drawn from every training set. For each
task the INRs are reset to the templates, the (frozen) encoder embeds the pair, ``inner_steps`` SGD
steps adapt the template copies under the full ccIDIR loss (REINDIR: on the infused weights), then
the encoder and infusion heads take a first-order Adam step: on the loss at the adapted weights
with the embedding re-attached (``encoder_loss_at="adapted"``, Algorithm 1) or on the zero-shot
loss of the infused templates (``"template"``, what iteration 0 at test time measures). The
templates move TOWARD the adapted weights (:func:`reptile_update`)::

    phi0 <- phi0 + eps * mean_over_tasks(phi_adapted - phi0)

(Algorithm 1 as printed subtracts; that moves away from the adapted weights, a sign slip.)

Every task draws its pair, scale factor and sample points from generators seeded by (seed, outer
step, task index) alone, so the tasks of one outer step can run on any rank: under ``torchrun``
rank r runs tasks r, r+K, ...; the Reptile deltas (and, with ``encoder_update="averaged"``, the
encoder/head gradients) are all-reduced and averaged in task order, so a K-rank run equals the
serial run (docs/distributed.md).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.device import make_generator
from ..core.pair import Pair
from ..inr.network import Params, clone_params, init_siren
from ..inr.objective import Problem
from .distributed import Comm
from .models import ReindirModel, ReptileTemplate, model_from_state
from .recipes import Recipe

__all__ = ["reptile_update", "reptile_step", "Trainer", "Diverged", "as_cohorts", "patch_shapes", "cosine_with_restarts"]


def reptile_step(template: Params, mean_delta: Sequence[Tensor], eps: float) -> Params:
    """``phi0 + eps * mean_delta``: the Reptile move of every template tensor, given the mean over
    tasks of ``adapted - phi0``."""
    return [(p0 + eps * d).detach() for p0, d in zip(template, mean_delta)]


def reptile_update(template: Params, adapted: Sequence[Params], eps: float) -> Params:
    """``phi0 + eps * mean_k(adapted_k - phi0)``: moves TOWARD the adapted weights."""
    return reptile_step(template, [torch.stack([a[i] - p0 for a in adapted]).mean(0)
                                   for i, p0 in enumerate(template)], eps)


def cosine_with_restarts(total: int, warmup: int, cycles: int):
    """lr factor per step: linear warm-up, then ``cycles`` cosine cycles (warm restarts)."""
    length = max(1, math.ceil(max(1, total - warmup) / max(1, cycles)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = ((step - warmup) % length) / length
        return 0.5 * (1 + math.cos(math.pi * t))

    return factor


def as_cohorts(cohorts) -> dict[str, list[Pair]]:
    """``{set name: [pairs]}`` from such a dict or a list of pairs (grouped by ``dataset``)."""
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


def patch_shapes(cohorts: dict[str, list[Pair]]) -> set[tuple[int, int, int]]:
    """The prepared patch sizes (z, y, x) of every training pair."""
    return {tuple(p.fixed.grid.shape) for ps in cohorts.values() for p in ps}


class Trainer:
    """State of one meta-training run (templates, encoder, optimiser, generators, log)."""

    def __init__(self, recipe: Recipe, cohorts: dict[str, list[Pair]], seed: int, device: torch.device,
                 start: ReptileTemplate | None = None, comm: Comm | None = None):
        self.recipe, self.kind, self.settings = recipe, recipe.kind, recipe.settings
        self.cohorts, self.device, self.seed, self.step = cohorts, device, seed, 0
        self.comm = comm or Comm.serial(device)
        kind, settings = self.kind, self.settings
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
            shapes = patch_shapes(cohorts)
            if len(shapes) != 1:
                raise ValueError(f"REINDIR needs prepared pairs of one patch size, got {sorted(shapes)}")
            a = recipe.architecture
            self.model = ReindirModel(template, a.patch_size or shapes.pop(), a.width, a.embedding_length,
                                      encoder_input=a.encoder_input).to(device)
            learned = list(self.model.encoder.parameters()) + list(self.model.heads.parameters())
            self.optimiser = torch.optim.Adam(learned, lr=settings.encoder_lr)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimiser, cosine_with_restarts(settings.outer_steps, settings.warmup_steps, settings.cycles))
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
        total = self._loss(*self.model.infused(self.model.embed(problem), *templates), problem)["total"]
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
        deltas, offset = [], 0
        for p0 in base:
            deltas.append(mean[offset:offset + p0.numel()].view_as(p0))
            offset += p0.numel()
        new = reptile_step(base, deltas, s.eps)
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
        row["eps"] = s.eps
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
        model = model_from_state(state["model"])
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
