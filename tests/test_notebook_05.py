"""Notebook 05 under papermill (smoke): regenerates every figure from notebook 04's results."""

from __future__ import annotations

import pytest
from nbrun import run_notebook
from PIL import Image


@pytest.mark.slow
def test_notebook_05_smoke(tmp_path):
    run_notebook("04_zero_shot_vs_optimized.ipynb", tmp_path, profile="smoke", VOXELMORPH=False, ELASTIX=False,
                 BENDING=False, PROPAGATION_PAIRS=0, SEEDS=1, ITERATIONS=[0, 2], POINTS_PER_STEP=300)
    run_notebook("05_paper_figures.ipynb", tmp_path, profile="smoke")
    figs = tmp_path / "figures"
    names = ["figure3_registration_error", "figure4_zero_shot", "figure5_failure_case", "figure8_runtime_tradeoff",
             "figure_bmw_phantom-dirlab", "figure_bmw_phantom-nlst", "figure_bmw_phantom-cbct"]
    for name in names:
        for ext in ("png", "pdf"):
            assert (figs / f"{name}.{ext}").stat().st_size > 2000, name
        with Image.open(figs / f"{name}.png") as im:
            assert im.size[0] > 300 and im.size[1] > 200
    assert (figs / "figure3_registration_error_iteration.html").exists()
    assert (figs / "runtime_table.csv").read_text().startswith("regulariser,method")
