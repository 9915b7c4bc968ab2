"""CBCT reference-keypoint generation (paper appendix B) validated on phantom ``cbct`` pairs,
where the exact motion gives the true moving keypoints.

For each pair: ``rn.evaluate.propagate_keypoints`` (an ensemble of ccIDIR runs, the ``keep`` runs
with the lowest mean cycle uncertainty, per-point median) against the truth, next to the single
runs' errors (mean and best over the ensemble) and the initial landmark distance. mm.

    .venv/bin/python benchmarks/bench_propagation.py [--profile demo] [--pairs 2] [--runs 10]
        [--keep 5] [--iterations 50] [--points-per-step 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

import reindir_nb as rn
from reindir_nb import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--keep", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--points-per-step", type=int, default=2000)
    args = ap.parse_args()
    prof = rn.get_profile(args.profile)
    rows = []
    for i in range(args.pairs):
        pair = rn.prepare(rn.phantom.make_pair(20_000 + i, "cbct", prof.name), prof)
        truth = pair.moving_landmarks
        t0 = time.perf_counter()
        r = evaluate.propagate_keypoints(pair, pair.fixed_landmarks, runs=args.runs, keep=args.keep,
                                         iterations=args.iterations, points_per_step=args.points_per_step,
                                         prealign="none", progress=True)
        seconds = time.perf_counter() - t0
        single = np.linalg.norm(r.run_points - truth[None], axis=2).mean(axis=1)  # per run
        rows.append({"pair": pair.name, "landmarks": len(truth), "initial_mm": pair.initial_distances().mean(),
                     "propagated_mm": float(np.linalg.norm(r.points - truth, axis=1).mean()),
                     "single_run_mean_mm": float(single.mean()), "single_run_best_mm": float(single.min()),
                     "kept_runs_mean_mm": float(single[r.kept].mean()),
                     "kept_uncertainty_mm": r.mean_kept_uncertainty_mm, "excluded": r.excluded,
                     "uncertainty_error_corr": float(np.corrcoef(r.run_uncertainty_mm, single)[0, 1]),
                     "seconds": seconds})
    table = pd.DataFrame(rows)
    print(f"\n{args.runs} runs x {args.iterations} iterations ({args.points_per_step} points), keep {args.keep}; mm")
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
