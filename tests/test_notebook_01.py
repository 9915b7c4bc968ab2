"""Notebook 01 runs under papermill (smoke) and writes the prepared pairs, manifest and summary."""

import numpy as np
import pandas as pd

import reindir_nb as rn
from nbrun import run_notebook

EXPECTED = {"phantom-dirlab": 2, "phantom-nlst": 2, "phantom-cbct": 2, "elastix-lung": 1, "thorax-ct": 1}


def test_notebook_01(tmp_path):
    nb = run_notebook("01_data_preparation.ipynb", tmp_path, profile="smoke", COHORT_SIZE=2)
    assert (tmp_path / "executed" / "01_data_preparation.ipynb").is_file()
    widget_views = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widget_views, "the slice scrubber was not displayed"

    root = tmp_path / "prepared"
    manifest = pd.read_csv(root / "manifest.csv")
    assert manifest.groupby("dataset").size().to_dict() == EXPECTED
    landmarks = manifest.set_index("name")["landmarks"]
    assert manifest.loc[manifest["dataset"] == "elastix-lung", "landmarks"].item() == 51  # in-image real ones
    assert (manifest.loc[manifest["dataset"].str.startswith("phantom"), "landmarks"] == 300).all()
    assert (landmarks > 0).all()
    assert (manifest["initial_mean_mm"] > 0).all() and (manifest["initial_max_mm"] >= manifest["initial_mean_mm"]).all()
    assert (manifest["spacing_mm"] == "8x8x8").all() and (manifest["fixed_shape"] == "32x32x32").all()

    pairs = rn.io.load_manifest(root)
    assert [p.name for p in pairs] == manifest["name"].tolist()
    for pair, row in zip(pairs, manifest.itertuples()):
        assert pair.fixed.grid.shape == (32, 32, 32) and pair.meta["prepared"] == "smoke"
        assert (root / row.path / "pair.json").is_file()
        d = np.linalg.norm(pair.moving_landmarks - pair.fixed_landmarks, axis=1)  # reloaded landmarks, mm
        assert abs(d.mean() - row.initial_mean_mm) < 1e-6
        assert abs(d.max() - row.initial_max_mm) < 1e-6

    summary = pd.read_csv(tmp_path / "01_data" / "summary.csv")
    assert len(summary) == sum(EXPECTED.values())
    np.testing.assert_allclose(summary["initial_mean_mm"], manifest["initial_mean_mm"])
    assert (tmp_path / "01_data" / "initial_distances.png").stat().st_size > 5000
    assert (tmp_path / "01_data" / "thorax_ct_landmarks.png").is_file()
