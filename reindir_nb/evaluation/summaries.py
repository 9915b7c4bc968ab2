"""Summaries of a sweep table: median [range] per dataset x method x iteration, counting
diverged runs explicitly, and the paired Wilcoxon test of two methods."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .protocol import CONVERGED

__all__ = ["summary_table", "format_summary", "wilcoxon_table"]


def _diverged(table: pd.DataFrame, metric: str) -> pd.Series:
    """True where a row's run diverged (its flag, or a non-finite ``metric``)."""
    flag = table["diverged"].fillna(False).astype(bool) if "diverged" in table else pd.Series(False, index=table.index)
    return flag | ~np.isfinite(table[metric].astype(float))


def summary_table(
    table: pd.DataFrame, iterations: Sequence[int] = (0, 25, 100), metric: str = "tre_mean_mm"
) -> pd.DataFrame:
    """Median and range (min-max) of ``metric`` over all pairs x seeds, per dataset x method x
    iteration (converged methods appear under their ``-1`` label). Long format with columns
    dataset, method, iteration, median, min, max, n_pairs, n_seeds, n_runs, n_diverged.
    Diverged runs (``diverged`` flag or non-finite ``metric``) are left out of median/min/max
    and counted in ``n_diverged``; ``n_runs`` counts all runs."""
    if table.empty:
        raise ValueError("summary_table: empty results table")
    if metric not in table:
        raise ValueError(f"summary_table: no column {metric!r} in the table")
    wanted = {int(i) for i in iterations} | {CONVERGED}
    t = table[table["iteration"].astype(int).isin(wanted)]
    bad = _diverged(t, metric)
    t = t.assign(_value=t[metric].astype(float).where(~bad), _diverged=bad.astype(int))
    out = (t.groupby(["dataset", "method", "iteration"])
           .agg(median=("_value", "median"), min=("_value", "min"), max=("_value", "max"),
                n_pairs=("pair", "nunique"), n_seeds=("seed", "nunique"), n_runs=("pair", "size"),
                n_diverged=("_diverged", "sum"))
           .reset_index())
    return out.sort_values(["dataset", "method", "iteration"]).reset_index(drop=True)


def format_summary(summary: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Wide, readable version of :func:`summary_table`: rows dataset x method, one column per
    iteration holding ``"median [min-max]"`` (mm), with ``" (k diverged)"`` appended when runs
    diverged; column ``converged`` for iteration -1."""
    s = summary.copy()
    n_div = s["n_diverged"].astype(int) if "n_diverged" in s else pd.Series(0, index=s.index)
    cells = []
    for m, lo, hi, k in zip(s["median"], s["min"], s["max"], n_div):
        text = f"{m:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]" if np.isfinite(m) else "-"
        cells.append(text + (f" ({k} diverged)" if k else ""))
    s["cell"] = cells
    s["column"] = [("converged" if i == CONVERGED else f"it {i}") for i in s["iteration"].astype(int)]
    wide = s.pivot_table(index=["dataset", "method"], columns="column", values="cell", aggfunc="first")
    order = sorted([c for c in wide.columns if c != "converged"], key=lambda c: int(c.split()[1]))
    order += [c for c in wide.columns if c == "converged"]
    return wide[order].fillna("")


def wilcoxon_table(
    table: pd.DataFrame, a: str = "REINDIR", b: str = "Reptile", iteration: int = 0, metric: str = "tre_mean_mm"
) -> pd.DataFrame:
    """Wilcoxon signed-rank test of ``a`` against ``b`` per dataset at ``iteration``, paired by
    pair (each pair's value is its median over its non-diverged seeds; pairs where either method
    has none are left out). Columns: dataset, n_pairs, median_a, median_b, median_diff (a - b,
    mm), statistic, p_value (two-sided; NaN when every difference is zero or there are no pairs)."""
    from scipy.stats import wilcoxon

    rows = []
    sel = table[table["iteration"].astype(int) == int(iteration)]
    sel = sel[~_diverged(sel, metric)] if len(sel) else sel
    for ds, g in sel.groupby("dataset"):
        va = g[g["method"] == a].groupby("pair")[metric].median()
        vb = g[g["method"] == b].groupby("pair")[metric].median()
        common = va.index.intersection(vb.index)
        xa, xb = va[common].to_numpy(), vb[common].to_numpy()
        stat, p = float("nan"), float("nan")
        if len(common) and np.any(xa != xb):
            res = wilcoxon(xa, xb)
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append({"dataset": ds, "a": a, "b": b, "iteration": int(iteration), "n_pairs": int(len(common)),
                     "median_a": float(np.median(xa)) if len(xa) else float("nan"),
                     "median_b": float(np.median(xb)) if len(xb) else float("nan"),
                     "median_diff": float(np.median(xa - xb)) if len(xa) else float("nan"),
                     "statistic": stat, "p_value": p})
    return pd.DataFrame(rows)
