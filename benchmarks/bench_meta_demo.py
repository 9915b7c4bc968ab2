"""Train Reptile and REINDIR on phantom cohorts (three styles) and compare random init / Reptile /
REINDIR on HELD-OUT phantom pairs: mean TRE at iteration 0 and 25, mean and range over seeds.

    .venv/bin/python benchmarks/bench_meta_demo.py [--profile demo] [--outer-steps N] [--seeds 5]
        [--workspace W]   (--seeds 0: train and save only; bench_sweep_demo.py then evaluates)
        [--reindir-start-from-reptile --reindir-eps 0.1]   (REINDIR warm-started from the Reptile template)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import reindir_nb as rn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--outer-steps", type=int, default=None)
    ap.add_argument("--train-pairs", type=int, default=None, help="phantom pairs per style for training")
    ap.add_argument("--test-pairs", type=int, default=2, help="held-out pairs per style")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--methods", nargs="+", default=["reptile", "reindir"], choices=["reptile", "reindir"],
                    help="what to train (a method not trained is loaded from OUT/<method>.pt)")
    ap.add_argument("--workspace", default=None,
                    help="also save the models as WORKSPACE/checkpoints/{reptile,reindir}.pt (what "
                         "benchmarks/bench_sweep_demo.py and notebook 04 load)")
    ap.add_argument("--reindir-start-from-reptile", action="store_true",
                    help="start REINDIR's templates from the Reptile template of this run (or OUT/reptile.pt)")
    ap.add_argument("--reindir-eps", type=float, default=None, help="REINDIR's Reptile step eps (default: settings)")
    args = ap.parse_args()
    prof = rn.get_profile(args.profile)
    n_train = args.train_pairs or prof.cohort_size
    styles = ("dirlab", "nlst", "cbct")
    t0 = time.perf_counter()
    train = {s: [rn.prepare(rn.phantom.make_pair(seed=i, style=s, profile=prof.name), prof) for i in range(n_train)] for s in styles}
    test = [rn.prepare(rn.phantom.make_pair(seed=10_000 + i, style=s, profile=prof.name), prof)
            for s in styles for i in range(args.test_pairs)]  # seeds never used in training
    print(f"data: {n_train} training pairs per style, {len(test)} held-out pairs ({time.perf_counter() - t0:.0f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    changes = {} if args.outer_steps is None else {"outer_steps": args.outer_steps}
    trained = {}
    for method, train_fn in (("reptile", rn.meta.train_reptile), ("reindir", rn.meta.train_reindir)):
        if method not in args.methods:
            trained[method] = (rn.meta.load(out / f"{method}.pt"), float("nan"))
            continue
        extra = {}
        if method == "reindir":
            if args.reindir_start_from_reptile:
                extra["start"] = trained["reptile"][0]
            if args.reindir_eps is not None:
                extra["eps"] = args.reindir_eps
        t = time.perf_counter()
        trained[method] = (train_fn(train, prof, log_path=out / f"{method}_log.csv", **changes, **extra),
                           time.perf_counter() - t)
        trained[method][0].save(out / f"{method}.pt")
    (template, t_reptile), (model, t_reindir) = trained["reptile"], trained["reindir"]
    if args.workspace:
        checkpoints = Path(args.workspace) / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        template.save(checkpoints / "reptile.pt")
        model.save(checkpoints / "reindir.pt")
    print(f"training: Reptile {t_reptile:.0f} s ({template.info['outer_steps']} outer steps), "
          f"REINDIR {t_reindir:.0f} s ({model.info['outer_steps']} outer steps)")
    if args.seeds == 0:
        return
    rows = []
    for pair in test:
        for name, init in (("ccIDIR", "random"), ("Reptile", template), ("REINDIR", model)):
            for seed in range(args.seeds):
                run = rn.register(pair, init=init, iterations=args.iterations, seed=seed, prealign="none",
                                  record_every=args.iterations, progress=False)
                for _, r in run.history.iterrows():
                    rows.append({"pair": pair.name, "style": pair.dataset, "method": name, "seed": seed,
                                 "iteration": int(r["iteration"]), "tre_mean_mm": r["tre_mean_mm"],
                                 "seconds": r["seconds"]})
    table = pd.DataFrame(rows)
    table.to_csv(out / "meta_demo_tre.csv", index=False)
    per_seed = table.groupby(["method", "iteration", "seed"])["tre_mean_mm"].mean().reset_index()
    summary = per_seed.groupby(["iteration", "method"])["tre_mean_mm"].agg(["mean", "min", "max"]).round(2)
    print("\nmean TRE over held-out pairs (mm): mean and range over seeds")
    print(summary.to_string())
    by_style = table.groupby(["style", "iteration", "method"])["tre_mean_mm"].median().unstack("method").round(2)
    print("\nmedian TRE per style (mm)")
    print(by_style.to_string())
    print(f"\ninitial mean distance of the held-out pairs: {np.mean([p.initial_distances().mean() for p in test]):.2f} mm")


if __name__ == "__main__":
    main()
