"""Time to accuracy, in one run: elastix (affine + B-spline, several iteration budgets) against
ccIDIR from a random start and, when models are given, Reptile and REINDIR, on the IMAGES (the
fine view of :func:`reindir_nb.data.preprocess.prepare_fine`, not the coarse patch):

- ``bundled:elastix-lung`` at its native resolution (1.37 x 1.37 x 2.5 mm), with pre-alignment;
- ``bundled:thorax-ct`` pairs (real anatomy, simulated motion) at 2 mm.

INR methods: ccIDIR from the published random start, ccIDIR-identity (the same hidden layers, a
zero output layer) and, with ``--models``, Reptile and REINDIR.

Every method: mean and p95 TRE (mm) of the cycle and forward estimates against wall seconds
(encoder time included; the pre-alignment estimate is timed apart). Printed per pair: the
seconds each INR method needs to reach elastix's final TRE ("never" within its budget) and the
TRE it has reached in elastix's time. Curves go to ``results/bench_time_to_accuracy.csv``.

    .venv/bin/python benchmarks/bench_time_to_accuracy.py [--iterations 250] [--points 10000]
        [--thorax 3] [--models WORKSPACE/checkpoints] [--budgets 100 250 500] [--only elastix-lung]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import reindir_nb as rn
from reindir_nb.core.metrics import target_registration_error
from reindir_nb.data.preprocess import prepare_fine
from reindir_nb.evaluation import elastix_available, elastix_register, load_models

RESULTS = Path(__file__).resolve().parent / "results"


def cases(n_thorax: int) -> list[tuple[str, callable, float | None]]:
    """(name, loader, fine spacing in mm or None for native)."""
    out = [("elastix-lung", lambda: rn.load_pair("bundled:elastix-lung"), None)]
    out += [(f"thorax-ct-{s}", (lambda s=s: rn.load_pair("bundled:thorax-ct", seed=s)), 2.0) for s in range(n_thorax)]
    return out


def elastix_curve(raw: rn.Pair, budgets: list[int]) -> list[dict]:
    rows = []
    for b in budgets:
        t = time.perf_counter()
        pred = elastix_register(raw, max_iterations=b)
        sec = time.perf_counter() - t
        stats = target_registration_error(pred, raw.moving_landmarks)
        rows.append({"method": "elastix", "iteration": b, "seconds": sec, "tre_mean_mm": stats["mean"],
                     "tre_p95_mm": stats["p95"], "tre_fwd_mean_mm": stats["mean"], "tre_fwd_p95_mm": stats["p95"]})
        print(f"  elastix {b:4d} it: {stats['mean']:.2f} mm in {sec:.0f} s", flush=True)
    return rows


def inr_curve(fine: rn.Pair, label: str, init, iterations: int, points: int, record_every: int) -> list[dict]:
    run = rn.register(fine, init=init, iterations=iterations, record_every=record_every, seed=0,
                      points_per_step=points, progress=False, snapshot_limit=1)
    hist = run.history
    rows = [{"method": label, "iteration": int(r.iteration), "seconds": float(r.seconds),
             "tre_mean_mm": float(r.tre_mean_mm), "tre_p95_mm": float(r.tre_p95_mm),
             "tre_fwd_mean_mm": float(r.tre_mean_forward_mm), "tre_fwd_p95_mm": float(r.tre_p95_forward_mm)}
            for r in hist.itertuples()]
    last = rows[-1]
    print(f"  {label:8s} {last['iteration']:4d} it: {last['tre_mean_mm']:.2f} mm (forward {last['tre_fwd_mean_mm']:.2f}) "
          f"in {last['seconds']:.0f} s; start {run.settings['start']}", flush=True)
    return rows


def verdicts(curves: pd.DataFrame) -> pd.DataFrame:
    """Per INR method: seconds to reach elastix's final TRE, and its TRE at elastix's time."""
    el = curves[curves["method"] == "elastix"].sort_values("iteration")
    target, budget = float(el["tre_mean_mm"].iloc[-1]), float(el["seconds"].iloc[-1])
    out = []
    for method, c in curves[curves["method"] != "elastix"].groupby("method", sort=False):
        c = c.sort_values("iteration")
        hit = c[c["tre_mean_mm"] <= target]
        within = c[c["seconds"] <= budget]
        out.append({"method": method, "elastix_tre_mm": target, "elastix_s": budget,
                    "seconds_to_elastix_tre": float(hit["seconds"].iloc[0]) if len(hit) else np.nan,
                    "tre_at_elastix_s_mm": float(within["tre_mean_mm"].iloc[-1]) if len(within) else np.nan,
                    "final_tre_mm": float(c["tre_mean_mm"].iloc[-1]), "final_s": float(c["seconds"].iloc[-1])})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=250)
    ap.add_argument("--record-every", type=int, default=10)
    ap.add_argument("--points", type=int, default=10000)
    ap.add_argument("--thorax", type=int, default=3, help="thorax-ct pairs (seeds 0..N-1)")
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 250, 500], help="elastix iterations per resolution")
    ap.add_argument("--models", type=Path, default=None, help="a checkpoints folder with reptile.pt / reindir.pt")
    ap.add_argument("--profile", default="demo", help="profile of the coarse view (the models' patch size)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_time_to_accuracy.csv")
    args = ap.parse_args(argv)
    if not elastix_available():
        raise SystemExit("itk-elastix is not installed (pip install 'reindir_nb[elastix]')")
    methods: dict[str, object] = {"ccIDIR": "random", "ccIDIR-identity": "identity"}
    if args.models is not None:
        learned, _ = load_models(args.models)
        methods.update({k: v for k, v in learned.items() if not isinstance(v, dict)})
    curves, summary = [], []
    for name, load, spacing in cases(args.thorax):
        if args.only and name not in args.only:
            continue
        raw = load()
        t = time.perf_counter()
        fine = prepare_fine(raw, args.profile, spacing_mm=spacing, prealign="auto")
        prep_s = time.perf_counter() - t
        print(f"{name}: fine view {fine.fixed.grid.shape} at {fine.fixed.spacing} mm, coarse {fine.coarse.fixed.grid.shape}; "
              f"initial {raw.initial_distances().mean():.2f} mm; prepare + pre-alignment {prep_s:.1f} s", flush=True)
        rows = elastix_curve(raw, args.budgets)
        for label, init in methods.items():
            rows += inr_curve(fine, label, init, args.iterations, args.points, args.record_every)
        table = pd.DataFrame(rows).assign(pair=name, prepare_s=prep_s)
        curves.append(table)
        v = verdicts(table).assign(pair=name)
        summary.append(v)
        print(v.round(2).to_string(index=False), flush=True)
        with rn.io.atomic_path(args.out) as tmp:
            pd.concat(curves, ignore_index=True).to_csv(tmp, index=False)
    if summary:
        print("\nsummary (seconds to elastix's final TRE; NaN = never within the budget):")
        print(pd.concat(summary, ignore_index=True).round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
