"""Demo-profile evaluation sweep (paper Figure 3 on phantoms): held-out phantom pairs of all three
styles x ccIDIR / Reptile / REINDIR x >= 5 seeds, with the trained demo models of notebook 03.

    .venv/bin/python benchmarks/bench_sweep_demo.py --workspace workspace [--seeds 5] [--pairs-per-style 2]
        [--figures] [--bending-seeds 2 --bending-pairs-per-style 1]

Prints the wall time of the sweep, the Figure 3 numbers per style (median over seeds of the
pair-mean TRE at 0 and 25 iterations, per method) and whether the paper's claims hold here:
(1) REINDIR starts lower than Reptile and ccIDIR on the dirlab and nlst styles, (2) REINDIR and
Reptile start similarly on cbct, (3) all methods end at similar values. The sweep resumes: an
interrupted run continues where it stopped (table ``results/bench_sweep_demo.csv``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import reindir_nb as rn
from reindir_nb import evaluate, figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default="workspace")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pairs-per-style", type=int, default=2)
    ap.add_argument("--iterations", type=int, nargs="+", default=[0, 10, 25, 50],
                    help="recorded iterations (the notebooks' demo sweep records the profile's 0/10/25)")
    ap.add_argument("--points-per-step", type=int, default=None)
    ap.add_argument("--similar", type=float, default=0.15, help="relative difference counted as 'similar'")
    ap.add_argument("--figures", action="store_true", help="also write the figures into WORKSPACE/bench_figures")
    ap.add_argument("--bending-seeds", type=int, default=0,
                    help="also sweep the bending configuration with this many seeds (Figure 8 right, runtime table)")
    ap.add_argument("--bending-pairs-per-style", type=int, default=1)
    args = ap.parse_args(argv)

    profile = rn.get_profile(args.profile)
    workspace = Path(args.workspace).resolve()
    methods, folds = evaluate.load_models(workspace / "checkpoints")
    if {"Reptile", "REINDIR"} - set(methods):
        print(f"No trained Reptile/REINDIR models in {workspace / 'checkpoints'}: run notebook 03 "
              f"(profile {profile.name}) into this workspace first.")
        return 2
    if folds is not None:
        pairs = [p for p in rn.io.load_manifest(workspace / "prepared") if p.name in folds]
        source = "per-fold models, each pair held out by its fold"
    else:
        pairs = [rn.prepare(rn.phantom.make_pair(10_000 + i, style, profile.name), profile)
                 for style in ("dirlab", "nlst", "cbct") for i in range(args.pairs_per_style)]
        source = "single models, fresh phantom pairs (seeds 10000+)"
    print(f"{len(pairs)} pairs ({source}); {args.seeds} seeds; iterations {args.iterations}; "
          f"{args.points_per_step or profile.points_per_step} points per step; torch threads "
          f"{__import__('torch').get_num_threads()}")
    path = workspace / "results" / "bench_sweep_demo.csv"
    t0 = time.perf_counter()
    table = evaluate.sweep(pairs, {"ccIDIR": "random", **methods}, seeds=range(args.seeds),
                           iterations=args.iterations, results_path=path, folds=folds,
                           points_per_step=args.points_per_step)
    seconds = time.perf_counter() - t0
    runs = len(table.attrs["computed"])
    print(f"\nsweep: {runs} runs computed in {seconds:.0f} s ({seconds / max(runs, 1):.1f} s per run); "
          f"table {path}")

    curves = figures.seed_curves(table)
    show = [i for i in (0, 25) if i in set(curves["iteration"])] + [max(args.iterations)]
    wide = curves.pivot_table(index=["dataset", "method"], columns="iteration", values="median")[sorted(set(show))]
    print("\nFigure 3 numbers: median over seeds of the pair-mean TRE (mm)")
    print(wide.round(2).to_string())

    pooled = table[table["iteration"].isin(show)].groupby(["method", "iteration", "seed"])["tre_mean_mm"].mean()
    pooled = pooled.groupby(["iteration", "method"]).agg(["mean", "min", "max"]).round(2)
    print("\nAll held-out pairs pooled: mean TRE (mm) over pairs, then mean [min, max] over seeds")
    print(pooled.to_string())

    def at(ds: str, method: str, it: int) -> float:
        return float(wide.loc[(ds, method), it])

    verdicts = []
    last = max(args.iterations)
    for ds in sorted(curves["dataset"].unique()):
        r0, p0, c0 = (at(ds, m, 0) for m in ("REINDIR", "Reptile", "ccIDIR"))
        if "cbct" in ds:
            ok = abs(r0 - p0) <= args.similar * p0
            verdicts.append((ds, f"REINDIR similar to Reptile at 0 ({r0:.2f} vs {p0:.2f} mm)", ok))
        else:
            ok = r0 < p0 and r0 < c0
            verdicts.append((ds, f"REINDIR lowest at 0 ({r0:.2f} vs Reptile {p0:.2f}, ccIDIR {c0:.2f} mm)", ok))
        ends = [at(ds, m, last) for m in ("REINDIR", "Reptile", "ccIDIR")]
        ok = (max(ends) - min(ends)) <= args.similar * (sum(ends) / 3)
        verdicts.append((ds, f"similar after {last} iterations ({', '.join(f'{e:.2f}' for e in ends)} mm)", ok))
    print("\npaper claims:")
    for ds, claim, ok in verdicts:
        print(f"  {ds:16s} {claim}: {'holds' if ok else 'does NOT hold'}")
    table_bend = None
    if args.bending_seeds > 0:
        bend_pairs, per_style = [], {}
        for p in pairs:  # the first N pairs of every style
            if per_style.get(p.dataset, 0) < args.bending_pairs_per_style:
                bend_pairs.append(p)
                per_style[p.dataset] = per_style.get(p.dataset, 0) + 1
        t0 = time.perf_counter()
        table_bend = evaluate.sweep(bend_pairs, {"ccIDIR": "random", **methods}, seeds=range(args.bending_seeds),
                                    iterations=args.iterations, regulariser="bending", folds=folds,
                                    results_path=workspace / "results" / "bench_sweep_demo_bending.csv",
                                    points_per_step=args.points_per_step)
        seconds = time.perf_counter() - t0
        print(f"\nbending sweep: {len(table_bend.attrs['computed'])} runs computed in {seconds:.0f} s, "
              f"{len(bend_pairs)} pairs x {args.bending_seeds} seeds")
        bend = table_bend.groupby(["method", "iteration", "seed"])["tre_mean_mm"].mean()
        print("bending, pooled mean TRE (mm) over its pairs, then mean [min, max] over seeds")
        print(bend.groupby(["iteration", "method"]).agg(["mean", "min", "max"]).round(2).to_string())
        print("\nruntime (median step and encoder seconds; encoder cost in step equivalents)")
        print(figures.runtime_table(table, table_bend).round(3).to_string(index=False))
    if args.figures:
        done = figures.paper_figures(table, {p.name: p for p in pairs}, path, workspace / "bench_figures",
                                     table_bend=table_bend)
        print(f"\nfigures: {sorted(done)} in {workspace / 'bench_figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
