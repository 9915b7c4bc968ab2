"""Notebook 01 runs under papermill (smoke) and writes the prepared pairs + manifest."""

import pandas as pd

import reindir_nb as rn
from nbrun import run_notebook


def test_notebook_01(tmp_path):
    run_notebook("01_data_preparation.ipynb", tmp_path, profile="smoke", COHORT_SIZE=2)
    manifest = pd.read_csv(tmp_path / "prepared" / "manifest.csv")
    counts = manifest.groupby("dataset").size().to_dict()
    assert counts == {"phantom-dirlab": 2, "phantom-nlst": 2, "phantom-cbct": 2, "elastix-lung": 1, "thorax-ct": 1}
    assert (manifest["initial_mean_mm"] > 0).all()
    assert manifest.loc[manifest["dataset"] == "elastix-lung", "landmarks"].item() == 51
    pairs = rn.io.load_manifest(tmp_path / "prepared")
    assert all(p.fixed.grid.shape == (32, 32, 32) and p.meta["prepared"] == "smoke" for p in pairs)
    summary = pd.read_csv(tmp_path / "01_data" / "summary.csv")
    assert len(summary) == 8
    assert (tmp_path / "01_data" / "initial_distances.png").is_file()
    assert (tmp_path / "01_data" / "thorax_ct_landmarks.png").is_file()
