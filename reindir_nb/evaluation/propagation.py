"""Ensemble keypoint propagation (paper Appendix B): many ccIDIR runs, the most confident kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.pair import Pair
from ..inr import registration as _registration

__all__ = ["KeypointPropagation", "propagate_keypoints"]


@dataclass
class KeypointPropagation:
    """Result of :func:`propagate_keypoints` (paper Appendix B).

    ``points``: propagated keypoints (N, 3) in moving world mm (median over the kept runs);
    ``run_uncertainty_mm``: mean cycle uncertainty of every run (mm); ``kept``: indices of the
    ``keep`` most confident runs; ``mean_kept_uncertainty_mm``; ``excluded``: True when that mean
    exceeds ``max_uncertainty_mm``; ``spread_mm``: per-point median distance of the kept runs'
    predictions to the propagated point."""

    points: np.ndarray
    run_uncertainty_mm: np.ndarray
    kept: np.ndarray
    mean_kept_uncertainty_mm: float
    excluded: bool
    max_uncertainty_mm: float
    spread_mm: np.ndarray
    run_points: np.ndarray = field(repr=False)


def propagate_keypoints(
    pair: Pair,
    points: np.ndarray,
    runs: int = 10,
    keep: int = 5,
    max_uncertainty_mm: float = 5.0,
    iterations: int = 2500,
    init: Any = "random",
    seed: int = 0,
    progress: bool = True,
    **register_kwargs: Any,
) -> KeypointPropagation:
    """Propagate fixed-space keypoints (N, 3) mm to the moving image with an ensemble of
    ``runs`` ccIDIR registrations (seeds ``seed .. seed+runs-1``, ``iterations`` steps each;
    the paper used 10 runs of 2500). Runs are ranked by their mean cycle uncertainty at the
    keypoints (distance between the forward estimate and the inverted backward one); the
    keypoints are propagated by the per-point median over the ``keep`` most confident runs, and
    the pair is flagged ``excluded`` when those runs' mean uncertainty exceeds
    ``max_uncertainty_mm``. ``register_kwargs`` go to :func:`reindir_nb.register` (e.g.
    ``regulariser="bending"``, ``points_per_step=``)."""
    from tqdm.auto import tqdm

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"{pair.name}: keypoints must be a non-empty (N, 3) array in mm, got shape {pts.shape}")
    if not 1 <= keep <= runs:
        raise ValueError(f"keep must be in 1..runs, got keep={keep}, runs={runs}")
    preds, unc = [], []
    for k in tqdm(range(runs), disable=not progress, desc=f"propagate {pair.name}"):
        run = _registration.register(pair, init=init, iterations=iterations, seed=seed + k,
                                     progress=False, **register_kwargs)
        preds.append(run.transform_points(pts, estimate="cycle"))
        unc.append(float(run.point_uncertainty(pts).mean()))
    run_points = np.stack(preds)
    run_unc = np.asarray(unc)
    kept = np.argsort(run_unc, kind="stable")[:keep]
    propagated = np.median(run_points[kept], axis=0)
    spread = np.median(np.linalg.norm(run_points[kept] - propagated[None], axis=2), axis=0)
    mean_kept = float(run_unc[kept].mean())
    return KeypointPropagation(points=propagated, run_uncertainty_mm=run_unc, kept=kept,
                               mean_kept_uncertainty_mm=mean_kept, excluded=bool(mean_kept > max_uncertainty_mm),
                               max_uncertainty_mm=float(max_uncertainty_mm), spread_mm=spread, run_points=run_points)
