"""One function per figure of the paper, drawn from a sweep's results table.

Every function returns a matplotlib ``Figure`` and, when ``folder`` is given, saves it as
``<folder>/<name>.png`` and ``.pdf`` (written atomically). Figure 3 also has a plotly version
(:func:`registration_error_curves_plotly`) saved as HTML next to the static files.

Inputs are the tidy table of :func:`reindir_nb.evaluate.sweep` (one row per pair x method x
seed x iteration; errors in mm, times in seconds) and, for the qualitative figures, a
:class:`~reindir_nb.pair.Pair` with the predicted positions of its fixed landmarks in the
moving image (world mm) per method, as stored by the sweep (``evaluate.load_points``).

Qualitative panels show a slice of the MOVING image (slicing convention of
:mod:`reindir_nb.viz.slicing`: coronal and sagittal with superior on top): the true moving
landmarks (pink) and the method's prediction ``phi(l_fixed)`` (teal, the paper's colour of the
fixed landmarks), joined by black lines whose length is the residual error. Without
registration ``phi`` is the identity, so teal are the fixed landmarks. Colours come from
:mod:`reindir_nb.viz.palette`. The landmarks-on-anatomy plot of the bundled thorax CT is
:func:`plot_landmarks_on_anatomy` (from :mod:`reindir_nb.viz.anatomy`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib import patheffects
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..core.files import atomic_path
from ..core.metrics import per_pair_gain
from ..core.pair import Pair
from . import palette
from .anatomy import anatomy_figure, plot_landmarks_on_anatomy
from .palette import METHOD_COLOURS, method_colour
from .slicing import check_axis, median_slice, project_points, show_slice, slice_depth, slice_spacing, take_slice

__all__ = [
    "METHOD_COLOURS",
    "FIXED_COLOUR",
    "MOVING_COLOUR",
    "save_figure",
    "seed_curves",
    "registration_error_curves",
    "registration_error_curves_plotly",
    "landmark_panel",
    "zero_shot_comparison",
    "failure_pair",
    "failure_case",
    "runtime_tradeoff",
    "pick_best_median_worst",
    "best_median_worst",
    "runtime_table",
    "paper_figures",
    "anatomy_figure",
    "plot_landmarks_on_anatomy",
]

FIXED_COLOUR = palette.FIXED    # teal: fixed landmarks / predictions phi(l_fixed) (older name)
MOVING_COLOUR = palette.MOVING  # pink: moving landmarks (older name)


# ----------------------------------------------------------------------- saving
def save_figure(fig: Figure, folder: str | os.PathLike | None, name: str, dpi: int = 130) -> list[Path]:
    """Save ``fig`` as ``folder/name.png`` and ``folder/name.pdf`` atomically; returns the paths
    (nothing is written when ``folder`` is None)."""
    if folder is None:
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        target = folder / f"{name}.{ext}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight")
        paths.append(target)
    return paths


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: results table lacks columns {missing} (have {list(table.columns)})")
    if table.empty:
        raise ValueError(f"{what}: results table is empty")


def _ordered_methods(methods: Sequence[str]) -> list[str]:
    order = ["ccIDIR", "ccIDIR-identity", "Random", "Reptile", "REINDIR", "VoxelMorph", "elastix"]
    known = [m for m in order if m in methods]
    return known + sorted(m for m in methods if m not in order)


# ------------------------------------------------------------------ Figure 3
def seed_curves(table: pd.DataFrame, metric: str = "tre_mean_mm") -> pd.DataFrame:
    """Per dataset x method x iteration: the error of each seed averaged over the pairs, then
    its median / min / max over seeds, and the median wall time (optimisation + encoder, s).

    Columns: dataset, method, iteration, median, min, max, seconds, n_seeds, n_pairs.
    Rows with a negative iteration (converged classic methods) are left out.
    """
    _require(table, ["dataset", "method", "seed", "iteration", "pair", metric, "seconds"], "seed_curves")
    t = table[table["iteration"] >= 0].copy()
    enc = t["encoder_seconds"].fillna(0.0) if "encoder_seconds" in t else 0.0
    t["wall_seconds"] = t["seconds"] + enc
    per_seed = (
        t.groupby(["dataset", "method", "iteration", "seed"])
        .agg(value=(metric, "mean"), wall=("wall_seconds", "mean"), n_pairs=("pair", "nunique"))
        .reset_index()
    )
    out = (
        per_seed.groupby(["dataset", "method", "iteration"])
        .agg(median=("value", "median"), min=("value", "min"), max=("value", "max"),
             seconds=("wall", "median"), n_seeds=("seed", "nunique"), n_pairs=("n_pairs", "max"))
        .reset_index()
    )
    return out.sort_values(["dataset", "method", "iteration"]).reset_index(drop=True)


def registration_error_curves(
    table: pd.DataFrame,
    folder: str | os.PathLike | None = None,
    metric: str = "tre_mean_mm",
    methods: Sequence[str] | None = None,
    name: str = "figure3_registration_error",
) -> Figure:
    """Paper Figure 3: registration error (mm) against test-time iterations (top row) and wall
    time in seconds (bottom row), one column per dataset; median over seeds as a line, the
    min-max range over seeds shaded. Each seed's value is the mean of ``metric`` over pairs."""
    curves = seed_curves(table, metric)
    if methods is not None:
        curves = curves[curves["method"].isin(methods)]
    datasets = sorted(curves["dataset"].unique())
    if not datasets:
        raise ValueError("registration_error_curves: no rows for the requested methods")
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 6.4), squeeze=False)
    for col, ds in enumerate(datasets):
        sub = curves[curves["dataset"] == ds]
        for i, method in enumerate(_ordered_methods(sub["method"].unique())):
            m = sub[sub["method"] == method].sort_values("iteration")
            c = method_colour(method, i)
            for row, x in ((0, m["iteration"]), (1, m["seconds"])):
                ax = axes[row, col]
                ax.plot(x, m["median"], color=c, lw=1.8, marker="o", ms=3, label=method)
                ax.fill_between(x, m["min"], m["max"], color=c, alpha=0.2, lw=0)
        axes[0, col].set_title(f"{ds} (n={int(sub['n_pairs'].max())} pairs)")
        axes[0, col].set_xlabel("test-time iterations")
        axes[1, col].set_xlabel("wall time incl. encoder (s)")
        for row in range(2):
            axes[row, col].grid(alpha=0.3)
            axes[row, col].set_ylim(bottom=0)
    for row in range(2):
        axes[row, 0].set_ylabel(f"{metric.replace('_mm', '')} (mm)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Registration error: median over seeds, range shaded")
    fig.tight_layout()
    save_figure(fig, folder, name)
    return fig


def registration_error_curves_plotly(
    table: pd.DataFrame,
    folder: str | os.PathLike | None = None,
    metric: str = "tre_mean_mm",
    x: str = "iteration",
    name: str = "figure3_registration_error",
):
    """Interactive Figure 3 (plotly): one subplot per dataset, ``x`` = ``"iteration"`` or
    ``"seconds"``; hover shows median / range. Saved as ``folder/name.html`` (offline: plotly.js
    written once into the folder)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if x not in ("iteration", "seconds"):
        raise ValueError(f"x must be 'iteration' or 'seconds', got {x!r}")
    curves = seed_curves(table, metric)
    datasets = sorted(curves["dataset"].unique())
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets, shared_yaxes=True)
    for col, ds in enumerate(datasets, start=1):
        sub = curves[curves["dataset"] == ds]
        for i, method in enumerate(_ordered_methods(sub["method"].unique())):
            m = sub[sub["method"] == method].sort_values("iteration")
            c = method_colour(method, i)
            xs = m[x].to_numpy()
            fig.add_trace(go.Scatter(x=np.r_[xs, xs[::-1]], y=np.r_[m["max"], m["min"][::-1]], fill="toself",
                                     fillcolor=c, opacity=0.2, line=dict(width=0), hoverinfo="skip",
                                     showlegend=False, legendgroup=method), row=1, col=col)
            fig.add_trace(go.Scatter(x=xs, y=m["median"], mode="lines+markers", line=dict(color=c), name=method,
                                     legendgroup=method, showlegend=col == 1,
                                     customdata=np.c_[m["min"], m["max"], m["iteration"], m["seconds"]],
                                     hovertemplate=(f"{method}<br>iteration %{{customdata[2]}}, %{{customdata[3]:.2f}} s"
                                                    "<br>median %{y:.2f} mm (range %{customdata[0]:.2f}-"
                                                    "%{customdata[1]:.2f})<extra></extra>")),
                          row=1, col=col)
        fig.update_xaxes(title_text="test-time iterations" if x == "iteration" else "wall time (s)", row=1, col=col)
    fig.update_yaxes(title_text=f"{metric} (mm)", row=1, col=1)
    fig.update_layout(height=420, width=380 * len(datasets) + 120, title="Registration error (median over seeds)")
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}_{x}.html"
        with atomic_path(target) as tmp:
            fig.write_html(tmp, include_plotlyjs="directory")
    return fig


# ------------------------------------------------------- qualitative panels
def _points_of(value: Any, fixed_landmarks: np.ndarray, iteration: int | None) -> np.ndarray:
    """Predicted moving-space positions (N, 3) mm of the fixed landmarks: ``None`` = identity,
    an array = the prediction itself, a run = ``run.transform_points(...)`` at ``iteration``."""
    if value is None:
        return np.asarray(fixed_landmarks, dtype=np.float64)
    if hasattr(value, "transform_points"):
        return np.asarray(value.transform_points(fixed_landmarks, iteration=iteration), dtype=np.float64)
    pts = np.asarray(value, dtype=np.float64)
    if pts.shape != np.shape(fixed_landmarks):
        raise ValueError(f"predicted points have shape {pts.shape}, the pair's landmarks {np.shape(fixed_landmarks)}")
    return pts


def landmark_panel(
    ax,
    pair: Pair,
    predicted_mm: np.ndarray,
    title: str = "",
    axis: str = "coronal",
    slab_mm: float | None = None,
    max_points: int = 40,
) -> float:
    """Draw one qualitative panel on ``ax``; returns the mean landmark error (mm, all landmarks).

    The moving image's slice through the landmarks' median depth is shown with the mm aspect
    (:func:`reindir_nb.viz.slicing.show_slice`); landmarks within ``slab_mm`` of the slice
    (default 3 slices) are projected onto it through the moving Grid: pink = true moving
    landmarks, teal = predicted ``phi(l_fixed)``, black lines between them. The mean error is
    written bottom left."""
    if not pair.has_landmarks:
        raise ValueError(f"{pair.name}: qualitative panels need landmarks")
    check_axis(axis)
    grid = pair.moving.grid
    centre = median_slice(pair.moving_landmarks, grid, axis)
    img = take_slice(np.asarray(pair.moving.array, dtype=np.float64), axis, centre)
    lo, hi = np.percentile(img, [1, 99])
    show_slice(ax, img, grid, axis, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    pred = np.asarray(predicted_mm, dtype=np.float64)
    err = np.linalg.norm(pred - pair.moving_landmarks, axis=1)
    px_m = project_points(pair.moving_landmarks, grid, axis)
    px_p = project_points(pred, grid, axis)
    off = np.abs(slice_depth(pair.moving_landmarks, grid, axis) - centre)  # slices from the shown one
    spacing = slice_spacing(grid, axis)
    slab = 3.0 * spacing if slab_mm is None else slab_mm
    near = np.flatnonzero(off * spacing <= slab)
    if len(near) < min(5, len(err)):  # thin slab: take the landmarks closest to the slice
        near = np.argsort(off)[: min(max_points, len(err))]
    near = near[:: max(1, int(np.ceil(len(near) / max_points)))]
    halo = [patheffects.withStroke(linewidth=2.4, foreground="white")]  # black lines stay visible on dark lung
    for i in near:
        ax.plot([px_p[i, 0], px_m[i, 0]], [px_p[i, 1], px_m[i, 1]], color=palette.LINK, lw=0.9, path_effects=halo)
    ax.scatter(px_p[near, 0], px_p[near, 1], s=10, c=palette.FIXED, zorder=3, linewidths=0)
    ax.scatter(px_m[near, 0], px_m[near, 1], s=10, c=palette.MOVING, zorder=3, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    mean = float(err.mean())
    ax.text(0.02, 0.03, f"{mean:.2f} mm", transform=ax.transAxes, color="white", fontsize=9,
            bbox=dict(facecolor="black", alpha=0.6, pad=2, lw=0))
    return mean


def zero_shot_comparison(
    pair: Pair,
    runs_by_method: Mapping[str, Any],
    folder: str | os.PathLike | None = None,
    iteration: int | None = 0,
    axis: str = "coronal",
    name: str = "figure4_zero_shot",
) -> Figure:
    """Paper Figure 4: one panel per method (e.g. ``{"No registration": None, "Random": pts,
    "Reptile": pts, "REINDIR": pts}``); values are predicted points (N, 3) mm, ``None``
    (identity) or runs (evaluated at ``iteration``, default 0 = before any step)."""
    fig, axes = plt.subplots(1, len(runs_by_method), figsize=(3.2 * len(runs_by_method), 3.6), squeeze=False)
    for ax, (label, value) in zip(axes[0], runs_by_method.items()):
        landmark_panel(ax, pair, _points_of(value, pair.fixed_landmarks, iteration), label, axis=axis)
    fig.suptitle(f"{pair.name}: zero-shot landmark error (teal: predicted, pink: moving)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, folder, name)
    return fig


def _per_pair_seed_median(table: pd.DataFrame, method: str, iteration: int, metric: str) -> pd.Series:
    sel = table[(table["method"] == method) & (table["iteration"] == iteration)]
    if sel.empty:
        raise ValueError(f"no rows for method {method!r} at iteration {iteration}")
    return sel.groupby("pair")[metric].median()


def failure_pair(
    table: pd.DataFrame,
    method: str = "REINDIR",
    baseline: str = "Reptile",
    iteration: int = 0,
    dataset: str | None = None,
    metric: str = "tre_mean_mm",
) -> str:
    """The pair where ``method``'s zero-shot gain over ``baseline`` (seed-median error of the
    baseline minus that of the method at ``iteration``, mm) is smallest (most negative)."""
    t = table if dataset is None else table[table["dataset"] == dataset]
    for name in (baseline, method):  # a clear error when a method has no rows there
        _per_pair_seed_median(t, name, iteration, metric)
    gain = per_pair_gain(t, method, baseline, iteration, metric).dropna()
    if gain.empty:
        raise ValueError(f"no pair has rows for both {method!r} and {baseline!r}")
    return str(gain.idxmin())


def failure_case(
    pair: Pair,
    points_by_stage: Mapping[str, Any],
    folder: str | os.PathLike | None = None,
    axis: str = "coronal",
    name: str = "figure5_failure_case",
    reason: str = "smallest zero-shot gain",
) -> Figure:
    """Paper Figure 5: the failure pair without registration, before optimisation and after
    some steps, e.g. ``{"No registration": None, "REINDIR, 0 steps": pts0, "REINDIR, 25 steps": pts25}``;
    ``reason`` (why this pair) goes into the title."""
    fig = zero_shot_comparison(pair, points_by_stage, folder=None, iteration=None, axis=axis)
    fig.suptitle(f"{pair.name}: failure case ({reason})", fontsize=10)
    save_figure(fig, folder, name)
    return fig


def pick_best_median_worst(
    table: pd.DataFrame, dataset: str, method: str = "REINDIR", iteration: int = 0, metric: str = "tre_mean_mm"
) -> dict[str, str]:
    """Pairs of ``dataset`` with the lowest, closest-to-median and highest seed-median error of
    ``method`` at ``iteration``: ``{"best": name, "median": name, "worst": name}``."""
    per_pair = _per_pair_seed_median(table[table["dataset"] == dataset], method, iteration, metric).sort_values()
    med = per_pair.median()
    return {
        "best": str(per_pair.index[0]),
        "median": str((per_pair - med).abs().idxmin()),
        "worst": str(per_pair.index[-1]),
    }


def best_median_worst(
    pairs: Mapping[str, Pair],
    points: Mapping[str, Mapping[str, Any]],
    table: pd.DataFrame,
    dataset: str,
    folder: str | os.PathLike | None = None,
    method: str = "REINDIR",
    iteration: int = 0,
    axis: str = "coronal",
    name: str | None = None,
) -> Figure:
    """Paper Figures 9-11: rows = best / median / worst pair of ``dataset`` for ``method`` at
    ``iteration``; columns = the methods of ``points[pair_name]`` (``{label: points or None}``)."""
    picks = pick_best_median_worst(table, dataset, method, iteration)
    labels = list(points[picks["best"]].keys())
    fig, axes = plt.subplots(3, len(labels), figsize=(3.0 * len(labels), 9.0), squeeze=False)
    for row, (rank, pname) in enumerate(picks.items()):
        pair = pairs[pname]
        for col, label in enumerate(labels):
            value = points[pname].get(label)
            landmark_panel(axes[row, col], pair, _points_of(value, pair.fixed_landmarks, iteration),
                           f"{label}" if row == 0 else "", axis=axis)
        axes[row, 0].set_ylabel(f"{rank}: {pname}", fontsize=8)
    fig.suptitle(f"{dataset}: best / median / worst {method} pairs at iteration {iteration}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, folder, name or f"figure_bmw_{dataset}")
    return fig


# ------------------------------------------------------- all figures at once
def _dataset_like(datasets: Sequence[str], word: str) -> str | None:
    hits = [d for d in datasets if word in d.lower()]
    return hits[0] if hits else None


def paper_figures(
    table: pd.DataFrame,
    pairs: Mapping[str, Pair],
    results_path: str | os.PathLike,
    folder: str | os.PathLike,
    table_bend: pd.DataFrame | None = None,
    methods: Sequence[str] = ("ccIDIR", "Reptile", "REINDIR"),
    regulariser: str = "jacobian",
) -> dict[str, list[Path]]:
    """Regenerate every figure from a sweep table, the landmark predictions the sweep stored
    next to ``results_path`` and the evaluated ``pairs`` (name -> Pair): Figure 3 (+ plotly),
    4 (median REINDIR pair of the nlst-like set), 5 (failure pair, cbct-like set), 8, 9-11
    (one per dataset) and the runtime table. Returns ``{figure name: [files]}``."""
    from ..evaluation.sweep import load_points

    folder = Path(folder)
    out: dict[str, list[Path]] = {}

    def files(name: str, exts=("png", "pdf")) -> list[Path]:
        return [folder / f"{name}.{e}" for e in exts]

    fig = registration_error_curves(table, folder)
    plt.close(fig)
    out["figure3"] = files("figure3_registration_error")
    for x in ("iteration", "seconds"):
        registration_error_curves_plotly(table, folder, x=x)
        out["figure3"].append(folder / f"figure3_registration_error_{x}.html")

    zero = table[table["iteration"] == 0]
    present = [m for m in methods if m in set(zero["method"])]
    datasets = sorted(table["dataset"].unique())
    main = "REINDIR" if "REINDIR" in present else present[-1]
    seed = int(table["seed"].min())

    def points_for(pname: str, iteration: int = 0, labels: Sequence[str] = present) -> dict[str, Any]:
        d: dict[str, Any] = {"No registration": None}
        for m in labels:
            d[m] = load_points(results_path, pname, m, seed, regulariser, iteration)
        return d

    ds4 = _dataset_like(datasets, "nlst") or datasets[0]
    if present:
        p4 = pick_best_median_worst(table, ds4, main)["median"]
        fig = zero_shot_comparison(pairs[p4], points_for(p4), folder)
        plt.close(fig)
        out["figure4"] = files("figure4_zero_shot")

        ds5 = _dataset_like(datasets, "cbct")
        baseline = "Reptile" if "Reptile" in present and main != "Reptile" else None
        if baseline is not None:
            p5 = failure_pair(table, main, baseline, 0, ds5)
            its = sorted(i for i in table.loc[(table["pair"] == p5) & (table["method"] == main), "iteration"].unique()
                         if i > 0)
            later = 25 if 25 in its else (its[0] if its else None)
            stages: dict[str, Any] = {"No registration": None,
                                      f"{main}, before optimisation": load_points(results_path, p5, main, seed,
                                                                                  regulariser, 0)}
            if later is not None:
                stages[f"{main}, {later} steps"] = load_points(results_path, p5, main, seed, regulariser, later)
            where = f" among the {ds5} pairs" if ds5 else ""
            fig = failure_case(pairs[p5], stages, folder, reason=f"smallest zero-shot gain of {main} over {baseline}{where}")
            plt.close(fig)
            out["figure5"] = files("figure5_failure_case")

        for ds in datasets:
            picks = pick_best_median_worst(table, ds, main)
            pts = {name: points_for(name) for name in set(picks.values())}
            safe = ds.replace("/", "-")
            fig = best_median_worst(pairs, pts, table, ds, folder, main, name=f"figure_bmw_{safe}")
            plt.close(fig)
            out[f"bmw_{ds}"] = files(f"figure_bmw_{safe}")

    fig = runtime_tradeoff(table, table_bend, folder, dataset=_dataset_like(datasets, "nlst"))
    plt.close(fig)
    out["figure8"] = files("figure8_runtime_tradeoff")
    runtime_table(table, table_bend, folder)
    out["runtime_table"] = [folder / "runtime_table.csv"]
    return out


# ------------------------------------------------------------ runtime (App. C)
def runtime_tradeoff(
    table_jac: pd.DataFrame,
    table_bend: pd.DataFrame | None = None,
    folder: str | os.PathLike | None = None,
    dataset: str | None = None,
    metric: str = "tre_mean_mm",
    name: str = "figure8_runtime_tradeoff",
) -> Figure:
    """Paper Figure 8: error (mm) against test-time runtime (s, optimisation + encoder) for the
    Jacobian (left) and bending (right) configurations, median over seeds with range shaded;
    the encoder overhead of REINDIR / VoxelMorph is drawn as a dashed vertical line; classic
    methods that ran to convergence (iteration < 0) appear as single points."""
    tables = [("Jacobian regularisation", table_jac)]
    if table_bend is not None:
        tables.append(("Bending regularisation", table_bend))
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.0), squeeze=False, sharey=True)
    for ax, (title, t) in zip(axes[0], tables):
        _require(t, ["dataset", "method", "seconds", metric], "runtime_tradeoff")
        if dataset is not None:
            t = t[t["dataset"] == dataset]
        curves = seed_curves(t, metric)
        for i, method in enumerate(_ordered_methods(curves["method"].unique())):
            m = curves[curves["method"] == method].groupby("iteration").agg(
                median=("median", "mean"), min=("min", "mean"), max=("max", "mean"), seconds=("seconds", "mean"))
            c = method_colour(method, i)
            ax.plot(m["seconds"], m["median"], color=c, marker="o", ms=3, label=method)
            ax.fill_between(m["seconds"], m["min"], m["max"], color=c, alpha=0.2, lw=0)
            if "encoder_seconds" in t:
                enc = t.loc[t["method"] == method, "encoder_seconds"].median()
                if np.isfinite(enc) and enc >= 1e-3:  # a Reptile "encoder" (template copy) takes ~40 us
                    ax.axvline(enc, color=c, ls="--", lw=1.2)
        classic = t[t["iteration"] < 0]
        for j, (method, g) in enumerate(classic.groupby("method")):
            ax.scatter([g["seconds"].median()], [g[metric].median()], color=method_colour(method, j), marker="s", s=30,
                       label=f"{method} (converged)", zorder=4)
        ax.set_title(title + (f" ({dataset})" if dataset else ""))
        ax.set_xlabel("test-time runtime incl. encoder (s)")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0, 0].set_ylabel(f"{metric.replace('_mm', '')} (mm)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, folder, name)
    return fig


def runtime_table(
    table: pd.DataFrame,
    table_bend: pd.DataFrame | None = None,
    folder: str | os.PathLike | None = None,
    name: str = "runtime_table",
) -> pd.DataFrame:
    """Runtime analysis (paper App. C): per regulariser x method the median optimisation step
    time (s), median encoder time (s) and the encoder cost in optimisation-step equivalents
    (encoder time / step time of the same method; the paper reports ~1.5 for Jacobian and
    ~0.23 for bending). Saved as ``folder/name.csv`` when ``folder`` is given."""
    rows = []
    for label, t in (("jacobian", table), ("bending", table_bend)):
        if t is None:
            continue
        _require(t, ["method", "step_seconds", "encoder_seconds"], "runtime_table")
        reg = t["regulariser"].iloc[0] if "regulariser" in t and len(t) else label
        for method, g in t.groupby("method"):
            step = float(g["step_seconds"].median())
            enc = float(g["encoder_seconds"].fillna(0.0).median())
            rows.append({"regulariser": reg, "method": method, "step_seconds": step, "encoder_seconds": enc,
                         "encoder_step_equivalents": enc / step if step > 0 else np.nan})
    out = pd.DataFrame(rows)
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"{name}.csv") as tmp:
            out.to_csv(tmp, index=False)
    return out
