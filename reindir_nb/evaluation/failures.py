"""Failure ranking: the pairs of a sweep table ordered worst first by three symptoms (TRE after
optimisation, REINDIR's zero-shot gain over Reptile, cycle uncertainty). Errors in mm."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.metrics import per_pair_gain

__all__ = ["rank_failures"]


def rank_failures(
    table: pd.DataFrame,
    method: str | None = None,
    learned: str = "REINDIR",
    baseline: str = "Reptile",
    gain_iteration: int = 0,
    regulariser: str | None = "jacobian",
    by: str = "tre",
) -> pd.DataFrame:
    """Rank the pairs of a sweep table (:func:`reindir_nb.evaluate.sweep`) worst first.

    Per pair (medians over seeds): ``tre_after_mm`` — ``tre_mean_mm`` of ``method`` (default:
    ``learned`` if in the table, else ``ccIDIR``, else the first method) at its last recorded
    iteration; ``reindir_gain_mm`` — ``baseline`` minus ``learned`` TRE at ``gain_iteration``
    (NaN when either is missing; small = REINDIR did not help); ``uncertainty_mm`` —
    ``uncertainty_mean_mm`` of ``method`` at its last iteration; ``worst_seed`` — the seed with the
    largest TRE after. Ranks (1 = worst): ``rank_tre`` (largest TRE), ``rank_gain`` (smallest
    gain), ``rank_uncertainty`` (largest); ``mean_rank`` over the available ranks. Sorted by
    ``by`` in ``"tre"``, ``"gain"``, ``"uncertainty"``, ``"overall"`` (mean rank).
    """
    if by not in ("tre", "gain", "uncertainty", "overall"):
        raise ValueError(f"by must be 'tre', 'gain', 'uncertainty' or 'overall', got {by!r}")
    missing = [c for c in ("pair", "method", "seed", "iteration", "tre_mean_mm") if c not in table.columns]
    if missing:
        raise ValueError(f"rank_failures: results table lacks columns {missing}")
    t = table.copy()
    t["iteration"] = t["iteration"].astype(int)
    if regulariser is not None and "regulariser" in t.columns and (t["regulariser"].astype(str) == regulariser).any():
        t = t[t["regulariser"].astype(str) == regulariser]
    methods = list(dict.fromkeys(t["method"]))
    if method is None:
        method = learned if learned in methods else ("ccIDIR" if "ccIDIR" in methods else methods[0])
    if method not in methods:
        raise ValueError(f"rank_failures: method {method!r} not in the table (have {methods})")
    m = t[(t["method"] == method) & (t["iteration"] >= 0)]
    if m.empty:
        raise ValueError(f"rank_failures: no iterative rows for method {method!r}")
    last = m.groupby("pair")["iteration"].transform("max")
    final = m[m["iteration"] == last]
    per_pair = final.groupby("pair")
    out = pd.DataFrame({
        "tre_after_mm": per_pair["tre_mean_mm"].median(),
        "iteration": per_pair["iteration"].first(),
        "worst_seed": final.loc[final.groupby("pair")["tre_mean_mm"].idxmax()].set_index("pair")["seed"].astype(int),
    })
    out["uncertainty_mm"] = per_pair["uncertainty_mean_mm"].median() if "uncertainty_mean_mm" in final else np.nan
    if "dataset" in t.columns:
        out.insert(0, "dataset", t.groupby("pair")["dataset"].first())
    out["reindir_gain_mm"] = per_pair_gain(t, learned, baseline, gain_iteration).reindex(out.index)
    out["rank_tre"] = out["tre_after_mm"].rank(ascending=False, method="min")
    out["rank_gain"] = out["reindir_gain_mm"].rank(ascending=True, method="min")
    out["rank_uncertainty"] = out["uncertainty_mm"].rank(ascending=False, method="min")
    out["mean_rank"] = out[["rank_tre", "rank_gain", "rank_uncertainty"]].mean(axis=1, skipna=True)
    out["method"] = method
    key = {"tre": ("tre_after_mm", False), "gain": ("reindir_gain_mm", True),
           "uncertainty": ("uncertainty_mm", False), "overall": ("mean_rank", True)}[by]
    out = out.reset_index().sort_values([key[0], "pair"], ascending=[key[1], True], na_position="last", kind="stable")
    return out.reset_index(drop=True)
