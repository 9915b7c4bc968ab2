"""Notebook 04 under papermill (smoke) in an empty workspace: it falls back to training smoke
models, runs the sweep with peers, and writes tables whose numbers are checked here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from nbrun import run_notebook

from reindir_nb import evaluate


@pytest.mark.slow
def test_notebook_04_smoke(tmp_path):
    # ELASTIX=False: elastix costs ~20 s a pair even at smoke (65 of the notebook's 80 sweep seconds); the
    # elastix peer in a sweep is tested in test_evaluate.py (test_per_fold_models_and_peers_in_one_table)
    run_notebook("04_zero_shot_vs_optimized.ipynb", tmp_path, profile="smoke", SEEDS=1, ITERATIONS=[0, 2, 4],
                 POINTS_PER_STEP=300, BENDING_SEEDS=1, PROPAGATION_PAIRS=1, ELASTIX=False)
    results = tmp_path / "results"
    table = evaluate.load_results(results / "sweep.csv")
    info = json.loads((results / "sweep_info.json").read_text())
    assert info["pairs"].startswith("fresh held-out")  # no per-fold checkpoints: single fallback models
    assert (tmp_path / "checkpoints" / "reindir.pt").exists()
    inr = table[table["method"].isin(["ccIDIR", "Reptile", "REINDIR"])]
    # every pair x INR method x seed x iteration, no duplicates
    assert len(inr) == info["n_pairs"] * 3 * len(info["seeds"]) * len(info["iterations"])
    assert not table.duplicated(["pair", "method", "seed", "iteration"]).any()
    assert set(table["dataset"]) == {"phantom-dirlab", "phantom-nlst", "phantom-cbct"}
    assert table["tre_mean_mm"].between(0, 100).all() and table["pct_folded"].dropna().between(0, 100).all()
    # optimisation lowers ccIDIR's error from its random start
    cc = inr[inr["method"] == "ccIDIR"].groupby("iteration")["tre_mean_mm"].median()
    assert cc.iloc[-1] < cc.iloc[0]
    # REINDIR reports its encoder time, ccIDIR none
    assert (table.loc[table["method"] == "REINDIR", "encoder_seconds"] > 0).all()
    assert (table.loc[table["method"] == "ccIDIR", "encoder_seconds"] == 0).all()
    if "elastix" in info["methods"]:
        assert (table.loc[table["method"] == "elastix", "iteration"] == evaluate.CONVERGED).all()
    summary = pd.read_csv(results / "summary.csv")
    assert set(summary["iteration"]) >= set(info["iterations"])
    row = summary[(summary["method"] == "ccIDIR") & (summary["iteration"] == 0)
                  & (summary["dataset"] == "phantom-nlst")].iloc[0]
    sel = inr[(inr["method"] == "ccIDIR") & (inr["iteration"] == 0) & (inr["dataset"] == "phantom-nlst")]
    assert row["median"] == pytest.approx(sel["tre_mean_mm"].median())
    wil = pd.read_csv(results / "wilcoxon.csv")
    assert {"dataset", "a", "b", "p_value", "n_pairs"} <= set(wil.columns) and len(wil) > 0
    prop = pd.read_csv(results / "keypoint_propagation.csv")
    assert len(prop) == 1 and np.isfinite(prop["propagation_mean_mm"]).all()
    assert (results / "sweep_bending.csv").exists()
    assert (results / "pairs" / "manifest.csv").exists()
