"""Argument checks at the public boundary: one helper per kind of value, each raising a
TypeError/ValueError whose message names the argument (``what``) and what was given."""

from __future__ import annotations

import math
import numbers

__all__ = ["require_int", "require_float"]


def require_int(value, what: str, minimum: int | None = None) -> int:
    """``value`` as an int: integers (and integral numpy scalars) only, never bools, strings or
    floats such as 2.7 (which would silently be truncated); ``>= minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value


def require_float(value, what: str, minimum: float | None = None, positive: bool = False) -> float:
    """``value`` as a finite float (ints allowed, bools and strings not); ``> 0`` when
    ``positive``, ``>= minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{what} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value
