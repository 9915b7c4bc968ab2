"""The ONE validator of point arrays: landmarks, keypoints, displacement vectors.

Points are ``(N, 3)`` float64 arrays in ``(x, y, z)`` order (world mm unless a function says
otherwise). :func:`as_points` turns anything array-like into that, or raises an error that names
the argument and its shape: it never reshapes, so a transposed ``(3, N)`` array or homogeneous
``(N, 4)`` coordinates are refused instead of being silently read as other points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_points"]


def _shape_hint(shape: tuple[int, ...]) -> str:
    """A fix for the common wrong shapes, or ''."""
    if len(shape) == 2 and shape[0] == 3 and shape[1] != 3:
        return "; it looks transposed ((3, N) coordinate rows): pass array.T"
    if len(shape) == 2 and shape[1] == 4:
        return "; (N, 4) looks like homogeneous coordinates or an id column: pass array[:, :3] (or the x y z columns)"
    if len(shape) == 1 and shape[0] == 3:
        return "; a single point must be given as a (1, 3) array: pass array.reshape(1, 3)"
    if len(shape) == 1 and shape[0] % 3 == 0 and shape[0] > 0:
        return "; a flat list is not reshaped: pass array.reshape(-1, 3) if it really holds x y z triples"
    return ""


def as_points(array: Any, name: str, allow_empty: bool = False, allow_nonfinite: bool = False) -> np.ndarray:
    """``array`` as a float64 ``(N, 3)`` point array (x, y, z).

    Raises TypeError (naming ``name``) when ``array`` is not numeric (None, strings, objects,
    complex numbers), ValueError (naming ``name`` and the shape) when it is not ``(N, 3)``, when
    ``N == 0`` (unless ``allow_empty``) or when it holds NaN/inf (unless ``allow_nonfinite``).
    """
    if array is None:
        raise TypeError(f"{name}: expected an (N, 3) array of x y z coordinates, got None")
    if isinstance(array, (str, bytes, dict, set)):
        raise TypeError(f"{name}: expected an (N, 3) array of x y z coordinates, got {type(array).__name__}")
    try:
        raw = np.asarray(array)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{name}: not a rectangular (N, 3) array ({err})") from None
    if raw.dtype == object or not np.issubdtype(raw.dtype, np.number):
        raise TypeError(f"{name}: expected numeric x y z coordinates, got an array of dtype {raw.dtype}")
    if np.issubdtype(raw.dtype, np.complexfloating):
        raise TypeError(f"{name}: coordinates must be real numbers, got dtype {raw.dtype}")
    if raw.ndim != 2 or raw.shape[1] != 3:
        raise ValueError(
            f"{name}: points must be an (N, 3) array in (x, y, z) order, got shape {raw.shape}{_shape_hint(raw.shape)}"
        )
    if raw.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: no points (shape {raw.shape}); at least one (x, y, z) point is needed")
    pts = raw.astype(np.float64, copy=False)
    if not allow_nonfinite and not np.all(np.isfinite(pts)):
        bad = np.flatnonzero(~np.all(np.isfinite(pts), axis=1))
        raise ValueError(
            f"{name}: {len(bad)} of {len(pts)} points hold NaN/inf (first: #{int(bad[0])} = {pts[bad[0]].tolist()})"
        )
    return pts
