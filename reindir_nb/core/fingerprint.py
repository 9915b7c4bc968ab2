"""Fingerprints: a short hash of everything that determines a result (a sweep row, a training
checkpoint), stored next to it so a resume can tell a finished result for the same inputs from a
stale one written for others.

A cell's settings are a JSON-able dict (method settings, seed, pair identity); its fingerprint
is a 12-character base32 hash of their canonical JSON. Tables store both, so a resumed sweep
can say exactly which setting differs (:func:`describe_difference`).

Models are identified by a hash of their parameters (``state()``, ``state_dict()`` or, for
other initialisers, their type, ``siren_config`` and public scalar attributes), pairs by their
name and a hash of their images, masks and landmarks (values and mm geometry).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.pair import Pair
from ..core.volume import Volume

__all__ = ["canonical", "content_hash", "pair_identity", "data_identity", "model_identity", "fingerprint",
           "describe_difference", "mismatch"]

_SHORT = 12          # characters of a fingerprint (base32: 60 bits)
_INLINE_ARRAY = 16   # arrays up to this many elements are stored as values, larger ones as a hash


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Feed ``obj`` into ``h`` deterministically (arrays by dtype, shape and bytes)."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().contiguous().numpy()
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"nd{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for k in sorted(obj, key=str):
            h.update(str(k).encode() + b":")
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(obj, Volume):
        _feed(h, {"array": obj.array, "spacing": np.asarray(obj.grid.spacing, float),
                  "origin": np.asarray(obj.grid.origin, float), "direction": np.asarray(obj.grid.direction, float)})
    else:
        h.update(repr(obj).encode())


def content_hash(obj: Any) -> str:
    """Short hash of arrays/tensors/volumes/nested containers (12 base32 characters)."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, obj)
    return _short(h.digest())


def _short(digest: bytes) -> str:
    return base64.b32encode(digest).decode().lower().rstrip("=")[:_SHORT]


def pair_identity(pair: Pair) -> dict[str, str]:
    """``{"name", "content"}``: the pair's name and a hash of its fixed/moving images, masks
    and landmarks (values and geometry)."""
    parts = {k: getattr(pair, k) for k in ("fixed", "moving", "fixed_mask", "moving_mask",
                                            "fixed_landmarks", "moving_landmarks")}
    if pair.coarse is not None:  # a fine view: the encoder's view and the INR frame come from it
        parts["coarse"] = pair_identity(pair.coarse)["content"]
    return {"name": pair.name, "content": content_hash({k: v for k, v in parts.items() if v is not None})}


def data_identity(pairs) -> str:
    """Hash of a set of pairs: their names and contents, independent of their order."""
    return content_hash(sorted(f"{p['name']}:{p['content']}" for p in map(pair_identity, pairs)))


def model_identity(model: Any) -> dict[str, Any]:
    """``{"type", "params"}`` of a learned model: its class name and a hash of its parameters
    (``state()`` of the kit's models, ``state_dict()`` of torch modules / ``.net``); other
    objects are identified by ``siren_config`` and their public scalar attributes."""
    if callable(getattr(model, "state", None)):
        state = model.state()
    elif callable(getattr(model, "state_dict", None)):
        state = model.state_dict()
    elif callable(getattr(getattr(model, "net", None), "state_dict", None)):
        state = {"net": model.net.state_dict(), "config": canonical(getattr(model, "config", None))}
    else:
        state = {k: v for k, v in vars(model).items()
                 if not k.startswith("_") and k != "encoder_seconds" and isinstance(v, (bool, int, float, str))}
        state["siren_config"] = canonical(getattr(model, "siren_config", None))
    return {"type": type(model).__name__, "params": content_hash(state)}


def canonical(value: Any) -> Any:
    """A JSON-able, deterministic form of a setting: dataclasses as dicts of their fields,
    small arrays as lists, large arrays/tensors as hashes, paths and devices as strings."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__,
                **{f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size <= _INLINE_ARRAY:
            return np.asarray(value, dtype=np.float64).round(12).tolist()
        return {"array": content_hash(value)}
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [canonical(v) for v in items]
    if isinstance(value, (Path, torch.device)):
        return str(value)
    return repr(value)


def fingerprint(settings: Mapping[str, Any]) -> str:
    """Short hash (12 base32 characters) of canonical JSON ``settings``."""
    text = json.dumps(canonical(settings), sort_keys=True, separators=(",", ":"))
    return _short(hashlib.blake2b(text.encode(), digest_size=16).digest())


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if not isinstance(value, str) else value


def describe_difference(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """What differs between two settings dicts, e.g. ``"lr 0.0001 in the table, 0.0003 now"``
    (nested keys dotted; ``pair.content`` differing means another pair of the same name)."""
    a, b = _flatten(canonical(stored)), _flatten(canonical(current))
    parts = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") == b.get(key, "<absent>"):
            continue
        old = _show(a[key]) if key in a else "not recorded"
        new = _show(b[key]) if key in b else "not set"
        note = " (another pair of the same name)" if key == "pair.content" else ""
        parts.append(f"{key} {old} in the table, {new} now{note}")
    return "; ".join(parts) or "fingerprints differ (settings identical: the table was edited?)"


def mismatch(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Differences between two flat ``{key: string}`` fingerprints, one line each
    (``"seed: 0 stored, 1 now"``); empty when they agree."""
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key, "<absent>"), current.get(key, "<absent>")
        if str(a) != str(b):
            out.append(f"{key}: {a} stored, {b} now")
    return out
