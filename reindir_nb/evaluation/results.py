"""The kit's result files: sweep tables (CSV), the stored landmark predictions of each run
(``<table stem>_points/*.npz``), the grid manifest of each table (``<table stem>.grid.json``:
the cells it is meant to hold), and merging shard tables.

Table columns (:data:`RESULT_COLUMNS`), one row per pair x method x seed x recorded iteration:

* ``seconds``: cumulative test-time optimisation time (s) at that iteration (0 at iteration 0);
  ``encoder_seconds``: one-off encoder/network forward time (s); ``step_seconds``: mean time of
  one optimisation step of that run (s) — the :data:`TIMING_COLUMNS`;
* ``tre_mean_mm`` / ``tre_median_mm`` / ``tre_p95_mm`` / ``tre_std_mm``: landmark error of the
  cycle estimate (the only estimate of non-INR methods), ``tre_fwd_*`` of the forward estimate,
  ``initial_tre_mean_mm`` without registration;
* ``pct_folded`` (% voxels with det J <= 0), ``std_log_jac`` (std of log det J) inside the fixed
  mask, ``uncertainty_mean_mm`` (mean cycle uncertainty at the landmarks, mm; NaN without one);
* ``diverged``: the run reported divergence or its TRE is not finite;
* ``fingerprint``: short hash of ``settings`` (JSON: method settings, seed, pair name and content
  hash) — what determines the row's numbers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.files import atomic_path
from .protocol import CONVERGED
from .sharding import base_results_path

__all__ = ["RESULT_COLUMNS", "TIMING_COLUMNS", "CELL_KEY", "load_results", "write_results", "load_points",
           "save_points", "points_file", "grid_file", "write_grid", "read_grid", "complete_cells", "merge_results"]

RESULT_COLUMNS: list[str] = [
    "pair", "dataset", "method", "fold", "seed", "regulariser", "iteration",
    "seconds", "step_seconds", "encoder_seconds",
    "initial_tre_mean_mm", "tre_mean_mm", "tre_median_mm", "tre_p95_mm", "tre_std_mm",
    "tre_fwd_mean_mm", "tre_fwd_median_mm", "tre_fwd_p95_mm", "tre_fwd_std_mm",
    "pct_folded", "std_log_jac", "uncertainty_mean_mm", "diverged", "fingerprint", "settings",
]
TIMING_COLUMNS: list[str] = ["seconds", "step_seconds", "encoder_seconds"]
CELL_KEY: list[str] = ["pair", "method", "seed", "regulariser"]  # one registration run
_SORT = [*CELL_KEY, "iteration"]
_TEXT = {"pair": str, "dataset": str, "method": str, "regulariser": str, "fingerprint": str, "settings": str}

Cell = tuple[str, str, int, str]


# ------------------------------------------------------------------------------ tables
def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a sweep table (CSV); ValueError naming the file if it is not one. Tables of older
    versions get ``regulariser=""``, ``diverged`` from non-finite TRE, empty fingerprints."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=_TEXT)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable results table ({exc})") from exc
    missing = [c for c in ("pair", "method", "seed", "iteration", "tre_mean_mm") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: results table lacks columns {missing}")
    for column in ("regulariser", "fingerprint", "settings", "dataset"):
        table[column] = table[column].fillna("").astype(str) if column in table else ""
    if "diverged" not in table:
        table["diverged"] = ~np.isfinite(table["tre_mean_mm"].astype(float))
    table["diverged"] = table["diverged"].fillna(False).astype(bool)
    return table


def sort_results(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in the kit's canonical order: pair, method, seed, regulariser, iteration."""
    return table.sort_values(_SORT, kind="stable").reset_index(drop=True)


def write_results(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` (canonical row order) atomically as CSV."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sort_results(table).to_csv(tmp, index=False)
    return path


def cells_of(table: pd.DataFrame) -> list[Cell]:
    """The (pair, method, seed, regulariser) runs present in ``table``."""
    if table.empty:
        return []
    keys = table[CELL_KEY].drop_duplicates()
    return [(str(p), str(m), int(s), str(r)) for p, m, s, r in keys.itertuples(index=False)]


def complete_cells(table: pd.DataFrame, iterations: Iterable[int]) -> set[Cell]:
    """Runs of ``table`` holding every iteration in ``iterations`` (or their converged row)."""
    wanted = {int(i) for i in iterations}
    done: set[Cell] = set()
    if table.empty:
        return done
    for key, g in table.groupby(CELL_KEY):
        its = {int(i) for i in g["iteration"]}
        if wanted <= its or CONVERGED in its:
            done.add((str(key[0]), str(key[1]), int(key[2]), str(key[3])))
    return done


# ------------------------------------------------------------------------------ points
def _points_dir(results_path: Path) -> Path:
    base = base_results_path(results_path)  # shards share the unsharded table's folder
    return base.parent / f"{base.stem}_points"


def points_file(results_path: str | os.PathLike, pair: str, method: str, seed: int, regulariser: str) -> Path:
    """Where the sweep stores one run's predicted landmarks."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{pair}__{method}__{regulariser}__seed{seed}")
    return _points_dir(Path(results_path)) / f"{safe}.npz"


def save_points(path: Path, cycle: Mapping[int, np.ndarray], forward: Mapping[int, np.ndarray]) -> None:
    """Store predictions (N, 3) mm per iteration, both estimates, atomically."""
    its = sorted(cycle)
    with atomic_path(path) as tmp:
        np.savez(tmp, iterations=np.array(its), points=np.stack([cycle[i] for i in its]),
                 points_forward=np.stack([forward[i] for i in its]))


def load_points(
    results_path: str | os.PathLike, pair: str, method: str, seed: int = 0, regulariser: str = "jacobian",
    iteration: int = 0, estimate: str = "cycle",
) -> np.ndarray:
    """Predicted moving-space positions (N, 3) mm of a pair's fixed landmarks that the sweep
    stored for one run at ``iteration`` (``estimate`` "cycle" or "forward")."""
    path = points_file(results_path, pair, method, seed, regulariser)
    if not path.exists():
        raise ValueError(f"{path}: no stored landmark predictions for {pair}/{method}/seed {seed}")
    with np.load(path) as data:
        its = [int(i) for i in data["iterations"]]
        if iteration not in its:
            raise ValueError(f"{path}: iteration {iteration} not recorded (have {its})")
        key = "points" if estimate == "cycle" else "points_forward"
        return np.asarray(data[key][its.index(iteration)], dtype=np.float64)


# ------------------------------------------------------------------------------ grids
def grid_file(results_path: str | os.PathLike) -> Path:
    """The grid manifest of a table: ``sweep.csv`` -> ``sweep.grid.json``."""
    path = Path(results_path)
    return path.with_name(f"{path.stem}.grid.json")


def write_grid(results_path: str | os.PathLike, cells: Sequence[tuple[Cell, str]], iterations: Sequence[int],
               shard: tuple[int, int], grid: str) -> Path:
    """Record which cells (with fingerprints) the table at ``results_path`` is meant to hold,
    its recorded ``iterations``, its ``shard`` (index, count) and the whole grid's hash."""
    info = {"shard": list(shard), "grid": grid, "iterations": [int(i) for i in iterations],
            "cells": [[*cell, fp] for cell, fp in cells]}
    path = grid_file(results_path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info, indent=0))
    return path


def read_grid(results_path: str | os.PathLike) -> dict[str, Any] | None:
    """The grid manifest of a table, or None when it has none."""
    path = grid_file(results_path)
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        info["cells"] = [((str(p), str(m), int(s), str(r)), str(fp)) for p, m, s, r, fp in info["cells"]]
        info["shard"] = (int(info["shard"][0]), int(info["shard"][1]))
        return info
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a sweep grid manifest ({exc})") from None


def _name(cell: Cell) -> str:
    pair, method, seed, reg = cell
    return f"{pair}/{method}/seed {seed}" + (f"/{reg}" if reg else "")


def _listing(items: Sequence[str], limit: int = 8) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def merge_results(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Combine shard tables (or any sweep tables) into one, in canonical row order.

    ValueError naming them when a run (pair, method, seed, regulariser) appears in more than one
    table or twice at one iteration, when the tables' grid manifests come from different sweeps
    or shard counts, when a shard table is missing, or when a cell a manifest lists is missing or
    incomplete in the tables."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("merge_results: no tables given")
    loaded = [(p, load_results(p)) for p in paths]  # a path given twice counts twice
    owners: dict[Cell, list[Path]] = {}
    for p, t in loaded:
        for cell in cells_of(t):
            owners.setdefault(cell, []).append(p)
        twice = t[t.duplicated(_SORT, keep=False)]
        if len(twice):
            raise ValueError(f"{p}: duplicated rows for {_listing(sorted({_name(c) for c in cells_of(twice)}))}")
    dups = sorted(f"{_name(c)} (in {', '.join(str(q) for q in qs)})" for c, qs in owners.items() if len(qs) > 1)
    if dups:
        raise ValueError(f"merge_results: {len(dups)} run(s) appear in more than one table: {_listing(dups)}")

    tables = dict(loaded)
    manifests = {p: g for p in tables if (g := read_grid(p)) is not None}
    if manifests:
        if len({g["grid"] for g in manifests.values()}) > 1 or len({g["shard"][1] for g in manifests.values()}) > 1:
            found = ", ".join(f"{p.name}: shard {g['shard'][0]}/{g['shard'][1]}, grid {g['grid']}"
                              for p, g in manifests.items())
            raise ValueError(f"merge_results: the tables come from different sweeps or shard counts ({found})")
        count = next(iter(manifests.values()))["shard"][1]
        have = {g["shard"][0] for g in manifests.values()}
        lost = sorted(set(range(count)) - have)
        if lost:
            raise ValueError(f"merge_results: missing shard table(s) {', '.join(f'{i} of {count}' for i in lost)} "
                             f"(have {sorted(have)})")
    merged = pd.concat([t for _, t in loaded], ignore_index=True)
    missing: list[str] = []
    for p, g in manifests.items():
        done = complete_cells(tables[p], g["iterations"])
        missing += [f"{_name(cell)} (shard {g['shard'][0]} of {g['shard'][1]}, {p.name})"
                    for cell, _ in g["cells"] if cell not in done]
    if missing:
        raise ValueError(f"merge_results: {len(missing)} run(s) missing or incomplete: {_listing(sorted(missing))}")
    merged = sort_results(merged.reindex(columns=[c for c in RESULT_COLUMNS if c in merged.columns]
                                         + [c for c in merged.columns if c not in RESULT_COLUMNS]))
    merged.attrs["paths"] = [str(p) for p in paths]
    return merged
