"""Evaluation: summary / Wilcoxon tables by hand, deformation statistics, the elastix peer on a
known translation, and the resumable sweep + keypoint propagation on smoke phantoms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter, shift

from reindir_nb import evaluate
from reindir_nb.pair import Pair
from reindir_nb.volume import Volume


def small_table() -> pd.DataFrame:
    rows = []
    for ds in ("nlst", "cbct"):
        for p in range(6):
            for method, off in (("REINDIR", 0.0), ("Reptile", 1.0)):
                for s in range(3):
                    for it in (0, 25):
                        v = 4.0 + p + s * 0.5 - it * 0.1 + (off if ds == "nlst" else 0.0)
                        rows.append(dict(pair=f"{ds}{p}", dataset=ds, method=method, seed=s, iteration=it,
                                         tre_mean_mm=v, regulariser="jacobian"))
    return pd.DataFrame(rows)


def test_summary_table_median_and_range():
    t = small_table()
    s = evaluate.summary_table(t, iterations=(0, 25)).set_index(["dataset", "method", "iteration"])
    row = s.loc[("nlst", "Reptile", 0)]
    values = [5.0 + p + 0.5 * k for p in range(6) for k in range(3)]
    assert row["median"] == pytest.approx(np.median(values))
    assert row["min"] == pytest.approx(5.0) and row["max"] == pytest.approx(11.0)
    assert int(row["n_pairs"]) == 6 and int(row["n_seeds"]) == 3
    wide = evaluate.format_summary(evaluate.summary_table(t, iterations=(0, 25)))
    assert list(wide.columns) == ["it 0", "it 25"]
    assert wide.loc[("nlst", "Reptile"), "it 0"] == f"{np.median(values):.2f} [5.00-11.00]"


def test_wilcoxon_per_dataset():
    from scipy.stats import wilcoxon

    w = evaluate.wilcoxon_table(small_table(), a="REINDIR", b="Reptile", iteration=0).set_index("dataset")
    # nlst: REINDIR is 1 mm better on every pair -> exact two-sided p of 6 equal-sign ranks
    assert w.loc["nlst", "n_pairs"] == 6
    assert w.loc["nlst", "median_diff"] == pytest.approx(-1.0)
    assert w.loc["nlst", "p_value"] == pytest.approx(wilcoxon(np.zeros(6), np.ones(6)).pvalue)
    assert w.loc["nlst", "p_value"] == pytest.approx(2 / 2**6)
    # cbct: identical -> no test possible
    assert np.isnan(w.loc["cbct", "p_value"]) and w.loc["cbct", "median_diff"] == 0.0


def test_deformation_statistics():
    det = np.array([[[-0.5, 0.0, 1.0, np.e]]])
    s = evaluate.deformation_statistics(det)
    assert s["pct_folded"] == pytest.approx(50.0)
    assert s["std_log_jac"] == pytest.approx(np.std([0.0, 1.0]))
    s = evaluate.deformation_statistics(det, mask=np.array([[[0, 0, 1, 1]]]))
    assert s["pct_folded"] == 0.0
    with pytest.raises(ValueError, match="no voxels"):
        evaluate.deformation_statistics(det, mask=np.zeros_like(det))


def test_load_results_names_the_bad_file(tmp_path):
    bad = tmp_path / "sweep.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="sweep.csv.*lacks columns"):
        evaluate.load_results(bad)


@pytest.mark.skipif(not evaluate.elastix_available(), reason="itk-elastix not installed")
def test_elastix_recovers_a_translation():
    rng = np.random.default_rng(0)
    img = gaussian_filter(rng.standard_normal((32, 32, 32)), 2.5)
    mov = shift(img, (2.0, -1.5, 1.0), order=1, mode="nearest")  # (z, y, x) voxels
    kw = dict(spacing=(2.0, 2.0, 3.0), origin=(5.0, -3.0, 2.0))
    f, m = Volume.from_array(img.astype(np.float32), **kw), Volume.from_array(mov.astype(np.float32), **kw)
    idx = rng.uniform(8, 24, size=(10, 3))
    fl = f.grid.index_to_world(idx)
    ml = f.grid.index_to_world(idx + np.array([1.0, -1.5, 2.0]))  # (x, y, z) voxels -> (2, -3, 6) mm
    pair = Pair(f, m, fl, ml, name="translated")
    out = evaluate.elastix_register(pair, max_iterations=200, resolutions=2)
    err = np.linalg.norm(out - ml, axis=1)
    assert err.mean() < 1.0  # from 7 mm
