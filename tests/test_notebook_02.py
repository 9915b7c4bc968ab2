"""Notebook 02 runs under papermill (smoke) and registers the real pair and a phantom."""

import json

from nbrun import run_notebook


def test_notebook_02(tmp_path):
    run_notebook("02_inr_registration.ipynb", tmp_path, profile="smoke", ITERATIONS=30)
    summary = json.loads((tmp_path / "02_registration" / "summary.json").read_text())
    real = summary["elastix-lung"]
    assert real["prealign"] == "affine" and real["initial_mean_mm"] > 34
    assert real["final_mean_mm"] < 10.0  # affine + 30 ccIDIR steps at 8 mm voxels
    phantom = next(v for k, v in summary.items() if k.startswith("phantom-"))
    assert phantom["final_mean_mm"] < phantom["initial_mean_mm"]
    assert (tmp_path / "02_registration" / "tre_curves.png").is_file()
