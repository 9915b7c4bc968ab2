"""Explorer update latency on a demo-size pair (issue: widgets stay interactive at demo size).

Registers one held-out demo phantom pair (ccIDIR, snapshots recorded), opens the three linked
explorers and times what a user does: the first switch to every PairExplorer layer (volumes
computed on demand: warp, det J, uncertainty, ...), the slice slider on a cached layer, picking
landmarks and scrubbing iterations (first visit and cached), via
:func:`reindir_nb.viz.latency.update_latency`. Seconds per update.

    .venv/bin/python benchmarks/bench_explorers.py [--profile demo] [--iterations 50] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd

import reindir_nb as rn
from reindir_nb.viz.explorers import IterationScrubber, LandmarkErrorExplorer, LinkedState, PairExplorer
from reindir_nb.viz.latency import update_latency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--record-every", type=int, default=10)
    ap.add_argument("--steps", type=int, default=8, help="updates timed per action")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")  # only when run as a script: importing this module leaves the backend alone
    prof = rn.get_profile(args.profile)
    pair = rn.prepare(rn.phantom.make_pair(10_000, "dirlab", prof.name), prof)
    t0 = time.perf_counter()
    run = rn.register(pair, iterations=args.iterations, record_every=args.record_every, prealign="none", progress=False)
    print(f"{pair.name}: grid {pair.fixed.grid.shape}, {len(run.history)} recorded iterations, "
          f"registration {time.perf_counter() - t0:.0f} s; torch threads {__import__('torch').get_num_threads()}")

    state = LinkedState()
    t0 = time.perf_counter()
    views = [PairExplorer(pair, run, state=state), LandmarkErrorExplorer(pair, run, state=state),
             IterationScrubber(pair, run, state=state)]
    print(f"opening the three linked explorers: {time.perf_counter() - t0:.2f} s")

    pair_view = views[0]
    first = []
    for layer in pair_view.layer_w.options:
        t = time.perf_counter()
        pair_view.layer_w.value = layer
        first.append({"layer": layer, "first_switch_s": time.perf_counter() - t})
    first = pd.DataFrame(first)
    print("\nPairExplorer: first switch to each layer (volume computed on demand), seconds")
    print(first.round(3).to_string(index=False))
    pair_view.layer_w.value = "det J"
    table = update_latency(views, steps=args.steps)
    print("\nupdate latency (seconds; own = the explorer's redraw, wall = setting the widget incl. linked redraws)")
    print(table.round(3).to_string(index=False))
    print(f"\nslowest median update: {table['wall_median_s'].max():.3f} s; "
          f"median over actions {statistics.median(table['wall_median_s']):.3f} s")


if __name__ == "__main__":
    main()
