"""Evaluation: resumable sweeps over pairs x methods x seeds, summary and test tables, the
elastix peer, and ensemble keypoint propagation (paper Appendix B).

The sweep's table is tidy: one row per pair x method x seed x recorded iteration with

* ``seconds``: cumulative test-time optimisation time (s) at that iteration (0 at iteration 0);
  ``encoder_seconds``: one-off encoder/network forward time (s) before optimisation;
  ``step_seconds``: mean time of one optimisation step of that run (s);
* ``tre_mean_mm`` / ``tre_median_mm`` / ``tre_p95_mm`` / ``tre_std_mm``: landmark error of the
  cycle estimate (the method's default estimate for non-INR methods), ``tre_fwd_*`` of the
  forward estimate (DESIGN.md section 5), ``initial_tre_mean_mm`` without registration;
* ``pct_folded`` (% voxels with det J <= 0), ``std_log_jac`` (std of log det J over voxels with
  det J > 0), ``uncertainty_mean_mm`` (mean cycle uncertainty at the landmarks, mm).

Methods that ran to their own convergence (elastix) are stored with ``iteration = -1``
(:data:`CONVERGED`). Deterministic methods (VoxelMorph, elastix) run for the first seed only.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.files import atomic_path
from ..core.metrics import deformation_statistics, target_registration_error
from ..core.pair import Pair
from ..data.prealign import resolve_prealign

__all__ = [
    "CONVERGED",
    "RESULT_COLUMNS",
    "sweep",
    "load_results",
    "load_points",
    "deformation_statistics",
    "summary_table",
    "format_summary",
    "wilcoxon_table",
    "load_models",
    "elastix_available",
    "elastix_register",
    "KeypointPropagation",
    "propagate_keypoints",
]

CONVERGED = -1  # iteration label of methods that ran to their own convergence (elastix)

RESULT_COLUMNS: list[str] = [
    "pair", "dataset", "method", "fold", "seed", "regulariser", "iteration",
    "seconds", "step_seconds", "encoder_seconds",
    "initial_tre_mean_mm", "tre_mean_mm", "tre_median_mm", "tre_p95_mm", "tre_std_mm",
    "tre_fwd_mean_mm", "tre_fwd_median_mm", "tre_fwd_p95_mm", "tre_fwd_std_mm",
    "pct_folded", "std_log_jac", "uncertainty_mean_mm",
]
_KEY = ["pair", "method", "seed", "regulariser"]


# --------------------------------------------------------------------- metrics
def _tre_stats(predicted: np.ndarray, moving_landmarks: np.ndarray, prefix: str) -> dict[str, float]:
    """TRE columns through the kit's one TRE helper (:func:`reindir_nb.core.metrics.target_registration_error`)."""
    stats = target_registration_error(predicted, moving_landmarks)
    return {f"{prefix}_{k}_mm": float(stats[k]) for k in ("mean", "median", "p95", "std")}


# ------------------------------------------------------------------ table I/O
def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a sweep table (CSV); ValueError naming the file if it is not one."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable results table ({exc})") from exc
    missing = [c for c in ("pair", "method", "seed", "iteration", "tre_mean_mm") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: results table lacks columns {missing}")
    if "regulariser" not in table:
        table["regulariser"] = ""
    table["regulariser"] = table["regulariser"].fillna("").astype(str)
    table["pair"] = table["pair"].astype(str)
    return table


def _write_atomic_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _points_dir(results_path: Path) -> Path:
    return results_path.parent / f"{results_path.stem}_points"


def _points_file(results_path: Path, pair: str, method: str, seed: int, regulariser: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{pair}__{method}__{regulariser}__seed{seed}")
    return _points_dir(results_path) / f"{safe}.npz"


def _save_points(path: Path, predicted: Mapping[int, np.ndarray], forward: Mapping[int, np.ndarray]) -> None:
    its = sorted(predicted)
    with atomic_path(path) as tmp:
        np.savez(tmp, iterations=np.array(its), points=np.stack([predicted[i] for i in its]),
                 points_forward=np.stack([forward[i] for i in its]))


def load_points(
    results_path: str | os.PathLike, pair: str, method: str, seed: int = 0, regulariser: str = "jacobian",
    iteration: int = 0, estimate: str = "cycle",
) -> np.ndarray:
    """Predicted moving-space positions (N, 3) mm of a pair's fixed landmarks that the sweep
    stored for one run at ``iteration`` (``estimate`` "cycle" or "forward")."""
    path = _points_file(Path(results_path), pair, method, seed, regulariser)
    if not path.exists():
        raise ValueError(f"{path}: no stored landmark predictions for {pair}/{method}/seed {seed}")
    with np.load(path) as data:
        its = list(data["iterations"])
        if iteration not in its:
            raise ValueError(f"{path}: iteration {iteration} not recorded (have {its})")
        key = "points" if estimate == "cycle" else "points_forward"
        return np.asarray(data[key][its.index(iteration)], dtype=np.float64)


# ------------------------------------------------------------------- methods
def _is_voxelmorph(obj: Any) -> bool:
    return type(obj).__name__ == "VoxelMorph" and hasattr(obj, "register") and hasattr(obj, "config")


def _resolve(spec: Any, pair: Pair, fold: Any, name: str) -> Any:
    """The initialiser (or "random"/"elastix"/VoxelMorph model) method ``name`` uses for ``pair``."""
    if isinstance(spec, str):
        if spec not in ("random", "elastix"):
            raise ValueError(f"method {name!r}: unknown string {spec!r} (use 'random' or 'elastix')")
        return spec
    if isinstance(spec, Mapping):  # per-fold models: the fold that held this pair out
        if fold is None:
            raise ValueError(f"method {name!r} has per-fold models but pair {pair.name!r} has no fold "
                             "(pass folds={pair name: fold})")
        for key in (fold, str(fold)):
            if key in spec:
                return spec[key]
        try:
            return spec[int(fold)]
        except (KeyError, ValueError, TypeError):
            raise ValueError(f"method {name!r}: no model for fold {fold!r} of pair {pair.name!r} "
                             f"(have folds {sorted(spec)})") from None
    if hasattr(spec, "initial_params") or _is_voxelmorph(spec):
        return spec
    if callable(spec):
        return spec(pair)
    raise ValueError(f"method {name!r}: cannot use {type(spec).__name__} as a method "
                     "(expected 'random', 'elastix', an initialiser, a VoxelMorph model, {fold: ...} or callable)")


def _deterministic(method: Any) -> bool:
    return method == "elastix" or _is_voxelmorph(method)


# ------------------------------------------------------------- one run's rows
def _base_row(pair: Pair, name: str, fold: Any, seed: int, regulariser: str) -> dict[str, Any]:
    return {"pair": pair.name, "dataset": pair.dataset, "method": name,
            "fold": -1 if fold is None else fold, "seed": int(seed), "regulariser": regulariser,
            "initial_tre_mean_mm": float(pair.initial_distances().mean())}


def _inr_run_rows(
    pair: Pair, init: Any, name: str, fold: Any, seed: int, iterations: Sequence[int], regulariser: str,
    register_kwargs: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray], dict[int, np.ndarray]]:
    from ..inr.registration import register

    positive = [i for i in iterations if i > 0]
    record_every = reduce(math.gcd, positive, 0) or 1
    run = register(pair, init=init, iterations=max(iterations), seed=seed, regulariser=regulariser,
                   record_every=record_every, progress=False, **register_kwargs)
    hist = run.history.set_index("iteration")
    encoder = float(run.encoder_seconds)
    total = max(iterations)
    # history seconds include the encoder time; the table's ``seconds`` are optimisation only
    step = (float(hist.loc[total, "seconds"]) - encoder) / total if total > 0 else float("nan")
    mask = None if pair.fixed_mask is None else pair.fixed_mask.array
    rows, cyc, fwd = [], {}, {}
    for it in iterations:
        cyc[it] = run.transform_points(pair.fixed_landmarks, estimate="cycle", iteration=it)
        fwd[it] = run.transform_points(pair.fixed_landmarks, estimate="forward", iteration=it)
        row = _base_row(pair, name, fold, seed, regulariser)
        row.update(iteration=int(it), seconds=float(hist.loc[it, "seconds"]) - encoder, step_seconds=step,
                   encoder_seconds=encoder)
        row.update(_tre_stats(cyc[it], pair.moving_landmarks, "tre"))
        row.update(_tre_stats(fwd[it], pair.moving_landmarks, "tre_fwd"))
        row.update(deformation_statistics(run.jacobian_determinant(iteration=it).array, mask))
        row["uncertainty_mean_mm"] = float(run.point_uncertainty(pair.fixed_landmarks, iteration=it).mean())
        rows.append(row)
    return rows, cyc, fwd


def _voxelmorph_rows(
    pair: Pair, model: Any, name: str, fold: Any, seed: int, iterations: Sequence[int], regulariser: str,
    prealign: np.ndarray | None,
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray], dict[int, np.ndarray]]:
    result = model.register(pair, iterations=iterations, prealign=prealign)
    rows, pts = [], {}
    for it in iterations:
        p = result.transform_points(pair.fixed_landmarks, iteration=it)
        pts[it] = p
        row = _base_row(pair, name, fold, seed, regulariser)
        row.update(iteration=int(it), seconds=float(result.seconds[it]), step_seconds=float(result.step_seconds),
                   encoder_seconds=float(result.encoder_seconds))
        row.update(_tre_stats(p, pair.moving_landmarks, "tre"))
        row.update(_tre_stats(p, pair.moving_landmarks, "tre_fwd"))
        mask = None if pair.fixed_mask is None else pair.fixed_mask.array
        row.update(deformation_statistics(result.jacobian_determinant(it), mask))
        row["uncertainty_mean_mm"] = float("nan")
        rows.append(row)
    return rows, pts, pts


def _elastix_rows(
    pair: Pair, name: str, fold: Any, seed: int, regulariser: str, elastix_kwargs: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray], dict[int, np.ndarray]]:
    t0 = time.perf_counter()
    p = elastix_register(pair, **elastix_kwargs)
    secs = time.perf_counter() - t0
    row = _base_row(pair, name, fold, seed, regulariser)
    row.update(iteration=CONVERGED, seconds=secs, step_seconds=float("nan"), encoder_seconds=0.0)
    row.update(_tre_stats(p, pair.moving_landmarks, "tre"))
    row.update(_tre_stats(p, pair.moving_landmarks, "tre_fwd"))
    row.update(pct_folded=float("nan"), std_log_jac=float("nan"), uncertainty_mean_mm=float("nan"))
    return [row], {CONVERGED: p}, {CONVERGED: p}


def _voxelmorph_prealign(pair: Pair, prealign: Any, given: Mapping[str, np.ndarray] | None) -> np.ndarray | None:
    """The global pre-alignment VoxelMorph resamples the moving image through: ``given[name]``
    if supplied, else the same choice ``register`` makes for ``prealign`` ("auto"/"affine"/...)."""
    if given is not None and pair.name in given:
        return np.asarray(given[pair.name], dtype=np.float64)
    kind, matrix = resolve_prealign(pair, prealign)
    return None if kind == "none" else matrix


# ---------------------------------------------------------------------- sweep
def sweep(
    pairs: Sequence[Pair],
    methods: Mapping[str, Any],
    seeds: Iterable[int] = range(10),
    iterations: Sequence[int] = (0, 25, 100),
    regulariser: str = "jacobian",
    results_path: str | os.PathLike | None = None,
    folds: Mapping[str, Any] | None = None,
    device: Any = None,
    progress: bool = True,
    workspace: str | os.PathLike = "workspace",
    prealign: str = "auto",
    voxelmorph_prealign: Mapping[str, np.ndarray] | None = None,
    elastix_kwargs: Mapping[str, Any] | None = None,
    **register_kwargs: Any,
) -> pd.DataFrame:
    """Run every method for every seed on every pair and return the results table.

    ``methods`` maps a label to ``"random"`` (ccIDIR from random init), an initialiser
    (Reptile template / REINDIR model: anything with ``initial_params``), ``{fold: initialiser}``
    (per-fold models; each pair uses the model of the fold in ``folds[pair.name]``, i.e. the
    fold that held it out), a callable ``pair -> initialiser``, a VoxelMorph model (or per-fold
    dict of them), or ``"elastix"``. Each (pair, method, seed) is ONE registration to
    ``max(iterations)`` steps, recorded at every requested count.

    The table is written to ``results_path`` (default ``workspace/results/sweep.csv``) after
    every finished run (atomic rewrite), and the predicted landmarks of each run to
    ``<results stem>_points/``. Runs already complete in the file are not redone; a run with
    missing rows is redone. ``table.attrs["computed"]`` lists the (pair, method, seed) runs
    this call computed. Extra keyword arguments go to :func:`reindir_nb.register.register`.
    """
    iterations = sorted({int(i) for i in iterations})
    if not iterations or iterations[0] < 0:
        raise ValueError(f"iterations must be non-negative counts, got {iterations}")
    if not methods:
        raise ValueError("sweep: no methods given")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("sweep: no seeds given")
    for p in pairs:
        if not p.has_landmarks:
            raise ValueError(f"sweep: pair {p.name!r} has no landmarks to evaluate")
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep: pair names must be unique, got duplicates in {names}")
    path = Path(results_path) if results_path is not None else Path(workspace) / "results" / "sweep.csv"
    table = load_results(path) if path.exists() else pd.DataFrame(columns=RESULT_COLUMNS)

    # what is already complete: all wanted iterations present for the run's key
    done: set[tuple] = set()
    if len(table):
        for key, g in table.groupby(_KEY):
            its = set(int(i) for i in g["iteration"])
            if set(iterations) <= its or CONVERGED in its:
                done.add((str(key[0]), str(key[1]), int(key[2]), str(key[3])))

    jobs = []
    for pair in pairs:
        fold = None if folds is None else folds.get(pair.name)
        for name, spec in methods.items():
            for i, seed in enumerate(seeds):
                jobs.append((pair, name, spec, fold, seed, i))
    from tqdm.auto import tqdm

    reg_kwargs = {"prealign": prealign, **register_kwargs}
    if device is not None:
        reg_kwargs["device"] = device
    computed: list[tuple[str, str, int]] = []
    for pair, name, spec, fold, seed, i in tqdm(jobs, disable=not progress, desc=f"sweep ({regulariser})"):
        if (pair.name, name, seed, regulariser) in done:
            continue
        method = _resolve(spec, pair, fold, name)
        if _deterministic(method) and i > 0:
            continue  # deterministic: one run per pair (first seed)
        if method == "elastix":
            rows, cyc, fwd = _elastix_rows(pair, name, fold, seed, regulariser, elastix_kwargs or {})
        elif _is_voxelmorph(method):
            pre = _voxelmorph_prealign(pair, prealign, voxelmorph_prealign)
            rows, cyc, fwd = _voxelmorph_rows(pair, method, name, fold, seed, iterations, regulariser, pre)
        else:
            rows, cyc, fwd = _inr_run_rows(pair, method, name, fold, seed, iterations, regulariser, reg_kwargs)
        _save_points(_points_file(path, pair.name, name, seed, regulariser), cyc, fwd)
        key_mask = ((table["pair"].astype(str) == pair.name) & (table["method"] == name)
                    & (table["seed"].astype(int) == seed) & (table["regulariser"].astype(str) == regulariser)) \
            if len(table) else None
        if key_mask is not None and key_mask.any():
            table = table[~key_mask]  # partial run: replaced by the fresh one
        new = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        table = new if table.empty else pd.concat([table, new], ignore_index=True)
        _write_atomic_csv(table, path)
        computed.append((pair.name, name, seed))
    table = table.reset_index(drop=True)
    table.attrs["computed"] = computed
    table.attrs["path"] = str(path)
    return table


# --------------------------------------------------------------- summaries
def summary_table(
    table: pd.DataFrame, iterations: Sequence[int] = (0, 25, 100), metric: str = "tre_mean_mm"
) -> pd.DataFrame:
    """Median and range (min-max) of ``metric`` over all pairs x seeds, per dataset x method x
    iteration (converged methods appear under their ``-1`` label). Long format with columns
    dataset, method, iteration, median, min, max, n_pairs, n_seeds."""
    if table.empty:
        raise ValueError("summary_table: empty results table")
    wanted = set(int(i) for i in iterations) | {CONVERGED}
    t = table[table["iteration"].astype(int).isin(wanted)]
    out = (t.groupby(["dataset", "method", "iteration"])
           .agg(median=(metric, "median"), min=(metric, "min"), max=(metric, "max"),
                n_pairs=("pair", "nunique"), n_seeds=("seed", "nunique"))
           .reset_index())
    return out.sort_values(["dataset", "method", "iteration"]).reset_index(drop=True)


def format_summary(summary: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Wide, readable version of :func:`summary_table`: rows dataset x method, one column per
    iteration holding ``"median [min-max]"`` (mm); column ``converged`` for iteration -1."""
    s = summary.copy()
    s["cell"] = [f"{m:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]" for m, lo, hi in zip(s["median"], s["min"], s["max"])]
    s["column"] = [("converged" if i == CONVERGED else f"it {i}") for i in s["iteration"].astype(int)]
    wide = s.pivot_table(index=["dataset", "method"], columns="column", values="cell", aggfunc="first")
    order = sorted([c for c in wide.columns if c != "converged"], key=lambda c: int(c.split()[1]))
    order += [c for c in wide.columns if c == "converged"]
    return wide[order].fillna("")


def wilcoxon_table(
    table: pd.DataFrame, a: str = "REINDIR", b: str = "Reptile", iteration: int = 0, metric: str = "tre_mean_mm"
) -> pd.DataFrame:
    """Wilcoxon signed-rank test of ``a`` against ``b`` per dataset at ``iteration``, paired by
    pair (each pair's value is its median over seeds). Columns: dataset, n_pairs, median_a,
    median_b, median_diff (a - b, mm), statistic, p_value (two-sided; NaN when every
    difference is zero or there are no pairs)."""
    from scipy.stats import wilcoxon

    rows = []
    sel = table[table["iteration"].astype(int) == int(iteration)]
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


# ------------------------------------------------------------------ checkpoints
def load_models(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, int] | None]:
    """The learned initialisers notebook 03 wrote into ``folder`` (``WORKSPACE/checkpoints``).

    With a ``folds.csv`` (pair -> fold that held it out, from :func:`reindir_nb.meta.train_folds`)
    and ``reptile_fold{i}.pt`` / ``reindir_fold{i}.pt`` next to it, the methods are per-fold
    dicts ``{fold: model}`` and the fold mapping is returned; otherwise ``reptile.pt`` and
    ``reindir.pt`` are single models and the mapping is None. Returns
    ``({"Reptile": ..., "REINDIR": ...}, folds)`` with only the methods found."""
    from ..meta import training as meta

    folder = Path(folder)
    methods: dict[str, Any] = {}
    for folds_csv in sorted(folder.rglob("folds.csv")):
        table = pd.read_csv(folds_csv)
        if not {"pair", "fold"} <= set(table.columns):
            raise ValueError(f"{folds_csv}: needs columns pair, fold")
        folds = {str(p): int(f) for p, f in zip(table["pair"], table["fold"])}
        for label, kind in (("Reptile", "reptile"), ("REINDIR", "reindir")):
            files = {int(m.group(1)): f for f in folds_csv.parent.glob(f"{kind}_fold*.pt")
                     if (m := re.fullmatch(rf"{kind}_fold(\d+)\.pt", f.name))}
            if files and set(files) >= set(folds.values()):
                methods[label] = {k: meta.load(f) for k, f in sorted(files.items())}
        if methods:
            return methods, folds
    for label, name in (("Reptile", "reptile.pt"), ("REINDIR", "reindir.pt")):
        if (folder / name).is_file():
            methods[label] = meta.load(folder / name)
    return methods, None


# -------------------------------------------------------------------- elastix
def elastix_available() -> bool:
    """True when ``itk-elastix`` is importable."""
    try:
        import itk

        return hasattr(itk, "ElastixRegistrationMethod")
    except Exception:  # pragma: no cover - environment dependent
        return False


def _to_itk(volume):
    import itk

    image = itk.image_from_array(np.ascontiguousarray(volume.array, dtype=np.float32))
    image.SetSpacing([float(s) for s in volume.grid.spacing])
    image.SetOrigin([float(o) for o in volume.grid.origin])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(volume.grid.direction, dtype=np.float64)))
    return image


def elastix_register(
    pair: Pair,
    points_mm: np.ndarray | None = None,
    bspline_spacing_mm: float = 8.0,
    max_iterations: int = 500,
    resolutions: int = 3,
) -> np.ndarray:
    """Classic peer: elastix affine + B-spline registration of ``pair`` (fixed -> moving, the
    kit's convention), then transformix maps ``points_mm`` (default: the fixed landmarks,
    world mm) to moving world mm. Needs ``itk-elastix``."""
    if not elastix_available():
        raise RuntimeError("elastix_register needs the itk-elastix package (pip install itk-elastix)")
    import itk

    pts = pair.fixed_landmarks if points_mm is None else np.asarray(points_mm, dtype=np.float64)
    if pts is None or np.ndim(pts) != 2 or np.shape(pts)[1] != 3:
        raise ValueError(f"{pair.name}: elastix_register needs (N, 3) points in mm")
    params = itk.ParameterObject.New()
    for pmap in (params.GetDefaultParameterMap("affine", resolutions),
                 params.GetDefaultParameterMap("bspline", resolutions, float(bspline_spacing_mm))):
        pmap["MaximumNumberOfIterations"] = [str(int(max_iterations))]
        params.AddParameterMap(pmap)
    moving = _to_itk(pair.moving)
    _, transform = itk.elastix_registration_method(_to_itk(pair.fixed), moving, parameter_object=params,
                                                   log_to_console=False)
    with tempfile.TemporaryDirectory(prefix="reindir_elastix_") as folder:
        point_file = os.path.join(folder, "points.txt")
        with open(point_file, "w") as fh:
            fh.write(f"point\n{len(pts)}\n")
            fh.writelines(" ".join(f"{c:.6f}" for c in p) + "\n" for p in pts)
        tfx = itk.TransformixFilter.New(Input=moving, TransformParameterObject=transform)
        tfx.SetFixedPointSetFileName(point_file)
        tfx.SetOutputDirectory(folder)
        tfx.SetLogToConsole(False)
        tfx.Update()
        out_file = os.path.join(folder, "outputpoints.txt")
        with open(out_file) as fh:
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    out = []
    for ln in lines:
        m = re.search(r"OutputPoint\s*=\s*\[([^\]]*)\]", ln)
        if m is None:
            raise ValueError(f"{out_file}: unexpected transformix line {ln[:80]!r}")
        out.append([float(v) for v in m.group(1).split()])
    result = np.asarray(out, dtype=np.float64)
    if result.shape != pts.shape:
        raise ValueError(f"transformix returned {result.shape} points for {pts.shape} inputs")
    return result


# --------------------------------------------------------- keypoint propagation
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
    regulariser: str = "jacobian",
    progress: bool = True,
    **register_kwargs: Any,
) -> KeypointPropagation:
    """Propagate fixed-space keypoints (N, 3) mm to the moving image with an ensemble of
    ``runs`` ccIDIR registrations (seeds ``seed .. seed+runs-1``, ``iterations`` steps each;
    the paper used 10 runs of 2500). Runs are ranked by their mean cycle uncertainty at the
    keypoints (distance between the forward estimate and the inverted backward one); the
    keypoints are propagated by the per-point median over the ``keep`` most confident runs, and
    the pair is flagged ``excluded`` when those runs' mean uncertainty exceeds
    ``max_uncertainty_mm``."""
    from tqdm.auto import tqdm

    from ..inr.registration import register

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"{pair.name}: keypoints must be a non-empty (N, 3) array in mm, got shape {pts.shape}")
    if not 1 <= keep <= runs:
        raise ValueError(f"keep must be in 1..runs, got keep={keep}, runs={runs}")
    preds, unc = [], []
    for k in tqdm(range(runs), disable=not progress, desc=f"propagate {pair.name}"):
        run = register(pair, init=init, iterations=iterations, seed=seed + k, regulariser=regulariser,
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
