"""Meta-training runs: ``rn.meta.train_reptile``, ``rn.meta.train_reindir``, ``rn.meta.train_folds``.

A run trains one :class:`~reindir_nb.meta.recipes.Recipe` (default: the profile's, from
:func:`~reindir_nb.meta.recipes.recipe`) on ``{set name: [prepared pairs]}``. What it writes is
a :class:`TrainingFiles` (a resumable checkpoint, a CSV log); what it shows while it runs is a
:class:`Monitor` (progress bar, held-out zero-shot TRE, an ``on_step`` callback for live plots).
Checkpoints hold everything needed to continue with identical numbers (templates, encoder,
optimiser and scheduler states, the step) and the run's fingerprint (recipe, data, seed, start):
a checkpoint written for other inputs is never resumed.

The names of the pieces it is built from are re-exported here: the models
(:mod:`~reindir_nb.meta.models`), the recipes (:mod:`~reindir_nb.meta.recipes`) and the
trainer (:mod:`~reindir_nb.meta.trainer`).
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.checks import require_int
from ..core.device import get_device
from ..core.files import atomic_path, ensure_writable
from ..core.fingerprint import content_hash, data_identity, mismatch
from ..core.pair import Pair
from ..core.profiles import Profile
from ..inr.registration import register
from .distributed import Comm, setup
from .models import FORMAT_VERSION, ReindirModel, ReptileTemplate, load, read_state, save_atomic
from .recipes import Architecture, Recipe, TrainSettings, recipe as make_recipe, profile_recipes
from .trainer import Diverged, Trainer, as_cohorts, patch_shapes, reptile_step, reptile_update

__all__ = [
    "ReptileTemplate", "ReindirModel", "TrainSettings", "Architecture", "Recipe", "profile_recipes",
    "train_reptile", "train_reindir", "train_folds", "reptile_update", "reptile_step", "load", "save_atomic",
    "TrainingFiles", "Monitor", "Diverged", "FORMAT_VERSION",
]


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
        for name in ("checkpoint", "log"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))


@dataclass(frozen=True)
class Monitor:
    """What a run shows while it runs: a progress bar; every ``heldout_every`` outer steps the mean
    zero-shot TRE (mm, iteration 0 of ``register``) of ``heldout`` pairs never trained on, logged
    as ``heldout_tre_mm`` (the curve that shows whether the start is learning); ``on_step(row)``
    after every outer step with its log row (a dict; return False to stop there, the checkpoint
    written); ``stop_after``: stop after that many outer steps (to test resuming)."""

    progress: bool = True
    heldout: tuple[Pair, ...] = ()
    heldout_every: int = 25
    on_step: Callable[[dict], Any] | None = None
    stop_after: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "heldout", tuple(self.heldout or ()))
        require_int(self.heldout_every, "heldout_every", 1)
        if self.stop_after is not None:
            require_int(self.stop_after, "stop_after", 0)
        if not all(p.has_landmarks for p in self.heldout):
            raise ValueError("held-out pairs must have landmarks (their zero-shot TRE is what is logged)")


# the older keyword arguments of train_reptile / train_reindir, and where they now live
_FILES_KEYS = {"checkpoint": "checkpoint", "checkpoint_every": "checkpoint_every", "log_path": "log", "resume": "resume"}
_MONITOR_KEYS = {"progress", "heldout", "heldout_every", "on_step", "stop_after"}


def _resolve(kind: str, recipe: "str | Profile | Recipe", files: TrainingFiles | None, monitor: Monitor | None,
             options: dict[str, Any]) -> tuple[Recipe, TrainingFiles, Monitor]:
    """The run's recipe, files and monitor from the typed arguments and the keyword short forms
    (``profile=``, ``checkpoint=`` ..., ``progress=`` ..., recipe changes such as ``outer_steps=``)."""
    options = dict(options)
    if "profile" in options:
        recipe = options.pop("profile")
    file_args = {_FILES_KEYS[k]: options.pop(k) for k in list(options) if k in _FILES_KEYS}
    monitor_args = {k: options.pop(k) for k in list(options) if k in _MONITOR_KEYS}
    if file_args:
        if files is not None:
            raise TypeError(f"give files= or {sorted(file_args)}, not both")
        files = TrainingFiles(**file_args)
    if monitor_args:
        if monitor is not None:
            raise TypeError(f"give monitor= or {sorted(monitor_args)}, not both")
        monitor = Monitor(**{k: v for k, v in monitor_args.items() if v is not None or k == "on_step"})
    if isinstance(recipe, Recipe):
        if recipe.kind != kind:
            raise ValueError(f"a {recipe.kind} recipe given to train_{kind}")
        if "warm_start" in options:
            raise TypeError("warm_start chooses a profile's recipe: pass the profile name, or build the "
                            "recipe with rn.meta.recipe(kind, profile, warm_start=...)")
        recipe = recipe.with_(**options)
    else:
        recipe = make_recipe(kind, recipe, **options)
    return recipe, files or TrainingFiles(), monitor or Monitor()


def _write_log(rows: list[dict], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _fingerprint(trainer: Trainer, start: ReptileTemplate | None) -> dict[str, str]:
    """Everything that determines a training result: the recipe (with the encoder patch the data
    gave it), the seed, the data's names and contents, the warm start."""
    out = dict(trainer.recipe.fingerprint())
    if isinstance(trainer.model, ReindirModel):  # the patch size actually used
        out["architecture.patch_size"] = repr(tuple(trainer.model.encoder.patch_size))
    out.pop("settings.outer_steps")  # a longer run of the same inputs continues a shorter one
    out.update(seed=str(trainer.seed), data=data_identity(p for ps in trainer.cohorts.values() for p in ps),
               sets=",".join(f"{k}:{len(v)}" for k, v in sorted(trainer.cohorts.items())),
               start="none" if start is None else content_hash(list(start.forward) + list(start.backward)))
    return out


def _heldout_tre(model, pairs: Sequence[Pair]) -> float:
    """Mean zero-shot TRE (mm) of ``model`` over ``pairs`` (no test-time step)."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    tres = [float(register(p, init=model, iterations=0, progress=False, prealign="none", safe_start=False)
                  .history["tre_mean_mm"].iloc[0]) for p in pairs]
    if was_training:
        model.train()
    return float(np.mean(tres))


def _resume(trainer: Trainer, files: TrainingFiles, fingerprint: dict[str, str]) -> None:
    """Continue from ``files.checkpoint`` when it was written for the same fingerprint."""
    if not (files.resume and files.checkpoint is not None and files.checkpoint.is_file()):
        return
    state = read_state(files.checkpoint)
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


def _check_encoder_patch(recipe: Recipe, cohorts: dict[str, list[Pair]]) -> None:
    """Warn when the encoder's input patch is larger than the prepared pairs' (an upsampled image)."""
    size = recipe.architecture.patch_size if recipe.architecture is not None else None
    shapes = patch_shapes(cohorts)
    if size is not None and any(a > b for shape in shapes for a, b in zip(size, shape)):
        warnings.warn(f"encoder_patch_size {size} is larger than the prepared patch {sorted(shapes)}: the encoder "
                      "reads an upsampled image (slower, no more information)", RuntimeWarning, stacklevel=4)


def _start_template(recipe: Recipe, start) -> ReptileTemplate | None:
    if isinstance(start, (str, Path)):
        start = load(start)
    if start is not None and not isinstance(start, ReptileTemplate):
        raise ValueError(f"start must be a Reptile template (or its file), got {type(start).__name__}")
    if start is None and recipe.warm_start:
        raise ValueError(f"the {recipe.profile} REINDIR recipe starts from a trained Reptile template: pass start= "
                         "(a template from train_reptile, or its file), or warm_start=False to train the "
                         "templates too (the paper's way)")
    return start


def _comm(distributed: bool | None, device) -> Comm:
    """This process's :class:`Comm`: distributed when ``distributed`` is True (joining the process
    group torchrun describes if none is initialised yet) or None with a process group already
    initialised; serial otherwise."""
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed:
        return Comm.serial(get_device(device))
    return setup(device)


def _model_hash(trainer: Trainer) -> str:
    """Hash of the trainer's model parameters and step (to check that ranks agree)."""
    tensors = list(trainer.template.forward) + list(trainer.template.backward)
    if isinstance(trainer.model, ReindirModel):
        tensors += [p.detach() for p in trainer.model.parameters()]
    return f"{trainer.step}:{content_hash(tensors)}"


def _train(recipe: Recipe, cohorts, seed: int, start, files: TrainingFiles, monitor: Monitor, device,
           distributed: bool | None) -> "ReptileTemplate | ReindirModel":
    seed = require_int(seed, "seed", 0)
    start = _start_template(recipe, start)
    cohorts = as_cohorts(cohorts)
    _check_encoder_patch(recipe, cohorts)
    comm = _comm(distributed, device)
    trainer = Trainer(recipe, cohorts, seed, comm.device, start, comm)
    fingerprint = _fingerprint(trainer, start)
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
    outer = trainer.settings.outer_steps
    last = outer if monitor.stop_after is None else min(outer, monitor.stop_after)
    diverged = None
    bar = tqdm(total=outer, initial=trainer.step, desc=f"{recipe.kind} ({recipe.profile})",
               disable=not (monitor.progress and comm.is_main))
    while trainer.step < last:
        try:
            row = trainer.outer_step()
        except Diverged as err:
            diverged = str(err)
            if comm.is_main:
                warnings.warn(f"{recipe.kind} training stopped: {err}; the model is the last finite state (outer step "
                              f"{trainer.step}){'' if files.checkpoint is None else f', {files.checkpoint} keeps it'}",
                              RuntimeWarning, stacklevel=3)
            break
        if monitor.heldout and (trainer.step % monitor.heldout_every == 0 or trainer.step == last):
            # rank 0 evaluates, every rank logs the same number (the log rows are in the checkpoint)
            row["heldout_tre_mm"] = comm.broadcast_float(
                _heldout_tre(trainer.model, monitor.heldout) if comm.is_main else None)
        bar.update(1)
        bar.set_postfix(loss=np.mean([v for k, v in row.items() if k.endswith("loss_adapted")]))
        stop = monitor.on_step is not None and monitor.on_step(dict(row)) is False
        if files.log and comm.is_main:
            _write_log(trainer.log_rows, files.log)
        if comm.is_main and files.checkpoint is not None and (
                trainer.step % files.checkpoint_every == 0 or trainer.step == last or stop):
            save_atomic({**trainer.checkpoint_state(), "format_version": FORMAT_VERSION,
                         "fingerprint": fingerprint}, files.checkpoint)
        if stop:
            break
    bar.close()
    comm.barrier()  # rank 0's last checkpoint is on disk before any rank goes on (and may read it)
    model = trainer.model
    info = {"profile": recipe.profile, "outer_steps": trainer.step, "seconds": trainer.elapsed, "seed": seed,
            "sets": sorted(trainer.cohorts), "settings": {k: str(v) for k, v in vars(recipe.settings).items()},
            "recipe": recipe.fingerprint(), "start": None if start is None else dict(start.info),
            "fingerprint": fingerprint, "diverged": diverged, "ranks": comm.world}
    model.info = info
    if isinstance(model, ReindirModel):
        model.template.info = info
        model.eval()
    return model


def train_reptile(cohorts, recipe: "str | Profile | Recipe" = "demo", seed: int = 0,
                  start: "ReptileTemplate | str | Path | None" = None, files: TrainingFiles | None = None,
                  monitor: Monitor | None = None, device=None, distributed: bool | None = None,
                  **options: Any) -> ReptileTemplate:
    """Reptile templates for both INRs. ``cohorts``: {set name: [prepared Pair, ...]} (or a list of
    pairs, grouped by ``dataset``). ``recipe``: a profile name (its recipe,
    :func:`~reindir_nb.meta.recipes.recipe`) or a :class:`Recipe`; ``options`` change it
    (``outer_steps=``, ``similarity=`` ...) or are the short forms of ``files`` (``checkpoint=``,
    ``checkpoint_every=``, ``log_path=``, ``resume=``) and ``monitor`` (``progress=``,
    ``heldout=``, ``heldout_every=``, ``on_step=``, ``stop_after=``); ``profile=`` names the
    recipe's profile. ``start``: a template (or its file) to continue from. A non-finite loss
    (on any rank) stops training with a warning; ``model.info["diverged"]`` says where.

    ``distributed``: spread the tasks of every outer step over the ranks of a torch.distributed
    process group (True: join the one ``torchrun`` describes; None: only if one is initialised).
    Every rank passes the same arguments and gets the same model; rank 0 alone writes the files.
    The result equals the serial run's to float rounding (docs/distributed.md)."""
    recipe, files, monitor = _resolve("reptile", recipe, files, monitor, options)
    return _train(recipe, cohorts, seed, start, files, monitor, device, distributed)


def train_reindir(cohorts, recipe: "str | Profile | Recipe" = "demo", seed: int = 0,
                  start: "ReptileTemplate | str | Path | None" = None, files: TrainingFiles | None = None,
                  monitor: Monitor | None = None, device=None, distributed: bool | None = None,
                  **options: Any) -> ReindirModel:
    """REINDIR (encoder + infusion heads + templates), Algorithm 1 with the Reptile sign fixed.
    Arguments as :func:`train_reptile`; ``options`` may also set the encoder (``width``,
    ``embedding_length``, ``encoder_input``, ``encoder_patch_size``) and, with a profile name,
    ``warm_start``. ``start``: the trained Reptile template (or its file) the templates start
    from; the smoke and demo recipes need one (``warm_start``: they keep it fixed and train the
    encoder alone), the paper's trains everything from scratch. Distributed runs need
    ``encoder_update="averaged"``."""
    recipe, files, monitor = _resolve("reindir", recipe, files, monitor, options)
    return _train(recipe, cohorts, seed, start, files, monitor, device, distributed)


def train_folds(pairs: Sequence[Pair], folder: str | Path, kind: str = "reindir", k: int = 5, seed: int = 0,
                recipe: "str | Profile | Recipe" = "demo", only: Sequence[int] | None = None,
                **options: Any) -> dict[int, Path]:
    """k-fold cross-validation: one model per fold trained on the other folds' pairs (stratified per
    set, :func:`reindir_nb.datasets.kfold_splits`), saved as ``folder/{kind}_fold{i}.pt``; also
    writes ``folder/folds.csv`` (pair name -> fold that holds it out). A REINDIR recipe with
    ``warm_start`` starts fold i from ``folder/reptile_fold{i}.pt`` (train the Reptile folds
    first). ``options`` go to :func:`train_reptile` / :func:`train_reindir`.

    Distributed (``distributed=True``, or under an initialised process group): every fold is one
    distributed run of all ranks, one fold after the other; rank 0 writes the files (``folder``
    must be the same shared folder on every rank). ``only``: train just these fold indices (e.g.
    one fold per cluster job); ``folds.csv`` still lists every fold."""
    from ..data.datasets import kfold_splits

    if kind not in ("reindir", "reptile"):
        raise ValueError(f"kind must be 'reptile' or 'reindir', got {kind!r}")
    recipe, _, _ = _resolve(kind, options.pop("profile", recipe), None, None,
                            {k_: options.pop(k_) for k_ in list(options) if k_ not in set(_FILES_KEYS) | _MONITOR_KEYS
                             and k_ not in ("device", "distributed")})
    comm = _comm(options.get("distributed"), options.get("device"))
    folder = Path(folder)
    if comm.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    train = train_reindir if kind == "reindir" else train_reptile
    paths, rows = {}, []
    wanted = set(range(k)) if only is None else {int(i) for i in only}
    if not wanted <= set(range(k)):
        raise ValueError(f"only: fold indices {sorted(wanted - set(range(k)))} not in 0..{k - 1}")
    for i, (train_idx, test_idx) in enumerate(kfold_splits(pairs, k, seed)):
        rows += [{"pair": pairs[j].name, "dataset": pairs[j].dataset, "fold": i} for j in test_idx]
        if i not in wanted:
            continue
        start = folder / f"reptile_fold{i}.pt" if recipe.warm_start else None
        model = train([pairs[j] for j in train_idx], recipe, seed=seed + i, start=start,
                      checkpoint=folder / f"{kind}_fold{i}.ckpt", **options)
        paths[i] = folder / f"{kind}_fold{i}.pt"
        if comm.is_main:
            model.save(paths[i])
    if comm.is_main:
        _write_log(rows, folder / "folds.csv")
    comm.barrier()  # the fold files exist before any rank returns (and may read them)
    return paths
