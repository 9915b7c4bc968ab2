"""The whole ``reindir-nb register`` command against elastix, one after the other, on the same cases.

Cases (real anatomy): bundled thorax-ct pairs (real CT, simulated breathing; motion seeds the kit
never trains on) in both breathing directions, a CBCT-like variant (noisy moving image, cropped
field of view) and the real ``bundled:elastix-lung`` pair. Each case is written to files and
registered by the command as a user runs it (a subprocess: start-up, reading, lung masks,
pre-alignment, optimisation with its convergence stop, every output file), and by elastix
(affine + B-spline, the kit's :func:`reindir_nb.evaluation.elastix_register`, in this process).
Printed per case: TRE (mean, p95) and wall seconds of both, their ratios, the steps the command
ran and why it stopped, and the seconds the command's optimisation needed to reach elastix's TRE
(from its history, TRE recorded every 5 steps). The table goes to ``--out`` (CSV).

``--max-steps N`` also runs the command with ``--no-stop --iterations N`` per case: the TRE the
convergence stop gives up against a fixed budget (the stop's acceptance: at most 5 % worse).

    .venv/bin/python benchmarks/bench_cli_vs_elastix.py [--seeds 101 102] [--no-noisy] [--no-lung]
        [--max-steps 250] [--out benchmarks/results/bench_cli_vs_elastix.csv]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

import reindir_nb as rn
from reindir_nb.core.metrics import target_registration_error
from reindir_nb.core.volume import Volume
from reindir_nb.data.preprocess import swap_direction
from reindir_nb.evaluation import elastix_available, elastix_register

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [str(Path(sys.executable).with_name("reindir-nb")), "register"]


def cbct_like(pair: rn.Pair, seed: int, noise_hu: float = 40.0, keep: float = 0.75) -> rn.Pair:
    """The moving image as a cone-beam CT would give it: Gaussian noise (``noise_hu``) and a field
    of view cropped to the central ``keep`` of its slices; landmarks outside it are dropped."""
    moving = pair.moving
    nz = moving.grid.shape[0]
    z0 = int(round(nz * (1 - keep) / 2))
    z1 = nz - z0
    origin = moving.grid.index_to_world(np.array([[0.0, 0.0, z0]]))[0]
    grid = rn.Grid((z1 - z0, *moving.grid.shape[1:]), moving.grid.spacing, tuple(origin), moving.grid.direction)
    rng = np.random.default_rng(seed)
    array = moving.array[z0:z1].astype(np.float32) + rng.normal(0.0, noise_hu, (z1 - z0, *moving.grid.shape[1:]))
    cropped = Volume(array.astype(np.float32), grid, f"{moving.name}, noisy, cropped")
    inside = grid.contains(pair.moving_landmarks, margin_voxels=0.0)
    return replace(pair, moving=cropped, moving_mask=None, fixed_mask=None, ground_truth=None,
                   fixed_landmarks=pair.fixed_landmarks[inside], moving_landmarks=pair.moving_landmarks[inside],
                   name=f"{pair.name}-cbct-like")


def cases(args) -> list[tuple[str, rn.Pair]]:
    out = []
    for seed in args.seeds:
        pair = rn.load_pair("bundled:thorax-ct", seed=seed)
        out += [(f"thorax-ct-{seed}", pair), (f"thorax-ct-{seed}-reverse", swap_direction(pair))]
    if not args.no_noisy:
        seed = args.seeds[-1] + 1
        out.append((f"thorax-ct-{seed}-cbct-like", cbct_like(rn.load_pair("bundled:thorax-ct", seed=seed), seed)))
    if not args.no_lung:
        out.append(("elastix-lung", rn.load_pair("bundled:elastix-lung")))
    return out


def write_case(pair: rn.Pair, folder: Path) -> list[str]:
    """The pair as a user has it: two images and two landmark files (mm); the command's arguments."""
    rn.io.write_image(pair.fixed, folder / "fixed.nii.gz")
    rn.io.write_image(pair.moving, folder / "moving.nii.gz")
    rn.io.write_points_csv(pair.fixed_landmarks, folder / "fixed.csv")
    rn.io.write_points_csv(pair.moving_landmarks, folder / "moving.csv")
    return [str(folder / "fixed.nii.gz"), str(folder / "moving.nii.gz"), "--fixed-landmarks", str(folder / "fixed.csv"),
            "--moving-landmarks", str(folder / "moving.csv"), "--units", "mm", "--quiet"]


def run_command(arguments: list[str], out: Path) -> tuple[dict, float]:
    t = time.perf_counter()
    done = subprocess.run([*COMMAND, *arguments, "--out", str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode not in (0, 3):
        raise SystemExit(f"reindir-nb failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads((out / "report.json").read_text()), wall


def seconds_to(history: pd.DataFrame, tre: float) -> float:
    reached = history[history["tre_mean_mm"] <= tre]
    return float(reached["seconds"].iloc[0]) if len(reached) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102])
    ap.add_argument("--no-noisy", action="store_true", help="without the CBCT-like case")
    ap.add_argument("--no-lung", action="store_true", help="without bundled:elastix-lung")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="also run the command with --no-stop --iterations N (the stop's cost in TRE)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_cli_vs_elastix.csv")
    args = ap.parse_args()
    if not elastix_available():
        raise SystemExit("itk-elastix is not installed: pip install itk-elastix (the 'elastix' extra)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rn_cli_vs_elastix_") as tmp:
        for name, pair in cases(args):
            folder = Path(tmp) / name
            folder.mkdir()
            arguments = write_case(pair, folder)
            report, wall = run_command([*arguments, "--record-every", "5"], folder / "out")
            history = pd.read_csv(folder / "out" / "history.csv")
            t = time.perf_counter()
            predicted = elastix_register(pair)
            elastix_wall = time.perf_counter() - t
            elastix = target_registration_error(predicted, pair.moving_landmarks)
            final = report["landmarks"]["final_cycle"]
            row = {"case": name, "landmarks": len(pair.fixed_landmarks),
                   "initial_mm": report["landmarks"]["initial"]["mean"],
                   "cli_tre_mm": final["mean"], "cli_p95_mm": final["p95"], "cli_wall_s": wall,
                   "cli_steps": report["iterations"], "cli_stop": report["run_settings"]["stopped"]["reason"],
                   "cli_optimisation_s": report["timings"]["optimisation_seconds"],
                   "cli_outputs_s": report["timings"]["outputs_seconds"],
                   "cli_pct_folded": report["deformation"]["pct_folded"],
                   "elastix_tre_mm": elastix["mean"], "elastix_p95_mm": elastix["p95"], "elastix_wall_s": elastix_wall,
                   "cli_s_to_elastix_tre": seconds_to(history, elastix["mean"])}
            if args.max_steps:
                fixed, fixed_wall = run_command([*arguments, "--no-stop", "--iterations", str(args.max_steps)],
                                                folder / "out_fixed")
                row.update(fixed_steps_tre_mm=fixed["landmarks"]["final_cycle"]["mean"], fixed_steps_wall_s=fixed_wall)
                row["stop_tre_vs_fixed"] = row["cli_tre_mm"] / row["fixed_steps_tre_mm"]
            row["tre_ratio"] = row["cli_tre_mm"] / row["elastix_tre_mm"]
            row["wall_ratio"] = row["cli_wall_s"] / row["elastix_wall_s"]
            rows.append(row)
            print(pd.DataFrame([row]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"\nreindir-nb register (defaults) vs elastix, one after the other ({args.out}):")
    cols = ["case", "initial_mm", "cli_tre_mm", "elastix_tre_mm", "tre_ratio", "cli_wall_s", "elastix_wall_s",
            "wall_ratio", "cli_steps", "cli_stop", "cli_outputs_s", "cli_s_to_elastix_tre"]
    cols += [c for c in ("fixed_steps_tre_mm", "stop_tre_vs_fixed") if c in table]
    print(table[cols].round(3).to_string(index=False))
    print(f"median TRE ratio {table['tre_ratio'].median():.2f} (range {table['tre_ratio'].min():.2f}-"
          f"{table['tre_ratio'].max():.2f}); median wall ratio {table['wall_ratio'].median():.2f} "
          f"(range {table['wall_ratio'].min():.2f}-{table['wall_ratio'].max():.2f})")


if __name__ == "__main__":
    main()
