"""Outer steps per second of meta-training: one process with 2 threads vs 2 gloo ranks with 1
thread each (torch.distributed, the code path of ``torchrun --nproc_per_node=2``), for Reptile
and REINDIR (``encoder_update="averaged"`` in both, so both do the same maths), at smoke and
demo size. Rounds interleave serial and distributed runs; medians are printed.

    .venv/bin/python benchmarks/bench_distributed.py [--sizes smoke demo] [--rounds 3]
        [--steps 4] [--tasks-per-set 1]

A one-thread serial run is printed as well: on a 2-core machine that other work also uses, two
threads per process can be slower than one (the threads wait for each other), which the
2-thread baseline alone would hide.

Timing: from the training log, the seconds of outer steps 2..N (the first step, with its
one-off warm-up, is left out; process start, imports and data are never counted). With one task
per set (3 tasks per step) 2 ranks split the tasks 2 + 1, so the ideal gain is 1.5x over ONE
thread; the serial baseline has 2 threads, so on 2 cores the gain is capped further.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
import torch.multiprocessing as mp

import reindir_nb as rn
from reindir_nb.meta import distributed as mdist
from reindir_nb.meta import training as meta


def _settings(size: str, steps: int, tasks_per_set: int) -> dict:
    # demo keeps its inner loop (10 SGD steps of 2000 points); smoke is the test size
    return dict(outer_steps=steps, tasks_per_set=tasks_per_set, progress=False)


def _train(kind: str, cohorts, size: str, settings: dict, log: Path, distributed: bool):
    # REINDIR: the from-scratch recipe (its inner loop is what the ranks share; warm_start=False)
    extra = {"encoder_update": "averaged", "warm_start": False} if kind == "reindir" else {}
    train = meta.train_reptile if kind == "reptile" else meta.train_reindir
    return train(cohorts, size, log_path=log, distributed=distributed, **settings, **extra)


def _worker(rank, world, port, kind, cohorts, size, settings, log):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    warnings.simplefilter("ignore")
    mdist.setup("cpu", threads=1)
    _train(kind, cohorts, size, settings, Path(log), True)
    mdist.shutdown()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _steps_per_second(log: Path) -> float:
    seconds = pd.read_csv(log)["seconds"].to_numpy()
    return (len(seconds) - 1) / float(seconds[-1] - seconds[0])


def measure(kind: str, cohorts, size: str, settings: dict, config: str) -> float:
    """Outer steps per second of one run: ``config`` "serial2", "serial1" (threads) or "ranks2"."""
    log = Path(tempfile.mkdtemp()) / "log.csv"
    if config.startswith("serial"):
        torch.set_num_threads(int(config[-1]))
        _train(kind, cohorts, size, settings, log, False)
    else:
        mp.start_processes(_worker, args=(2, _port(), kind, cohorts, size, settings, str(log)), nprocs=2,
                           start_method="spawn")
    return _steps_per_second(log)


def sweep_runs_per_second(folder: Path, shards: int, seeds: int, iterations: int) -> float:
    """Runs per second of a smoke ccIDIR sweep over 1 held-out pair x ``seeds`` seeds: one process
    (2 threads), or ``shards`` shard processes at once (1 thread each) plus the merge."""
    import shutil
    import subprocess
    import sys

    shutil.rmtree(folder, ignore_errors=True)
    base = [sys.executable, "-m", "reindir_nb.sweep", "--workspace", str(folder), "--profile", "smoke",
            "--methods", "ccIDIR", "--styles", "nlst", "--held-out-per-style", "1", "--seeds", str(seeds),
            "--iterations", "0", str(iterations), "--quiet"]
    t0 = time.perf_counter()
    if shards == 1:
        subprocess.run([*base, "--shard", "0/1"], check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    else:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([*base, "--shard", f"{i}/{shards}"], env=env) for i in range(shards)]
        if any(q.wait() for q in procs):
            raise SystemExit("a sweep shard failed")
        subprocess.run([*base[:7], "--merge"], check=True)
    return seeds / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["smoke", "demo"], choices=["smoke", "demo"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="outer steps per run (the first is not timed)")
    ap.add_argument("--tasks-per-set", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=2, help="phantom pairs per style")
    ap.add_argument("--sweep-seeds", type=int, default=6, help="runs of the sweep measurement (0: skip it)")
    ap.add_argument("--sweep-iterations", type=int, default=20)
    ap.add_argument("--only-sweep", action="store_true", help="skip the training measurements")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, load average {os.getloadavg()}")
    t0 = time.perf_counter()
    for size in ([] if args.only_sweep else args.sizes):
        cohorts = {s: [rn.prepare(p, size) for p in rn.phantom.make_cohort(s, args.pairs, 0, size, progress=False)]
                   for s in ("dirlab", "nlst", "cbct")}
        settings = _settings(size, args.steps, args.tasks_per_set)
        prof = rn.get_profile(size)
        print(f"\n{size}: patch {prof.patch_size}, {prof.inner_steps} inner steps x {prof.inner_points} points, "
              f"{3 * args.tasks_per_set} tasks per outer step, {args.steps - 1} timed outer steps per run, "
              f"{args.rounds} rounds")
        configs = ("serial2", "ranks2", "serial1")
        for kind in ("reptile", "reindir"):
            rates: dict[str, list[float]] = {c: [] for c in configs}
            for _ in range(args.rounds):
                for config in configs:  # interleaved rounds
                    rates[config].append(measure(kind, cohorts, size, settings, config))
            med = {c: statistics.median(v) for c, v in rates.items()}
            print(f"  {kind:8s} serial 2 threads {med['serial2']:7.3f} | 2 ranks x 1 thread {med['ranks2']:7.3f} | "
                  f"serial 1 thread {med['serial1']:7.3f} steps/s | 2 ranks / serial-2-threads "
                  f"{med['ranks2'] / med['serial2']:4.2f}x, / serial-1-thread {med['ranks2'] / med['serial1']:4.2f}x")
            print("           rounds: " + "; ".join(f"{c} " + ", ".join(f"{r:.3f}" for r in v) for c, v in rates.items()))
    if args.sweep_seeds:
        import tempfile

        rates = {1: [], 2: []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for shards in (1, 2):  # interleaved rounds
                    rates[shards].append(sweep_runs_per_second(Path(tmp) / f"s{shards}", shards, args.sweep_seeds,
                                                               args.sweep_iterations))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"\nsweep (smoke ccIDIR, {args.sweep_seeds} runs of {args.sweep_iterations} steps, process start and "
              f"phantom preparation included): unsharded {med[1]:.3f} runs/s | 2 shards {med[2]:.3f} runs/s "
              f"(merge included) | {med[2] / med[1]:.2f}x")
        print("  rounds: " + "; ".join(f"{k} shard(s) " + ", ".join(f"{r:.3f}" for r in v) for k, v in rates.items()))
    print(f"\nload average after: {os.getloadavg()}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
