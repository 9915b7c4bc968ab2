"""Benchmark of one optimisation step: fast forward-mode derivatives vs autograd double backward.

Same process, same batch of points, same weights; the methods are timed in interleaved rounds
(A, B, A, B, ...) so machine load hits both alike, and the headline is the median of the
per-round ratios. Steps (forward + backward + optimiser step, SIREN 3-256-256-256-3):

* ``ccidir-jacobian``: one ccIDIR step = 2 INRs + symmetric Jacobian + cycle + NCC
  (:meth:`reindir_nb.inr.objective.Objective.terms`, the code registration runs) + Adam;
* ``bending``: one INR with NCC + bending energy (the Hessian path) + Adam;
* ``ccidir-bending`` (fast path only unless ``--ccidir-bending-baseline``; its double backward
  needs ~13 GB at 10000 points): the ccIDIR step with the bending regulariser.

"Speed of light" (SOL) = the step's necessary matmul FLOPs (value + 3 tangents [+ 6 second
tangents] through every layer, forward and backward, see
:func:`reindir_nb.inr.derivatives.jet_matmul_flops`) divided by the fp32 matmul peak measured in
this run (best of many ``10000x256 @ 256x256``). ``xSOL`` = time / SOL.

    .venv/bin/python benchmarks/bench_step.py [--points 10000] [--rounds 5] [--json out.json]

Allocator: the Hessian path allocates arrays > 32 MB each step; glibc serves those with fresh
mmaps (page faults every step). ``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4``
(Debian ``libtcmalloc-minimal4``) avoids that; the header says whether it is active.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from reindir_nb import derivatives, inr, losses
from reindir_nb.core.device import make_generator
from reindir_nb.inr.objective import LossWeights, Objective, Problem, apply_matrix, sample_image
from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume

SIZES = (3, 256, 256, 256, 3)


def synthetic_problem(seed: int, shape: int = 64) -> Problem:
    """A smooth random image pair (1.5 mm voxels, the moving one shifted) with an ellipsoid mask."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.standard_normal((shape,) * 3), 3.0).astype(np.float32)
    moving = np.roll(base, 3, axis=2)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, shape),) * 3, indexing="ij")
    mask = ((x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 0.9) ** 2 <= 1.0).astype(np.uint8)
    vol = lambda a: Volume.from_array(a, spacing=(1.5, 1.5, 1.5))  # noqa: E731
    pair = Pair(vol(base), vol(moving), fixed_mask=vol(mask), moving_mask=vol(mask), name="bench")
    return Problem.from_pair(pair)


def matmul_peak(dtype: torch.dtype, repeats: int = 20) -> tuple[float, float]:
    """Best FLOP/s of a ``10000x256 @ 256x256`` matmul in ``dtype``: (by wall clock, by process
    CPU time). CPU time excludes time spent waiting for a busy machine's cores."""
    gen = make_generator(0)
    a = torch.randn(10_000, 256, generator=gen).to(dtype)
    w = torch.randn(256, 256, generator=gen).to(dtype)
    for _ in range(3):
        a @ w
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        a @ w
        best_wall = min(best_wall, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    flops = 2.0 * 10_000 * 256 * 256
    return flops / best_wall, flops / max(best_cpu, 1e-9)


def make_step(kind: str, method: str, problem: Problem, xf: torch.Tensor, xb: torch.Tensor) -> Callable[[], None]:
    """A closure doing one full step (loss, backward, Adam) on its own copy of the weights."""
    fwd = inr.init_siren(generator=make_generator(0))
    bwd = inr.init_siren(generator=make_generator(1))
    for p in fwd + bwd:
        p.requires_grad_(True)
    weights = LossWeights()
    if kind == "bending":
        opt = torch.optim.Adam(fwd, lr=1e-4)
        lin = problem.fixed_to_mm[:3, :3]

        def loss() -> torch.Tensor:
            v, _, hess = derivatives.hessian(fwd, xf, 30.0, method=method)
            warped = sample_image(problem.moving, apply_matrix(problem.f2m, xf + v))
            ncc = losses.ncc_loss(sample_image(problem.fixed, xf), warped)
            return ncc + weights.bending * losses.bending_energy(losses.hessian_to_mm(hess, lin))
    else:
        opt = torch.optim.Adam(fwd + bwd, lr=1e-4)
        objective = Objective(regulariser="jacobian" if kind == "ccidir-jacobian" else "bending", weights=weights,
                              derivative_method=method)

        def loss() -> torch.Tensor:
            return objective.terms(fwd, bwd, problem, xf, xb, 30.0)["total"]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return step


def step_flops(kind: str, points: int) -> float:
    """Necessary matmul FLOPs of one step (forward + backward)."""
    if kind == "bending":
        return derivatives.jet_matmul_flops(points, SIZES, order=2)
    order = 1 if kind == "ccidir-jacobian" else 2
    # per side: the regularised INR with its jet + the other INR at the mapped points (cycle)
    return 2 * (derivatives.jet_matmul_flops(points, SIZES, order) + derivatives.jet_matmul_flops(points, SIZES, 0))


def time_interleaved(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Run every step once to warm up, then ``rounds`` times in interleaved order.
    Returns per step the wall-clock and process-CPU seconds of every round."""
    for step in steps.values():
        step()
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t, c = time.perf_counter(), time.process_time()
            step()
            times[name]["wall"].append(time.perf_counter() - t)
            times[name]["cpu"].append(time.process_time() - c)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=64, help="voxels per side of the synthetic images")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["ccidir-jacobian", "bending", "ccidir-bending"])
    ap.add_argument("--ccidir-bending-baseline", action="store_true",
                    help="also time the ccIDIR bending step by double backward (~13 GB at 10000 points)")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    problem = synthetic_problem(args.seed, args.image_size)
    gen = make_generator(args.seed)
    xf = problem.sample_points(args.points, gen, "fixed")
    xb = problem.sample_points(args.points, gen, "moving")
    preload = os.environ.get("LD_PRELOAD", "")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.points} points, "
          f"SIREN {'-'.join(map(str, SIZES))}, omega 30, allocator: {'tcmalloc' if 'tcmalloc' in preload else 'default'}, "
          f"load average {os.getloadavg()[0]:.1f} (this machine has {os.cpu_count()} cores)")

    peaks = [matmul_peak(torch.float32)]
    plans: list[tuple[str, list[str]]] = []
    if "ccidir-jacobian" not in args.skip:
        plans.append(("ccidir-jacobian", ["forward", "autograd"]))
    if "bending" not in args.skip:
        plans.append(("bending", ["forward", "autograd"]))
    if "ccidir-bending" not in args.skip:
        plans.append(("ccidir-bending", ["forward"] + ["autograd"] * args.ccidir_bending_baseline))
    results: dict[str, dict] = {}
    for kind, variants in plans:
        steps = {m: make_step(kind, m, problem, xf, xb) for m in variants}
        times = time_interleaved(steps, args.rounds)
        peaks.append(matmul_peak(torch.float32))
        results[kind] = {"times_s": times, "flops": step_flops(kind, args.points)}
        del steps

    peak = {"wall": max(p[0] for p in peaks), "cpu": max(p[1] for p in peaks)}
    print(f"fp32 matmul peak (10000x256 @ 256x256, best in this run): {peak['wall'] / 1e9:.0f} GFLOP/s by wall clock, "
          f"{peak['cpu'] / 1e9:.0f} GFLOP/s of process CPU time")
    print("xSOL = median time / (step matmul FLOPs / peak); the CPU-time columns discount waiting for busy cores")
    print(f"{'step':<16} {'method':<14} {'best ms':>8} {'median ms':>9} {'SOL ms':>7} {'xSOL':>6} {'cpu ms':>8} {'xSOL cpu':>8}")
    summary: dict[str, dict] = {}
    for kind, res in results.items():
        sol = {clock: res["flops"] / peak[clock] for clock in ("wall", "cpu")}
        summary[kind] = {"sol_ms": 1e3 * sol["wall"], "sol_cpu_ms": 1e3 * sol["cpu"], "methods": {}}
        for name, ts in res["times_s"].items():
            best, med, cpu = min(ts["wall"]), statistics.median(ts["wall"]), statistics.median(ts["cpu"])
            summary[kind]["methods"][name] = {
                "best_ms": 1e3 * best, "median_ms": 1e3 * med, "xsol_median": med / sol["wall"], "xsol_best": best / sol["wall"],
                "cpu_median_ms": 1e3 * cpu, "xsol_cpu": cpu / sol["cpu"],
                "times_ms": [1e3 * t for t in ts["wall"]], "cpu_times_ms": [1e3 * t for t in ts["cpu"]]}
            print(f"{kind:<16} {name:<14} {1e3 * best:8.0f} {1e3 * med:9.0f} {1e3 * sol['wall']:7.0f} {med / sol['wall']:6.2f} "
                  f"{1e3 * cpu:8.0f} {cpu / sol['cpu']:8.2f}")
        if "autograd" in res["times_s"]:
            base = res["times_s"]["autograd"]
            for name in (n for n in res["times_s"] if n != "autograd"):
                ratios = [a / f for a, f in zip(base["wall"], res["times_s"][name]["wall"])]
                cpu_ratio = statistics.median(base["cpu"]) / statistics.median(res["times_s"][name]["cpu"])
                summary[kind]["methods"][name]["speedup_vs_autograd"] = statistics.median(ratios)
                summary[kind]["methods"][name]["speedup_vs_autograd_cpu"] = cpu_ratio
                print(f"{kind:<16} {name:<14} {statistics.median(ratios):.2f}x faster than double backward "
                      f"(median of per-round wall ratios; range {min(ratios):.2f}-{max(ratios):.2f}; by CPU time {cpu_ratio:.2f}x)")
    if args.json:
        payload = {"points": args.points, "threads": torch.get_num_threads(), "fp32_peak_gflops": peak["wall"] / 1e9,
                   "fp32_peak_cpu_gflops": peak["cpu"] / 1e9, "load_average": os.getloadavg(),
                   "allocator_preload": preload,
                   "steps": summary}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False, suffix=".tmp") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(fh.name, args.json)


if __name__ == "__main__":
    main()
