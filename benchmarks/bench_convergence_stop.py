"""Calibrate the convergence stop of ``register`` (``reindir_nb.inr.convergence``) on real anatomy.

Each case is registered as ``reindir-nb register`` does it (the images at their own resolution,
the demo profile, identity start, pre-alignment "auto") for ``--max-steps`` steps without stopping,
the map change (p95 over the probes, mm, over the rule's window) and the landmark TRE recorded
every 5 steps. Then each candidate rule (``min_improvement`` x ``patience``) is replayed on those
curves: the step where it would have stopped and its TRE against the TRE after all steps (the
acceptance: at most 5 % worse on every case). ``--replay`` replays a saved curves file only. Cases: bundled thorax-ct seeds (both directions), the CBCT-like variant of
``bench_cli_vs_elastix`` (noise, cropped field of view) and ``bundled:elastix-lung``.

    .venv/bin/python benchmarks/bench_convergence_stop.py [--seeds 201 202] [--max-steps 250]
        [--improvements 0.05 0.1 0.2] [--patience 3 4 6] [--replay]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import reindir_nb as rn
from reindir_nb.data.preprocess import lung_mask, prepare_fine, swap_direction
from reindir_nb.inr.convergence import Convergence, Plateau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli_vs_elastix import cbct_like  # noqa: E402


def replay(history: pd.DataFrame, rule: Convergence) -> int:
    """The step at which ``rule`` stops a run with this history (map change at every check step),
    decided by the kit's own :class:`~reindir_nb.inr.convergence.Plateau`."""
    plateau = Plateau(rule)
    for _, row in history.dropna(subset=["map_change_mm"]).iterrows():
        step = int(row["iteration"])
        if step % rule.check_every == 0 and plateau.update(step, float(row["map_change_mm"])):
            return step
    return int(history["iteration"].iloc[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[201, 202])
    ap.add_argument("--max-steps", type=int, default=250)
    ap.add_argument("--improvements", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--patience", type=int, nargs="+", default=[3, 4, 6])
    ap.add_argument("--replay", action="store_true", help="only replay the rules on the saved curves")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "bench_convergence_stop.csv")
    args = ap.parse_args()
    curves_path = args.out.with_name(args.out.stem + "_curves.csv")
    curves = pd.read_csv(curves_path) if args.replay else measure(args, curves_path)
    rows = []
    for case, history in curves.groupby("case", sort=False):
        history = history.reset_index(drop=True)
        full, end = float(history["tre_mean_mm"].iloc[-1]), float(history["seconds"].iloc[-1])
        for improvement, patience in itertools.product(args.improvements, args.patience):
            step = replay(history, Convergence(min_improvement=improvement, patience=patience))
            at = history[history["iteration"] == step].iloc[0]
            rows.append({"case": case, "min_improvement": improvement, "patience": patience, "stop_step": step,
                         "tre_at_stop_mm": at["tre_mean_mm"], "tre_all_steps_mm": full,
                         "ratio": at["tre_mean_mm"] / full, "time_fraction": at["seconds"] / end})
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    print(table.round(3).to_string(index=False))
    print(f"\nper rule over {table['case'].nunique()} cases: worst and median TRE ratio (stop / all "
          f"{int(curves['iteration'].max())} steps), median stop step, median share of the time")
    for (improvement, patience), part in table.groupby(["min_improvement", "patience"]):
        print(f"  min_improvement {improvement:4.2f}, patience {patience}: worst {part['ratio'].max():.3f}, "
              f"median {part['ratio'].median():.3f}; median stop step {part['stop_step'].median():.0f}; "
              f"time {100 * part['time_fraction'].median():.0f} %")


def measure(args, curves_path: Path) -> pd.DataFrame:
    """Register every case for ``--max-steps`` steps, recording TRE and map change every 5 steps."""
    profile = rn.get_profile("demo")
    cases = []
    for seed in args.seeds:
        pair = rn.load_pair("bundled:thorax-ct", seed=seed)
        cases += [(f"thorax-ct-{seed}", pair), (f"thorax-ct-{seed}-reverse", swap_direction(pair))]
    seed = args.seeds[-1] + 1
    cases.append((f"thorax-ct-{seed}-cbct-like", cbct_like(rn.load_pair("bundled:thorax-ct", seed=seed), seed)))
    cases.append(("elastix-lung", rn.load_pair("bundled:elastix-lung")))
    never = Convergence(tolerance_mm=1e-12, min_improvement=0.0, patience=10**9)  # measures, never stops
    curves = []
    for name, raw in cases:
        for side in ("fixed", "moving"):  # what the command computes when no mask is given
            if getattr(raw, f"{side}_mask") is None:
                raw = raw.replace(**{f"{side}_mask": lung_mask(getattr(raw, side))})
        prepared = prepare_fine(raw, profile, prealign="auto")
        matrix = prepared.preparation.prealign_matrix
        run = rn.register(prepared, init="identity", iterations=args.max_steps, progress=False,
                          prealign="none" if matrix is None else np.asarray(matrix, dtype=np.float64),
                          settings=rn.RegisterSettings(profile="demo", stop=never, record_every=5))
        curves.append(run.history.assign(case=name))
        print(f"{name}: TRE {run.history['tre_mean_mm'].iloc[0]:.2f} -> {run.history['tre_mean_mm'].iloc[-1]:.3f} mm "
              f"in {run.history['seconds'].iloc[-1]:.0f} s", flush=True)
        curves_path.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(curves).to_csv(curves_path, index=False)
    return pd.concat(curves)


if __name__ == "__main__":
    main()
