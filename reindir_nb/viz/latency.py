"""Update latency of the linked explorers: drive each like a user and time its redraws (seconds).
Used by notebook 06 and ``benchmarks/bench_explorers.py``."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .explorer_base import Explorer
from .iteration_scrubber import IterationScrubber
from .landmark_explorer import LandmarkErrorExplorer
from .pair_explorer import PairExplorer

__all__ = ["update_latency"]


def update_latency(explorers: Sequence[Explorer], steps: int = 5) -> pd.DataFrame:
    """Drive each explorer like a user and time it: PairExplorer moves the slice slider over
    ``steps`` slices (each layer volume already cached after the first), LandmarkErrorExplorer picks
    the ``steps`` worst landmarks, IterationScrubber steps through up to ``steps`` recorded
    iterations twice (``first visit``: slice-wise INR evaluation; ``cached``: re-slice only).

    One row per explorer and action: ``own_median_s`` / ``own_max_s`` (the explorer's own redraw,
    ``update_seconds``) and ``wall_median_s`` (setting the widget value, linked explorers'
    redraws included), seconds. The linked state is restored afterwards."""
    rows = []
    for ex in explorers:
        state = ex.state
        saved = (state.axis, state.index, state.landmark, state.iteration)

        def drive(action: str, setter, values) -> None:
            own, wall = [], []
            for v in values:
                t0 = time.perf_counter()
                setter(v)
                wall.append(time.perf_counter() - t0)
                own.append(ex.update_seconds)
            rows.append({"explorer": type(ex).__name__, "action": action, "updates": len(values),
                         "own_median_s": float(np.median(own)), "own_max_s": float(np.max(own)),
                         "wall_median_s": float(np.median(wall))})

        if isinstance(ex, PairExplorer):
            n = ex.slice_w.max + 1
            start = ex.slice_w.value
            values = [int((start + 1 + k * max(1, n // (steps + 1))) % n) for k in range(steps)]
            ex.update(force=True)
            drive(f"slice slider ({ex.layer})", lambda v: setattr(ex.slice_w, "value", v), values)
        elif isinstance(ex, LandmarkErrorExplorer):
            values = [int(i) for i in ex.sort_order("after")[:steps]]
            drive("pick landmark", lambda v: setattr(ex.table_w, "value", v), values)
        elif isinstance(ex, IterationScrubber):
            values = list(ex.iteration_w.options)
            values = [values[int(round(k))] for k in np.linspace(0, len(values) - 1, min(steps, len(values)))]
            drive("iteration (first visit)", lambda v: setattr(ex.iteration_w, "value", v), values)
            drive("iteration (cached)", lambda v: setattr(ex.iteration_w, "value", v), values)
        else:
            raise ValueError(f"update_latency: unknown explorer {type(ex).__name__}")
        state.axis, state.index, state.landmark, state.iteration = saved
    return pd.DataFrame(rows)
