"""One row builder for every method: a :class:`Registration` -> result table rows.

Per recorded iteration: TRE of the cycle and forward estimates
(:func:`reindir_nb.core.metrics.target_registration_error`), det J computed ONCE and summarised
by :func:`reindir_nb.core.metrics.deformation_statistics` inside the fixed mask, the mean
uncertainty at the landmarks when the method has one, timings, and the ``diverged`` flag."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.metrics import deformation_statistics, target_registration_error
from ..core.pair import Pair
from .protocol import CONVERGED, Registration, UncertaintyAware

__all__ = ["registration_rows", "RowPoints"]

RowPoints = dict[int, np.ndarray]  # iteration -> predicted landmarks (N, 3) mm
_TRE = ("mean", "median", "p95", "std")
_NAN = float("nan")


def _tre_columns(predicted: np.ndarray, target: np.ndarray, prefix: str) -> dict[str, float]:
    stats = target_registration_error(predicted, target)
    return {f"{prefix}_{k}_mm": float(stats[k]) for k in _TRE}


def _nan_metrics() -> dict[str, float]:
    cols = {f"{p}_{k}_mm": _NAN for p in ("tre", "tre_fwd") for k in _TRE}
    return {**cols, "pct_folded": _NAN, "std_log_jac": _NAN, "uncertainty_mean_mm": _NAN}


def _diverged_at(reg: Registration, iteration: int) -> bool:
    probe = getattr(reg, "diverged_at", None)
    return bool(probe(iteration)) if callable(probe) else bool(getattr(reg, "diverged", False))


def registration_rows(
    reg: Registration, pair: Pair, iterations: Sequence[int], base: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], RowPoints, RowPoints]:
    """Rows of one run at ``iterations`` (or at :data:`CONVERGED` for converged methods), each
    starting with ``base`` (pair, method, seed, ... columns), plus the predicted landmarks per
    iteration (cycle, forward). A diverged run missing an iteration gets a NaN row there."""
    if not isinstance(reg, Registration):
        raise TypeError(f"{type(reg).__name__} does not implement the Registration protocol")
    recorded = list(reg.iterations)
    wanted = [CONVERGED] if recorded == [CONVERGED] else [int(i) for i in iterations]
    timings = reg.timings
    mask = None if pair.fixed_mask is None else pair.fixed_mask.array
    landmarks = pair.fixed_landmarks
    rows, cycle, forward = [], {}, {}
    for it in wanted:
        row = {**base, "iteration": it, "seconds": timings.seconds.get(it, _NAN), "step_seconds": timings.step_seconds,
               "encoder_seconds": timings.encoder_seconds}
        if it not in recorded:
            if not getattr(reg, "diverged", False):
                raise RuntimeError(f"{reg.name} on {pair.name}: iteration {it} was not recorded (have {recorded})")
            rows.append({**row, **_nan_metrics(), "diverged": True})
            continue
        cycle[it] = reg.transform_points(landmarks, iteration=it, estimate="cycle")
        forward[it] = reg.transform_points(landmarks, iteration=it, estimate="forward")
        row.update(_tre_columns(cycle[it], pair.moving_landmarks, "tre"))
        row.update(_tre_columns(forward[it], pair.moving_landmarks, "tre_fwd"))
        in_mask = getattr(reg, "deformation_statistics", None)  # INR runs: det J at the mask voxels only
        row.update(in_mask(it, mask) if callable(in_mask) and mask is not None
                   else deformation_statistics(reg.jacobian_determinant(it).array, mask))
        row["uncertainty_mean_mm"] = (float(np.mean(reg.uncertainty_at(landmarks, it)))
                                      if isinstance(reg, UncertaintyAware) else _NAN)
        row["diverged"] = _diverged_at(reg, it) or not np.isfinite(row["tre_mean_mm"])
        rows.append(row)
    return rows, cycle, forward
