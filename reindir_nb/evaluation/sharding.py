"""Sharding a sweep: a deterministic slice of the sorted (pair, method, seed) grid per worker.

Shard ``i`` of ``n`` takes cells ``i, i+n, i+2n, ...`` of the sorted cell list (round robin) and
writes its own resumable table next to the unsharded one: ``sweep.csv`` -> ``sweep.shard-0-of-2.csv``.
``shard="auto"`` reads torchrun's ``RANK`` / ``WORLD_SIZE`` (unsharded when they are not set)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["resolve_shard", "shard_from_env", "shard_cells", "shard_path", "base_results_path", "shard_tables"]

T = TypeVar("T")
_SHARD = re.compile(r"^(?P<stem>.*)\.shard-(?P<i>\d+)-of-(?P<n>\d+)$")


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` of a torchrun launch, ``(0, 1)`` when not launched so."""
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return 0, 1
    try:
        return resolve_shard((int(env["RANK"]), int(env["WORLD_SIZE"])))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"shard='auto': RANK={env.get('RANK')!r} / WORLD_SIZE={env.get('WORLD_SIZE')!r} "
                         f"are not a valid rank and world size ({exc})") from None


def resolve_shard(shard: Any) -> tuple[int, int]:
    """``(index, count)`` from None (unsharded), ``"auto"`` (torchrun env), ``"I/N"`` or ``(I, N)``;
    ValueError unless ``0 <= I < N``."""
    if shard is None:
        return 0, 1
    if isinstance(shard, str):
        if shard == "auto":
            return shard_from_env()
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if m is None:
            raise ValueError(f"shard {shard!r}: expected 'I/N' (e.g. '0/4') or 'auto'")
        shard = (int(m.group(1)), int(m.group(2)))
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard {shard!r}: expected (index, count), 'I/N' or 'auto'") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {shard!r}: need 0 <= index < count")
    return index, count


def shard_cells(cells: Sequence[T], index: int, count: int) -> list[T]:
    """Round robin: cells ``index, index + count, ...`` of the (already sorted) ``cells``."""
    return list(cells[index::count])


def base_results_path(path: str | os.PathLike) -> Path:
    """The unsharded table a shard table belongs to (``x.shard-0-of-2.csv`` -> ``x.csv``)."""
    path = Path(path)
    m = _SHARD.match(path.stem)
    return path.with_name(m.group("stem") + path.suffix) if m else path


def shard_path(path: str | os.PathLike, index: int, count: int) -> Path:
    """The table shard ``index`` of ``count`` writes (``path`` itself when unsharded)."""
    path = base_results_path(path)
    return path if count == 1 else path.with_name(f"{path.stem}.shard-{index}-of-{count}{path.suffix}")


def shard_tables(path: str | os.PathLike) -> list[Path]:
    """The shard tables that exist next to the unsharded table ``path``, sorted by shard index."""
    base = base_results_path(path)
    found = []
    for p in base.parent.glob(f"{base.stem}.shard-*-of-*{base.suffix}"):
        m = _SHARD.match(p.stem)
        if m and m.group("stem") == base.stem:
            found.append((int(m.group("n")), int(m.group("i")), p))
    return [p for _, _, p in sorted(found)]
