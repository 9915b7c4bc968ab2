"""Resumable, shardable sweeps over pairs x methods x seeds: ONE loop over (pair, method, seed)
cells, each run once to ``max(iterations)`` steps and turned into rows by the one row builder
(:func:`reindir_nb.evaluation.rows.registration_rows`). Table columns: :mod:`.results`.

Every row stores the fingerprint of its cell (method settings, seed, pair name + content hash);
resuming with different settings raises :class:`FingerprintMismatch` naming what differs.
Methods that ran to their own convergence (elastix) are stored with ``iteration = -1``
(:data:`CONVERGED`); deterministic methods (VoxelMorph, elastix) run for the first seed only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.files import ensure_writable
from ..core.metrics import deformation_statistics  # noqa: F401  (public re-export: rn.evaluate)
from ..core.pair import Pair
from .elastix import elastix_available, elastix_config, elastix_register  # noqa: F401  (re-exported)
from ..core.fingerprint import canonical, describe_difference, fingerprint, pair_identity
from .methods import Method, SweepConfig, resolve_method
from .protocol import CONVERGED
from .results import (CELL_KEY, RESULT_COLUMNS, complete_cells, load_points, load_results,  # noqa: F401
                      points_file, save_points, sort_results, write_grid, write_results)
from .rows import registration_rows
from .sharding import resolve_shard, shard_cells, shard_path

__all__ = ["CONVERGED", "RESULT_COLUMNS", "FingerprintMismatch", "SweepCell", "SweepOutput", "sweep_grid", "sweep"]


class FingerprintMismatch(ValueError):
    """A resumed table holds runs computed with other settings (or another pair of that name)."""


@dataclass(frozen=True)
class SweepCell:
    """One (pair, method, seed) registration of a sweep, with its fingerprint."""

    pair: Pair
    label: str
    seed: int
    fold: Any
    method: Method
    settings: dict[str, Any]
    fingerprint: str
    regulariser: str

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.pair.name, self.label, self.seed, self.regulariser)

    def describe(self) -> str:
        return f"pair {self.pair.name}, method {self.label}, seed {self.seed}"


def _check_inputs(pairs: Sequence[Pair], methods: Mapping[str, Any], seeds: list[int], iterations: list[int]) -> None:
    if not iterations or iterations[0] < 0:
        raise ValueError(f"iterations must be non-negative counts, got {iterations}")
    if not methods:
        raise ValueError("sweep: no methods given")
    if not seeds:
        raise ValueError("sweep: no seeds given")
    for p in pairs:
        if not p.has_landmarks:
            raise ValueError(f"sweep: pair {p.name!r} has no landmarks to evaluate")
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep: pair names must be unique, got duplicates in {names}")


def sweep_grid(
    pairs: Sequence[Pair], methods: Mapping[str, Any], seeds: Sequence[int], config: SweepConfig,
    folds: Mapping[str, Any] | None = None,
) -> list[SweepCell]:
    """Every (pair, method, seed) cell, sorted by (pair name, method label, seed); deterministic
    methods get the first seed only. Raises ValueError for specs that cannot be resolved."""
    cells: list[SweepCell] = []
    identities: dict[int, Any] = {}
    for pair in pairs:
        fold = None if folds is None else folds.get(pair.name)
        identity = pair_identity(pair)
        for label, spec in methods.items():
            method = resolve_method(str(label), spec, pair, fold, config, identities)
            for seed in (seeds[:1] if method.deterministic else seeds):
                settings = {"method": method.settings, "seed": int(seed), "pair": identity}
                cells.append(SweepCell(pair, str(label), int(seed), fold, method, settings, fingerprint(settings),
                                       config.regulariser))
    return sorted(cells, key=lambda c: c.key)


def _check_fingerprints(table: pd.DataFrame, cells: Sequence[SweepCell], path: Path) -> None:
    """FingerprintMismatch naming every cell whose stored rows have another fingerprint."""
    if table.empty:
        return
    groups = {(str(k[0]), str(k[1]), int(k[2]), str(k[3])): g for k, g in table.groupby(CELL_KEY)}
    problems = []
    for cell in cells:
        g = groups.get(cell.key)
        if g is None or set(g["fingerprint"]) == {cell.fingerprint}:
            continue
        text = next((s for s in g["settings"] if s), "")
        if not text:
            why = "no fingerprint in the table (written by an older version of the kit)"
        else:
            why = describe_difference(json.loads(text), canonical(cell.settings))
        problems.append(f"  {cell.describe()}: {why}")
    if problems:
        shown = problems[:10] + ([f"  ... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise FingerprintMismatch(
            f"{path}: {len(problems)} run(s) in the table were computed with other settings than this sweep's:\n"
            + "\n".join(shown)
            + "\nPass resume=False to recompute them and overwrite this table (only the kit's own result files "
              "are rewritten), or give another results_path.")


def _base_row(cell: SweepCell) -> dict[str, Any]:
    pair = cell.pair
    return {"pair": pair.name, "dataset": pair.dataset, "method": cell.label,
            "fold": -1 if cell.fold is None else cell.fold, "seed": cell.seed, "regulariser": cell.regulariser,
            "initial_tre_mean_mm": float(pair.initial_distances().mean()),
            "fingerprint": cell.fingerprint,
            "settings": json.dumps(canonical(cell.settings), sort_keys=True, separators=(",", ":"))}


def _replace_rows(table: pd.DataFrame, key: tuple, rows: list[dict[str, Any]]) -> pd.DataFrame:
    new = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if table.empty:
        return new
    same = np.ones(len(table), dtype=bool)
    for column, value in zip(CELL_KEY, key):
        col = table[column]
        same &= (col.astype(int) == value).to_numpy() if column == "seed" else (col.astype(str) == value).to_numpy()
    return pd.concat([table[~same], new], ignore_index=True)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    extra = [c for c in table.columns if c not in RESULT_COLUMNS]
    return sort_results(table.reindex(columns=RESULT_COLUMNS + extra))


def _table_regulariser(regulariser: str, objective: Any) -> str:
    """The ``regulariser`` column: ``objective.regulariser`` when an objective is given (a
    different explicit ``regulariser`` is an error)."""
    if objective is None:
        return regulariser
    carried = str(getattr(objective, "regulariser", regulariser))
    if regulariser not in ("jacobian", carried):
        raise ValueError(f"sweep: regulariser={regulariser!r} but objective.regulariser={carried!r}; give one")
    return carried


@dataclass(frozen=True)
class SweepOutput:
    """Where a sweep writes and what it resumes: the table ``results_path`` (default
    ``workspace/results/sweep.csv``); ``resume`` keeps the complete runs already in it;
    ``shard=(index, count)`` (or ``"I/N"``, or ``"auto"``: torchrun's RANK/WORLD_SIZE) runs
    the round-robin slice ``index::count`` of the sorted cells into ``<stem>.shard-I-of-N.csv``."""

    results_path: str | os.PathLike | None = None
    workspace: str | os.PathLike = "workspace"
    resume: bool = True
    shard: Any = None

    def table_path(self) -> Path:
        """The table's path without the shard suffix."""
        if self.results_path is not None:
            return Path(self.results_path)
        return Path(self.workspace) / "results" / "sweep.csv"


_OUTPUT_FIELDS = ("results_path", "workspace", "resume", "shard")
_CONFIG_FIELDS = ("regulariser", "prealign", "device", "voxelmorph_prealign", "elastix_kwargs")


def sweep(
    pairs: Sequence[Pair],
    methods: Mapping[str, Any],
    seeds: Iterable[int] = range(10),
    iterations: Sequence[int] = (0, 25, 100),
    folds: Mapping[str, Any] | None = None,
    output: SweepOutput | None = None,
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """Run every method for every seed on every pair and return the results table.

    ``methods`` maps a label to ``"random"`` (ccIDIR from random init), an initialiser
    (Reptile template / REINDIR model: any :class:`~reindir_nb.inr.registration.Initialiser`),
    ``{fold: spec}`` (per-fold models; each pair uses the model of ``folds[pair.name]``, the
    fold that held it out), a callable ``pair -> spec``, a VoxelMorph model, or ``"elastix"``.
    Each (pair, method, seed) is ONE registration to ``max(iterations)`` steps, recorded at
    every requested count.

    ``options``: the sweep's ``regulariser`` (default "jacobian"), ``prealign`` (default
    "auto"), ``device``, ``voxelmorph_prealign`` (pair name -> 4x4), ``elastix_kwargs``;
    :class:`SweepOutput`'s fields (``results_path=``, ``workspace=``, ``resume=``, ``shard=``)
    when ``output`` is not given; everything else goes to :func:`reindir_nb.register`.

    The table is rewritten atomically after every finished run; predicted landmarks go to
    ``<results stem>_points/``. Resuming keeps complete runs already in the file (a run with
    missing rows is redone) after checking their fingerprints: a mismatch raises
    :class:`FingerprintMismatch` naming what differs; ``resume=False`` starts the table over
    (only the kit's own result files are rewritten). Shards combine with
    :func:`reindir_nb.evaluate.merge_results`. ``table.attrs["computed"]`` lists the
    (pair, method, seed) runs this call computed.
    """
    given = {k: options.pop(k) for k in _OUTPUT_FIELDS if k in options}
    if given and output is not None:
        raise TypeError(f"sweep: give output= or {sorted(given)}, not both")
    output = output or SweepOutput(**given)
    settings = {k: options.pop(k) for k in _CONFIG_FIELDS if k in options}
    register_kwargs = options
    regulariser, prealign = settings.get("regulariser", "jacobian"), settings.get("prealign", "auto")
    iterations = sorted({int(i) for i in iterations})
    seeds = [int(s) for s in seeds]
    _check_inputs(pairs, methods, seeds, iterations)
    regulariser = _table_regulariser(regulariser, register_kwargs.get("objective"))
    config = SweepConfig(iterations=tuple(iterations), regulariser=regulariser, prealign=prealign,
                         device=settings.get("device"), register_kwargs=dict(register_kwargs),
                         voxelmorph_prealign=settings.get("voxelmorph_prealign"),
                         elastix=elastix_config(dict(settings.get("elastix_kwargs") or {})))
    index, count = resolve_shard(output.shard)
    path = shard_path(output.table_path(), index, count)

    ensure_writable(path.parent, f"the sweep table {path.name}")  # before any registration runs
    grid = sweep_grid(pairs, methods, seeds, config, folds)
    mine = shard_cells(grid, index, count)
    table = load_results(path) if output.resume and path.exists() else pd.DataFrame(columns=RESULT_COLUMNS)
    _check_fingerprints(table, mine, path)
    grid_hash = fingerprint({"cells": [[*c.key, c.fingerprint] for c in grid], "iterations": iterations})
    write_grid(path, [(c.key, c.fingerprint) for c in mine], iterations, (index, count), grid_hash)
    done = complete_cells(table, iterations)

    from tqdm.auto import tqdm

    todo = [c for c in mine if c.key not in done]
    desc = f"sweep ({regulariser})" + (f" shard {index}/{count}" if count > 1 else "")
    computed: list[tuple[str, str, int]] = []
    for cell in tqdm(todo, disable=not progress, desc=desc):
        reg = cell.method(cell.pair, cell.seed)
        rows, cycle, forward = registration_rows(reg, cell.pair, iterations, _base_row(cell))
        if cycle:
            save_points(points_file(path, *cell.key[:3], cell.regulariser), cycle, forward)
        table = _replace_rows(table, cell.key, rows)
        write_results(_ordered(table), path)
        computed.append(cell.key[:3])
    table = _ordered(table)
    write_results(table, path)  # also when nothing was left to do (an empty shard still has its table)
    table.attrs["computed"] = computed
    table.attrs["path"] = str(path)
    table.attrs["shard"] = (index, count)
    return table
