"""Command line for the evaluation sweep of notebook 04, for cluster jobs without a notebook:

    python -m reindir_nb.sweep --workspace W --profile demo                     # one process
    torchrun --standalone --nproc_per_node=4 -m reindir_nb.sweep --workspace W  # 4 shards, one machine
    python -m reindir_nb.sweep --workspace W --shard $SLURM_ARRAY_TASK_ID/8     # one shard of a SLURM array
    python -m reindir_nb.sweep --workspace W --merge                            # combine the shard tables

Methods: ``ccIDIR`` (random start), ``Reptile`` / ``REINDIR`` (the models notebook 03 or
``python -m reindir_nb.train`` saved in ``W/checkpoints``; per-fold models are used with their
folds), ``VoxelMorph`` (a saved ``voxelmorph.pt``) and ``elastix``. Pairs: the prepared pairs the
folds held out, else fresh held-out phantom pairs (the same on every rank). Every shard writes its
own resumable table next to ``--results`` (default ``W/results/sweep.csv``); ``--merge`` checks
that no run is missing or duplicated and writes the merged table there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .core.profiles import PROFILES

__all__ = ["main", "build_parser"]

METHODS = ("ccIDIR", "Reptile", "REINDIR", "VoxelMorph", "elastix")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m reindir_nb.sweep", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default="workspace", help="the notebooks' workspace folder (default: workspace)")
    ap.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    ap.add_argument("--methods", nargs="+", default=["ccIDIR", "Reptile", "REINDIR"], choices=METHODS)
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the profile's)")
    ap.add_argument("--iterations", type=int, nargs="+", default=None,
                    help="recorded iteration counts (default: the profile's eval_iterations)")
    ap.add_argument("--held-out-per-style", type=int, default=None,
                    help="fresh phantom pairs per style with single models (default: the profile's)")
    ap.add_argument("--styles", nargs="+", default=None, help="phantom styles of held-out pairs (default: all)")
    ap.add_argument("--regulariser", default="jacobian")
    ap.add_argument("--points-per-step", type=int, default=None)
    ap.add_argument("--results", default=None, help="results table (default: WORKSPACE/results/sweep.csv)")
    ap.add_argument("--shard", default=None,
                    help="'I/N': run shard I of N; 'auto': torchrun's RANK/WORLD_SIZE (default when launched so)")
    ap.add_argument("--no-resume", action="store_true", help="recompute the table instead of resuming it")
    ap.add_argument("--merge", action="store_true", help="merge the shard tables of --results and exit")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _methods(args: argparse.Namespace, ws: Any) -> tuple[dict[str, Any], dict[str, int] | None]:
    from .evaluation import elastix_available, load_voxelmorph

    methods: dict[str, Any] = {"ccIDIR": "random"} if "ccIDIR" in args.methods else {}
    learned, folds = ws.models(train_if_missing=False)
    for name in ("Reptile", "REINDIR"):
        if name in args.methods:
            if name not in learned:
                raise ValueError(f"--methods {name}: no {name} model in {ws.checkpoints} "
                                 f"(train one: python -m reindir_nb.train, or run notebook 03)")
            methods[name] = learned[name]
    if "VoxelMorph" in args.methods:
        model = load_voxelmorph(ws.checkpoints, folds)
        if model is None:
            raise ValueError(f"--methods VoxelMorph: no voxelmorph.pt in {ws.checkpoints} (run notebook 04 once)")
        methods["VoxelMorph"] = model
    if "elastix" in args.methods:
        if not elastix_available():
            raise ValueError("--methods elastix: itk-elastix is not installed (pip install itk-elastix)")
        methods["elastix"] = "elastix"
    if folds is None and any(isinstance(m, dict) for m in methods.values()):
        raise ValueError(f"{ws.checkpoints}: per-fold models without a folds.csv")
    return methods, folds


def main(argv: Sequence[str] | None = None) -> int:
    """Run (a shard of) the sweep, or merge shard tables; 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    from . import evaluation
    from .evaluation.workspace import Workspace
    from .meta.distributed import env_world_size, rank_device, share_cores

    try:
        ws = Workspace(args.workspace, args.profile, **({"styles": tuple(args.styles)} if args.styles else {}))
        results = Path(args.results) if args.results else ws.results / "sweep.csv"
        if args.merge:
            shards = evaluation.shard_tables(results)
            if not shards:
                raise ValueError(f"--merge: no shard tables next to {results}")
            merged = evaluation.merge_results(shards)
            evaluation.results.write_results(merged, results)
            print(f"merged {len(shards)} shard tables ({len(merged)} rows) into {results}")
            return 0
        profile = ws.profile
        shard = args.shard if args.shard is not None else "auto"
        device = args.device
        if args.shard is None and env_world_size() > 1:  # one shard per torchrun rank: its GPU, or its share of the cores
            device = rank_device(args.device)
            if device.type == "cpu":
                share_cores()
        methods, folds = _methods(args, ws)
        pairs, source = ws.sweep_pairs(folds, per_style=args.held_out_per_style)
        budget = profile.elastix_budget
        table = evaluation.sweep(
            pairs, methods, seeds=range(profile.seeds if args.seeds is None else args.seeds),
            iterations=profile.eval_iterations if args.iterations is None else args.iterations,
            regulariser=args.regulariser, results_path=results, folds=folds, device=device,
            progress=not args.quiet, resume=not args.no_resume, shard=shard,
            points_per_step=profile.points_per_step if args.points_per_step is None else args.points_per_step,
            elastix_kwargs=None if budget is None else dict(max_iterations=budget[0], resolutions=budget[1]))
    except (ValueError, TypeError, FileNotFoundError) as err:  # bad input (FingerprintMismatch included)
        print(f"reindir_nb.sweep: error: {err}", file=sys.stderr)
        return 2
    index, count = table.attrs["shard"]
    print(f"{len(pairs)} pairs ({source}); shard {index} of {count}: {len(table.attrs['computed'])} runs computed, "
          f"{len(table)} rows in {table.attrs['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
