"""Registration metrics, the one home: landmark TRE (mm), deformation statistics of det J, and
the per-pair gain of one method over another in a results table.

Layer 0 because test-time runs record TRE in their history while they optimise; sweeps, figures
and explorers use the same functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["landmark_errors", "target_registration_error", "deformation_statistics", "per_pair_gain"]


def landmark_errors(predicted_mm: np.ndarray, target_mm: np.ndarray) -> np.ndarray:
    """Per-landmark Euclidean error ``|| predicted - target ||`` (mm) of two (N, 3) arrays."""
    p, t = np.asarray(predicted_mm, float), np.asarray(target_mm, float)
    if p.shape != t.shape or p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"landmark errors need two (N, 3) arrays of the same shape, got {p.shape} and {t.shape}")
    return np.linalg.norm(p - t, axis=1)


def target_registration_error(predicted_mm: np.ndarray, target_mm: np.ndarray) -> dict[str, float]:
    """TRE statistics in mm: per landmark ``|| predicted - target ||`` -> mean, median, std, p95, max."""
    d = landmark_errors(predicted_mm, target_mm)
    if d.size == 0:
        raise ValueError("TRE of an empty landmark set")
    return {
        "mean": float(d.mean()), "median": float(np.median(d)), "std": float(d.std()),
        "p95": float(np.percentile(d, 95)), "max": float(d.max()),
    }


def deformation_statistics(det: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """``pct_folded`` (% of voxels with det J <= 0) and ``std_log_jac`` (std of log det J, det
    clipped at 1e-9: the standard definition; not the Learn2Reg "+3" variant), inside ``mask``
    when given. One det J evaluation serves both numbers."""
    d = np.asarray(det, dtype=np.float64)
    if mask is not None:
        d = d[np.asarray(mask) > 0]
    d = d.ravel()
    if d.size == 0:
        raise ValueError("deformation_statistics: no voxels (empty mask?)")
    return {"pct_folded": float(100.0 * np.mean(d <= 0)),
            "std_log_jac": float(np.log(np.clip(d, 1e-9, None)).std())}


def per_pair_gain(table: pd.DataFrame, method: str, baseline: str, iteration: int,
                  metric: str = "tre_mean_mm") -> pd.Series:
    """Per pair: seed-median ``metric`` of ``baseline`` minus that of ``method`` at ``iteration``
    (mm; positive = ``method`` is better). Pairs missing either method are NaN."""
    at = table[table["iteration"].astype(int) == int(iteration)]
    a = at[at["method"] == baseline].groupby("pair")[metric].median()
    b = at[at["method"] == method].groupby("pair")[metric].median()
    return a.sub(b)
