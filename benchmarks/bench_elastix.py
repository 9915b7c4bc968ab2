"""Peer comparison in one run: elastix (affine + B-spline, ``itk-elastix``) vs ccIDIR (affine
pre-alignment + INR) on the bundled real pair (``elastix-lung``), the real-anatomy/simulated-motion
pair (``thorax-ct``) and phantom pairs of every style, all prepared for one profile.

Same TRE code for every method (:func:`reindir_nb.core.metrics.target_registration_error`: world mm,
mean over the pair's landmarks); wall seconds measured in this process. Columns per pair:

- ``initial_mm``: landmark distance before registration;
- ``affine_mm`` / ``affine_s``: the SimpleITK affine pre-alignment alone (what ccIDIR starts from);
- ``elastix_mm`` / ``elastix_s``: elastix default affine + B-spline maps (:func:`reindir_nb.evaluation.sweep.elastix_register`,
  8 mm final grid, 3 resolutions, 500 iterations), transformix on the fixed landmarks;
- ``ccIDIR@N_mm`` / ``ccIDIR@N_s``: ccIDIR after N steps (cycle estimate; seconds of optimisation,
  excluding the pre-alignment and recording);
- for the real pair also ``elastix_full_mm`` / ``elastix_full_s``: elastix on the original
  (unprepared) images, the setting of the issue's 7.1 mm reference.

Rows are appended to ``--out`` as they finish (an interrupted run resumes). Without ``itk-elastix``
the elastix columns are skipped with a message.

    .venv/bin/python benchmarks/bench_elastix.py [--profile demo] [--phantoms 3] [--iterations 50 100 250]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd

import reindir_nb as rn
from reindir_nb.evaluation.sweep import elastix_available, elastix_register
from reindir_nb.core.geometry import apply_affine
from reindir_nb.data.prealign import estimate_prealign
from reindir_nb.core.metrics import target_registration_error

RESULTS = Path(__file__).resolve().parent / "results"


def cases(profile: rn.Profile, phantoms: int) -> list[tuple[str, callable]]:
    """(name, loader of the raw pair) in benchmark order."""
    out = [("elastix-lung", lambda: rn.load_pair("bundled:elastix-lung")),
           ("thorax-ct", lambda: rn.load_pair("bundled:thorax-ct", seed=0, spacing_mm=profile.spacing_mm))]
    for style in ("dirlab", "nlst", "cbct"):
        for i in range(phantoms):
            out.append((f"phantom-{style}-{100 + i:03d}",
                        lambda style=style, i=i: rn.phantom.make_pair(seed=100 + i, style=style, profile=profile.name)))
    return out


def tre_mean(predicted_mm: np.ndarray, pair: rn.Pair) -> float:
    return target_registration_error(predicted_mm, pair.moving_landmarks)["mean"]


def bench_pair(name: str, raw: rn.Pair, profile: rn.Profile, iterations: list[int], use_elastix: bool) -> dict:
    pair = rn.prepare(raw, profile)
    row: dict = {"pair": name, "landmarks": len(pair.fixed_landmarks), "initial_mm": float(pair.initial_distances().mean())}
    t = time.perf_counter()
    affine = estimate_prealign(pair, "affine")
    row["affine_s"] = time.perf_counter() - t
    row["affine_mm"] = tre_mean(apply_affine(affine, pair.fixed_landmarks), pair)
    if use_elastix:
        t = time.perf_counter()
        pred = elastix_register(pair)
        row["elastix_s"] = time.perf_counter() - t
        row["elastix_mm"] = tre_mean(pred, pair)
        if name == "elastix-lung":
            t = time.perf_counter()
            pred = elastix_register(raw)
            row["elastix_full_s"] = time.perf_counter() - t
            row["elastix_full_mm"] = tre_mean(pred, raw)
    every = reduce(math.gcd, iterations)
    run = rn.register(pair, iterations=max(iterations), record_every=every, seed=0, prealign=affine,
                      snapshot_limit=1, progress=True)
    hist = run.history.set_index("iteration")
    for it in iterations:
        row[f"ccIDIR@{it}_mm"] = float(hist.loc[it, "tre_mean_mm"])
        row[f"ccIDIR@{it}_s"] = float(hist.loc[it, "seconds"])
    row["ccIDIR_fold_pct"] = 100.0 * run.folding_fraction()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--phantoms", type=int, default=3, help="pairs per phantom style")
    ap.add_argument("--iterations", type=int, nargs="+", default=[50, 100, 250])
    ap.add_argument("--only", nargs="*", default=None, help="pair names to run (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="result table (default results/bench_elastix_<profile>.csv)")
    args = ap.parse_args(argv)
    profile = rn.get_profile(args.profile)
    out = args.out or RESULTS / f"bench_elastix_{profile.name}.csv"
    use_elastix = elastix_available()
    if not use_elastix:
        print("itk-elastix is not installed (pip install 'reindir_nb[elastix]'): elastix columns skipped")
    done = pd.read_csv(out) if out.is_file() else pd.DataFrame()
    rows = done.to_dict("records")
    finished = set(done["pair"]) if len(done) else set()
    for name, load in cases(profile, args.phantoms):
        if (args.only and name not in args.only) or name in finished:
            continue
        row = bench_pair(name, load(), profile, sorted(args.iterations), use_elastix)
        rows.append(row)
        with rn.io.atomic_path(out) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        print(pd.DataFrame([row]).round(2).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    if table.empty:
        return 0
    table["group"] = table["pair"].str.replace(r"-\d+$", "", regex=True)
    pd.set_option("display.width", 250)
    print(f"\nprofile {profile.name}: {profile.spacing_mm} mm voxels, {profile.points_per_step} points/step; TRE mean (mm), wall (s)")
    print(table.drop(columns="group").round(2).to_string(index=False))
    cols = [c for c in table.columns if c.endswith("_mm") or c.endswith("_s")]
    print("\nper group (mean over pairs):")
    print(table.groupby("group", sort=False)[cols].mean().round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
