"""Meta-training from the command line (a cluster job needs no notebook).

One process::

    python -m reindir_nb.train reptile --profile demo --workspace workspace
    python -m reindir_nb.train reindir --profile smoke --workspace /tmp/ws --phantom 4 --outer-steps 3

K processes on one machine (gloo on CPU, NCCL with one rank per GPU; docs/distributed.md)::

    torchrun --standalone --nproc_per_node=K -m reindir_nb.train reindir --profile paper --workspace ws

The pairs come from ``WORKSPACE/prepared`` (written by notebook 01 with ``rn.io.save_pairs``) or,
with ``--phantom N``, are N phantom pairs per style (dirlab, nlst, cbct) generated and prepared
now (nothing is written to ``WORKSPACE/prepared``). It trains the profile's recipe
(:func:`reindir_nb.meta.recipe`), the same as notebook 03: in smoke and demo REINDIR starts from
the trained Reptile template (``--start``, default ``WORKSPACE/checkpoints/reptile.pt``, or with
``--folds`` the folder's ``reptile_fold{i}.pt``: train reptile first), ``--from-scratch`` trains
REINDIR's templates too (the paper's recipe). Without ``--folds`` the model goes to
``--output`` (default ``WORKSPACE/checkpoints/{kind}.pt``), its resumable checkpoint next to it
(``.ckpt``) and the per-step log as ``{kind}_log.csv``; with ``--folds K`` one model per fold goes
into the ``--output`` folder (default ``WORKSPACE/checkpoints/folds``, as notebook 03). Rank 0
alone writes files and prints. Exit codes: 0 done, 1 training diverged (the last finite model is
saved), 2 bad arguments or input files.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]

STYLES = ("dirlab", "nlst", "cbct")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reindir_nb.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("kind", choices=("reptile", "reindir"), help="what to train")
    p.add_argument("--profile", default="demo", choices=("smoke", "demo", "paper"), help="run profile")
    p.add_argument("--workspace", type=Path, default=Path("workspace"),
                   help="workspace folder: prepared pairs in WORKSPACE/prepared, outputs under WORKSPACE/checkpoints")
    p.add_argument("--phantom", type=int, metavar="N", default=None,
                   help="train on N phantom pairs per style (dirlab, nlst, cbct) generated now instead of "
                        "WORKSPACE/prepared")
    p.add_argument("--datasets", default=None, metavar="A,B",
                   help="only these data sets of WORKSPACE/prepared (comma separated; default: all)")
    p.add_argument("--folds", type=int, default=None, metavar="K", help="k-fold cross-validation (K >= 2)")
    p.add_argument("--fold", type=int, action="append", default=None, metavar="I",
                   help="with --folds: train only fold I (repeatable; e.g. one fold per SLURM array task)")
    p.add_argument("--start", type=Path, default=None,
                   help="reindir: the Reptile template file the templates start from (default: "
                        "WORKSPACE/checkpoints/reptile.pt when the profile's recipe starts from one)")
    p.add_argument("--from-scratch", action="store_true",
                   help="reindir: train the templates too, from a fresh initialisation (the paper's recipe; "
                        "smoke and demo start from a trained Reptile template)")
    p.add_argument("--print-recipe", action="store_true",
                   help="print the recipe (settings, architecture, start policy) as JSON and exit")
    p.add_argument("--held-out-per-set", type=int, default=0, metavar="N",
                   help="without --folds: keep the last N pairs of every set out of training and log their "
                        "zero-shot TRE at every checkpoint")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--output", type=Path, default=None,
                   help="model file (folder with --folds); default under WORKSPACE/checkpoints")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue a checkpoint written for the same inputs (--no-resume: start over)")
    p.add_argument("--outer-steps", type=int, default=None, metavar="N", help="override the profile's outer steps")
    p.add_argument("--inner-steps", type=int, default=None, metavar="N", help="override the inner SGD steps")
    p.add_argument("--inner-points", type=int, default=None, metavar="N",
                   help="override the points per inner step")
    p.add_argument("--checkpoint-every", type=int, default=25, metavar="N", help="outer steps between checkpoints")
    p.add_argument("--tasks-per-set", type=int, default=None, metavar="N",
                   help="tasks drawn from every set per outer step (default 1, the paper's batch)")
    p.add_argument("--encoder-update", choices=("sequential", "averaged"), default=None,
                   help="reindir: Adam step after every task (sequential, one process only) or once per outer "
                        "step on the averaged gradient; default: averaged with several ranks, else sequential")
    p.add_argument("--eps", type=float, default=None, help="Reptile step (default: the profile's, 1.0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...; with several ranks 'cuda' means "
                                                  "cuda:LOCAL_RANK (default: GPUs when present)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (default: the cores divided among the ranks on this machine)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar (rank 0)")
    return p


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    lows = {"phantom": 1, "outer_steps": 0, "inner_steps": 1, "inner_points": 1, "threads": 1, "tasks_per_set": 1,
            "checkpoint_every": 1, "folds": 2}
    for name, low in lows.items():
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"argument --{name.replace('_', '-')}: must be >= {low}, got {value}")
    if args.held_out_per_set < 0:
        parser.error(f"argument --held-out-per-set: must be >= 0, got {args.held_out_per_set}")
    if args.folds and args.held_out_per_set:
        parser.error("argument --held-out-per-set: not with --folds (every fold holds out its own pairs)")
    if args.kind == "reptile" and (args.start or args.from_scratch or args.encoder_update):
        parser.error("arguments --start, --from-scratch, --encoder-update: only for reindir")
    if args.from_scratch and args.start:
        parser.error("argument --from-scratch: not with --start (a start template is a warm start)")
    if args.fold is not None and not args.folds:
        parser.error("argument --fold: only with --folds K")
    if args.fold is not None and any(not 0 <= i < args.folds for i in args.fold):
        parser.error(f"argument --fold: fold indices must be in 0..{args.folds - 1}, got {args.fold}")
    if args.start is not None and args.folds:
        parser.error("argument --start: not with --folds (fold i starts from OUTPUT/reptile_fold{i}.pt)")
    if args.start is not None and not args.start.is_file():
        parser.error(f"argument --start: {args.start}: no such file")
    if args.output is not None and not args.folds and args.output.suffix != ".pt":
        parser.error(f"argument --output: {args.output}: a model file name ending in .pt (a folder only with --folds)")
    if args.output is not None and args.folds and args.output.exists() and not args.output.is_dir():
        parser.error(f"argument --output: {args.output}: exists and is not a folder (--folds writes one model per fold)")
    if args.phantom is None and not args.print_recipe and not args.workspace.is_dir():
        parser.error(f"argument --workspace: {args.workspace}: no such folder (or pass --phantom N to generate pairs)")


def _load_pairs(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The training pairs: prepared phantoms (``--phantom``) or ``WORKSPACE/prepared``."""
    import reindir_nb as rn

    if args.phantom is not None:
        return [rn.prepare(p, args.profile) for s in STYLES
                for p in rn.phantom.make_cohort(s, args.phantom, seed=0, profile=args.profile, progress=False)]
    root = args.workspace / "prepared"
    if not (root / "manifest.csv").is_file():
        parser.error(f"argument --workspace: {root / 'manifest.csv'}: no prepared pairs (notebook 01 writes them "
                     "with rn.io.save_pairs), or pass --phantom N")
    try:
        pairs = rn.io.load_manifest(root)
    except (ValueError, OSError) as err:
        parser.error(f"argument --workspace: {err}")
    if args.datasets:
        wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
        known = sorted({p.dataset for p in pairs})
        unknown = [d for d in wanted if d not in known]
        if unknown:
            parser.error(f"argument --datasets: {unknown} not in {root / 'manifest.csv'} (it has {known})")
        pairs = [p for p in pairs if p.dataset in wanted]
    if not pairs:
        parser.error(f"argument --workspace: {root / 'manifest.csv'} lists no pairs")
    return pairs


def _split_heldout(pairs, per_set: int):
    cohorts: dict[str, list] = {}
    for p in pairs:
        cohorts.setdefault(p.dataset, []).append(p)
    if not per_set:
        return cohorts, []
    small = sorted(k for k, v in cohorts.items() if len(v) <= per_set)
    if small:
        raise ValueError(f"--held-out-per-set {per_set} leaves no training pair in set(s) {small}")
    return {k: v[:-per_set] for k, v in cohorts.items()}, [p for v in cohorts.values() for p in v[-per_set:]]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, write the files; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    if args.print_recipe:
        import json

        print(json.dumps(_recipe(args).fingerprint(), indent=1))
        return 0

    import torch

    from .meta import distributed as mdist
    from .meta import training

    distributed = mdist.launched_by_torchrun()
    if distributed:
        comm = mdist.setup(args.device, args.threads)
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        comm = mdist.Comm.serial()
    say = print if comm.is_main else (lambda *a, **k: None)
    if not comm.is_main:
        warnings.simplefilter("ignore")
    try:
        return _run(parser, args, comm, distributed, say, training)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        message = str(err).replace("pass resume=False", "pass --no-resume")
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    finally:
        mdist.shutdown()


def _recipe(args: argparse.Namespace):
    """The profile's recipe of ``args.kind`` with the command line's changes."""
    from .meta.recipes import recipe

    changes = {k: getattr(args, k) for k in ("outer_steps", "inner_steps", "inner_points", "tasks_per_set", "eps",
                                             "encoder_update") if getattr(args, k, None) is not None}
    if args.kind == "reindir" and args.from_scratch:
        changes["warm_start"] = False
    return recipe(args.kind, args.profile, **changes)


def _start(parser, args, recipe, checkpoints: Path) -> Path | None:
    """The Reptile template a warm-started REINDIR recipe starts from (single runs)."""
    if not recipe.warm_start or args.folds:
        return None
    start = args.start or checkpoints / "reptile.pt"
    if not start.is_file():
        parser.error(f"the {args.profile} REINDIR recipe starts from a trained Reptile template and {start} does not "
                     "exist: train it first (python -m reindir_nb.train reptile ...), pass --start FILE, or "
                     "--from-scratch")
    return start


def _run(parser, args, comm, distributed: bool, say, training) -> int:
    pairs = _load_pairs(parser, args)
    if args.kind == "reindir" and args.encoder_update is None and comm.world > 1:
        args.encoder_update = "averaged"
    recipe = _recipe(args)
    common = dict(device=args.device, resume=args.resume, progress=args.progress,
                  checkpoint_every=args.checkpoint_every, distributed=distributed)
    checkpoints = args.workspace / "checkpoints"
    sets = sorted({p.dataset for p in pairs})
    say(f"{args.kind} ({args.profile}): {len(pairs)} pairs in sets {sets}; {comm.world} rank(s) on {comm.device}"
        + ("" if recipe.kind == "reptile" else f", encoder_update={recipe.settings.encoder_update}"))
    if args.folds:
        folder = args.output or checkpoints / "folds"
        paths = training.train_folds(pairs, folder, kind=args.kind, k=args.folds, seed=args.seed, recipe=recipe,
                                     only=args.fold, **common)
        say("\n".join(f"fold {i}: {p}" for i, p in paths.items()))
        return 0
    cohorts, heldout = _split_heldout(pairs, args.held_out_per_set)
    output = args.output or checkpoints / f"{args.kind}.pt"
    files = dict(checkpoint=output.with_suffix(".ckpt"), log_path=output.with_name(f"{output.stem}_log.csv"),
                 heldout=heldout or None, heldout_every=args.checkpoint_every)
    train = training.train_reindir if args.kind == "reindir" else training.train_reptile
    model = train(cohorts, recipe, seed=args.seed, start=_start(parser, args, recipe, checkpoints), **files, **common)
    if comm.is_main:
        model.save(output)
    comm.barrier()
    info = model.info
    say(f"{output}: {info['outer_steps']} outer steps, {info['seconds']:.1f} s of training "
        f"(checkpoint {files['checkpoint']}, log {files['log_path']})")
    if info.get("diverged"):
        say(f"training diverged: {info['diverged']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
