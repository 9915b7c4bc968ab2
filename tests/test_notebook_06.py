"""Notebook 06 (failure explorer) under papermill in the smoke profile, on a workspace holding a
real (tiny) sweep table, saved pairs and checkpoints — asserts on what it wrote."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import reindir_nb as rn
from nbrun import run_notebook
from reindir_nb import evaluate
from reindir_nb.core.device import make_generator
from reindir_nb.viz.explorers import rank_failures
from reindir_nb.inr.network import SirenConfig, init_siren
from reindir_nb.meta.training import ReindirModel, ReptileTemplate


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """What notebooks 03/04 leave behind, at smoke size: two evaluated phantom pairs, a Reptile
    template and a (untrained) REINDIR model in checkpoints/, and their sweep table."""
    ws = tmp_path_factory.mktemp("ws06")
    smoke = rn.get_profile("smoke")
    pairs = [rn.prepare(rn.phantom.make_pair(s, "nlst", "smoke"), smoke) for s in (0, 1)]
    gen = make_generator(3)
    template = ReptileTemplate(init_siren(SirenConfig(), gen), init_siren(SirenConfig(), gen))
    model = ReindirModel(template, smoke.patch_size, width=smoke.encoder_width, embedding_length=smoke.embedding_length)
    template.save(ws / "checkpoints" / "reptile.pt")
    model.save(ws / "checkpoints" / "reindir.pt")
    rn.io.save_pairs(pairs, ws / "results" / "pairs")
    table = evaluate.sweep(pairs, {"Reptile": template, "REINDIR": model}, seeds=[0],
                           iterations=[0, 2], results_path=ws / "results" / "sweep.csv", progress=False)
    return ws, table, {p.name: p for p in pairs}


def test_notebook_06_ranks_reruns_and_explores(workspace):
    ws, table, pairs = workspace
    run_notebook("06_failure_explorer.ipynb", ws, profile="smoke")
    out = ws / "06_failures"

    ranking = pd.read_csv(out / "ranking.csv")
    expected = rank_failures(table)
    assert list(ranking["pair"]) == list(expected["pair"])
    np.testing.assert_allclose(ranking["tre_after_mm"], expected["tre_after_mm"])
    assert (ranking["method"] == "REINDIR").all()
    assert ranking["tre_after_mm"].is_monotonic_decreasing  # worst (largest TRE after optimisation) first
    assert ranking["reindir_gain_mm"].notna().all()

    selection = json.loads((out / "selection.json").read_text())
    worst = expected["pair"].iloc[0]
    assert selection["pair"] == worst and selection["source"] == "results table"
    assert selection["method"] == "REINDIR" and selection["seed"] == 0 and selection["iterations"] == 2
    assert selection["recorded_iterations"] == [0, 1, 2]
    # same method, seed and settings: the re-run reproduces the table's TRE
    assert selection["tre_rerun_mm"] == pytest.approx(selection["tre_table_mm"], abs=1e-4)
    assert selection["initial_mean_mm"] == pytest.approx(pairs[worst].initial_distances().mean())

    errors = pd.read_csv(out / "landmark_errors.csv")
    assert len(errors) == len(pairs[worst].fixed_landmarks)
    assert errors["after_mm"].is_monotonic_decreasing
    np.testing.assert_allclose(errors.sort_values("landmark")["before_mm"], pairs[worst].initial_distances(), atol=1e-5)
    assert errors["after_mm"].mean() == pytest.approx(selection["tre_rerun_mm"])

    for name in ("pair_explorer", "landmark_errors", "iteration_scrubber"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    latency = pd.read_csv(out / "latency.csv")
    assert set(latency["explorer"]) == {"PairExplorer", "LandmarkErrorExplorer", "IterationScrubber"}
    assert (latency["own_median_s"] > 0).all() and np.isfinite(latency["wall_median_s"]).all()
