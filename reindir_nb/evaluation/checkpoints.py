"""The learned initialisers a training notebook wrote into a checkpoints folder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["load_models", "load_voxelmorph"]


def load_models(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, int] | None]:
    """The learned initialisers notebook 03 wrote into ``folder`` (``WORKSPACE/checkpoints``).

    With a ``folds.csv`` (pair -> fold that held it out, from :func:`reindir_nb.meta.train_folds`)
    and ``reptile_fold{i}.pt`` / ``reindir_fold{i}.pt`` next to it, the methods are per-fold
    dicts ``{fold: model}`` and the fold mapping is returned; otherwise ``reptile.pt`` and
    ``reindir.pt`` are single models and the mapping is None. Returns
    ``({"Reptile": ..., "REINDIR": ...}, folds)`` with only the methods found."""
    from ..meta import training as meta

    folder = Path(folder)
    methods: dict[str, Any] = {}
    for folds_csv in sorted(folder.rglob("folds.csv")):
        table = pd.read_csv(folds_csv)
        if not {"pair", "fold"} <= set(table.columns):
            raise ValueError(f"{folds_csv}: needs columns pair, fold")
        folds = {str(p): int(f) for p, f in zip(table["pair"], table["fold"])}
        for label, kind in (("Reptile", "reptile"), ("REINDIR", "reindir")):
            files = {int(m.group(1)): f for f in folds_csv.parent.glob(f"{kind}_fold*.pt")
                     if (m := re.fullmatch(rf"{kind}_fold(\d+)\.pt", f.name))}
            if files and set(files) >= set(folds.values()):
                methods[label] = {k: meta.load(f) for k, f in sorted(files.items())}
        if methods:
            return methods, folds
    for label, name in (("Reptile", "reptile.pt"), ("REINDIR", "reindir.pt")):
        if (folder / name).is_file():
            methods[label] = meta.load(folder / name)
    return methods, None


def load_voxelmorph(folder: str | os.PathLike, folds: dict[str, int] | None = None) -> Any:
    """The VoxelMorph peer saved in ``folder``: ``{fold: model}`` from ``voxelmorph_fold_{k}.pt``
    when ``folds`` is given and every fold has a file, else ``voxelmorph.pt``; None when absent."""
    from .voxelmorph import VoxelMorph

    folder = Path(folder)
    if folds is not None:
        files = {k: folder / f"voxelmorph_fold_{k}.pt" for k in sorted(set(folds.values()))}
        if files and all(f.is_file() for f in files.values()):
            return {k: VoxelMorph.load(f) for k, f in files.items()}
    single = folder / "voxelmorph.pt"
    return VoxelMorph.load(single) if single.is_file() else None
