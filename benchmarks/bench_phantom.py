"""Phantom and bundled thorax-ct generation: time per pair and initial landmark distances.

    .venv/bin/python benchmarks/bench_phantom.py [--seeds 10] [--repeats 3]

Times are medians over ``--repeats`` pairs (different seeds) and are also printed as a ratio to
a baseline measured in the same run: one trilinear resampling (``scipy.ndimage.map_coordinates``)
of a volume on the same grid, i.e. "generating a pair costs N plain warps". Distances are the
mean over a pair's landmarks of ``|moving - fixed|`` (mm), summarised over ``--seeds`` seeds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.ndimage import map_coordinates

from reindir_nb import bundled, phantom


def _baseline_warp_s(shape: tuple[int, int, int], repeats: int = 3) -> float:
    rng = np.random.default_rng(0)
    vol = rng.normal(size=shape).astype(np.float32)
    coords = np.indices(shape, dtype=np.float64) + rng.uniform(-2, 2, size=(3, *shape))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        map_coordinates(vol, coords, order=1, mode="nearest")
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds for the landmark-distance summary")
    ap.add_argument("--repeats", type=int, default=3, help="pairs timed per style and profile")
    args = ap.parse_args()

    print("generation time per pair (median), and in units of one trilinear warp of the same grid")
    print(f"{'style':8s} {'profile':7s} {'grid (z,y,x)':16s} {'spacing mm':16s} {'seconds':>8s} {'x warp':>7s}")
    for profile in ("smoke", "demo"):
        for style in phantom.STYLES:
            grid = phantom.phantom_grid(style, profile)
            base = _baseline_warp_s(grid.shape)
            phantom.make_pair(100, style, profile)  # warm-up (imports, caches)
            times = []
            for r in range(args.repeats):
                t = time.perf_counter()
                phantom.make_pair(r, style, profile)
                times.append(time.perf_counter() - t)
            med = float(np.median(times))
            print(f"{style:8s} {profile:7s} {str(grid.shape):16s} {str(grid.spacing):16s} {med:8.3f} {med / base:7.1f}")

    ct = bundled.load_thorax_ct()
    base = _baseline_warp_s(ct.grid.shape)
    bundled.thorax_ct_pair(seed=100)  # warm-up: lung mask and landmark detection are cached
    t = time.perf_counter()
    bundled.thorax_ct_pair(seed=0)
    sec = time.perf_counter() - t
    print(f"{'thorax':8s} {'2 mm':7s} {str(ct.grid.shape):16s} {str(ct.grid.spacing):16s} {sec:8.3f} {sec / base:7.1f}"
          "  (detection cached; first call adds mask + detection)")

    print(f"\ninitial landmark distance (mm), seeds 0-{args.seeds - 1}, smoke profile (resolution does not change it)")
    header = ("dataset", "mean of means", "min mean", "max mean", "max single", "lung-base shift")
    print(f"{header[0]:14s} {header[1]:>13s} {header[2]:>9s} {header[3]:>9s} {header[4]:>10s} {header[5]:>16s}")
    for style in phantom.STYLES:
        pairs = [phantom.make_pair(s, style, "smoke") for s in range(args.seeds)]
        means = np.array([p.initial_distances().mean() for p in pairs])
        amps = np.array([p.meta["amplitude_mm"] for p in pairs])
        top = max(p.initial_distances().max() for p in pairs)
        print(f"{'phantom-' + style:14s} {means.mean():13.2f} {means.min():9.2f} {means.max():9.2f} {top:10.1f} "
              f"{amps.min():7.1f}-{amps.max():.1f}")
    pairs = [bundled.thorax_ct_pair(seed=s, spacing_mm=4.0) for s in range(args.seeds)]
    means = np.array([p.initial_distances().mean() for p in pairs])
    amps = np.array([p.meta["amplitude_mm"] for p in pairs])
    top = max(p.initial_distances().max() for p in pairs)
    print(f"{'thorax-ct':14s} {means.mean():13.2f} {means.min():9.2f} {means.max():9.2f} {top:10.1f} "
          f"{amps.min():7.1f}-{amps.max():.1f}   ({len(pairs[0].fixed_landmarks)} landmarks, {bundled.LABEL})")


if __name__ == "__main__":
    main()
