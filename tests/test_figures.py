"""Figures from a synthetic results table and a synthetic pair: numbers behind the curves,
landmark projection through the Grid, the picks of failure / best-median-worst pairs, files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from reindir_nb import figures  # noqa: E402
from reindir_nb.core.pair import Pair  # noqa: E402
from reindir_nb.core.volume import Volume  # noqa: E402


def synthetic_table(regulariser: str = "jacobian", step: float = 0.05) -> pd.DataFrame:
    """3 datasets x 3 pairs x 3 methods x 3 seeds x iterations 0/25/100 with known values:
    tre = base * factor(method, iteration) + 0.1 * seed + 0.01 * pair."""
    rows = []
    for ds, base in (("dirlab", 8.0), ("nlst", 5.0), ("cbct", 9.0)):
        for p in range(3):
            for method, start, enc in (("ccIDIR", 1.0, 0.0), ("Reptile", 0.8, 0.0), ("REINDIR", 0.5, 0.3)):
                for s in range(3):
                    for it in (0, 25, 100):
                        f = start * np.exp(-it / 30) + 0.15
                        rows.append(dict(pair=f"{ds}_{p}", dataset=ds, method=method, fold=p % 2, seed=s,
                                         regulariser=regulariser, iteration=it, seconds=it * step, step_seconds=step,
                                         encoder_seconds=enc, initial_tre_mean_mm=base,
                                         tre_mean_mm=base * f + 0.1 * s + 0.01 * p))
    return pd.DataFrame(rows)


def synthetic_pair() -> Pair:
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:24, :32, :28]
    img = np.exp(-((x - 14) ** 2 / 60 + (y - 16) ** 2 / 90 + (z - 12) ** 2 / 40)).astype(np.float32)
    vol = dict(spacing=(2.0, 1.5, 3.0), origin=(-10.0, 5.0, 20.0))
    fixed = Volume.from_array(img, **vol)
    moving = Volume.from_array(np.roll(img, 2, axis=0), **vol)
    idx = rng.uniform([4, 4, 4], [23, 27, 19], size=(30, 3))
    fl = fixed.grid.index_to_world(idx)
    return Pair(fixed, moving, fl, fl + np.array([0.0, 0.0, 6.0]), name="synthetic", dataset="nlst")


def test_seed_curves_match_hand_computation():
    t = synthetic_table()
    c = figures.seed_curves(t).set_index(["dataset", "method", "iteration"])
    # per seed: mean over the 3 pairs = base*f + 0.1*s + 0.01 (mean of 0, 0.01, 0.02)
    f = 0.5 + 0.15
    row = c.loc[("nlst", "REINDIR", 0)]
    assert row["median"] == pytest.approx(5.0 * f + 0.1 + 0.01)
    assert row["min"] == pytest.approx(5.0 * f + 0.0 + 0.01)
    assert row["max"] == pytest.approx(5.0 * f + 0.2 + 0.01)
    # wall time adds the encoder: 25 steps * 0.05 s + 0.3 s
    assert c.loc[("nlst", "REINDIR", 25), "seconds"] == pytest.approx(25 * 0.05 + 0.3)
    assert c.loc[("nlst", "ccIDIR", 25), "seconds"] == pytest.approx(25 * 0.05)
    assert int(row["n_seeds"]) == 3 and int(row["n_pairs"]) == 3


def test_registration_error_curves_writes_png_pdf_and_html(tmp_path):
    t = synthetic_table()
    fig = figures.registration_error_curves(t, tmp_path)
    assert len(fig.axes) == 6  # 2 rows x 3 datasets
    # the REINDIR median line of the first panel (cbct, vs iterations) carries the median values
    line = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "REINDIR"][0]
    expected = [9.0 * (0.5 * np.exp(-i / 30) + 0.15) + 0.11 for i in (0, 25, 100)]
    np.testing.assert_allclose(line.get_ydata(), expected)
    for ext in ("png", "pdf"):
        assert (tmp_path / f"figure3_registration_error.{ext}").stat().st_size > 5000
    plt.close(fig)
    figures.registration_error_curves_plotly(t, tmp_path, x="seconds")
    assert (tmp_path / "figure3_registration_error_seconds.html").exists()
    assert (tmp_path / "plotly.min.js").exists()


def test_landmark_panel_projects_world_points_through_the_grid():
    pair = synthetic_pair()
    pred = pair.moving_landmarks + np.array([2.0, 0.0, 0.0])  # 2 mm error everywhere
    fig, ax = plt.subplots()
    mean = figures.landmark_panel(ax, pair, pred, axis="coronal")
    assert mean == pytest.approx(2.0)
    teal, pink = ax.collections[0].get_offsets(), ax.collections[1].get_offsets()
    assert len(teal) == len(pink) > 0
    # coronal panel (viz.slicing convention): columns = x index, rows = z index counted from the top
    # (superior first); 2 mm in x = 1 voxel at 2 mm spacing
    np.testing.assert_allclose(np.asarray(teal)[:, 0] - np.asarray(pink)[:, 0], 1.0)
    np.testing.assert_allclose(np.asarray(teal)[:, 1], np.asarray(pink)[:, 1])
    idx = pair.moving.grid.world_to_index(pair.moving_landmarks)
    nz = pair.moving.grid.shape[0]
    assert set(np.round(np.asarray(pink)[:, 1], 6)) <= set(np.round(nz - 1 - idx[:, 2], 6))
    # aspect = pixel height / width = z spacing / x spacing
    assert ax.get_aspect() == pytest.approx(3.0 / 2.0)
    plt.close(fig)


def test_zero_shot_comparison_and_failure_case_files(tmp_path):
    pair = synthetic_pair()
    fig = figures.zero_shot_comparison(
        pair, {"No registration": None, "Random": pair.fixed_landmarks + [0, 0, 3.0], "REINDIR": pair.moving_landmarks},
        tmp_path)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["6.00 mm", "3.00 mm", "0.00 mm"]
    assert (tmp_path / "figure4_zero_shot.png").exists()
    plt.close(fig)
    fig = figures.failure_case(pair, {"No registration": None, "0 steps": pair.fixed_landmarks + [0, 0, 1.0]}, tmp_path)
    assert (tmp_path / "figure5_failure_case.pdf").exists()
    plt.close(fig)
    with pytest.raises(ValueError, match="shape"):
        figures.zero_shot_comparison(pair, {"bad": np.zeros((3, 3))})


def test_failure_pair_and_best_median_worst_picks(tmp_path):
    t = synthetic_table()
    # make nlst_1 the pair where REINDIR gains least over Reptile at iteration 0
    sel = (t["pair"] == "nlst_1") & (t["method"] == "REINDIR") & (t["iteration"] == 0)
    t.loc[sel, "tre_mean_mm"] += 10.0
    assert figures.failure_pair(t) == "nlst_1"
    picks = figures.pick_best_median_worst(t, "nlst")
    assert picks == {"best": "nlst_0", "median": "nlst_2", "worst": "nlst_1"}
    pair = synthetic_pair()
    pairs = {name: pair for name in ("nlst_0", "nlst_1", "nlst_2")}
    points = {name: {"No registration": None, "REINDIR": pair.moving_landmarks} for name in pairs}
    fig = figures.best_median_worst(pairs, points, t, "nlst", tmp_path)
    assert len(fig.axes) == 6
    assert (tmp_path / "figure_bmw_nlst.png").exists()
    plt.close(fig)


def test_runtime_tradeoff_and_runtime_table(tmp_path):
    jac, bend = synthetic_table(step=0.05), synthetic_table("bending", step=0.25)
    fig = figures.runtime_tradeoff(jac, bend, tmp_path, dataset="nlst")
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata()[0] == pytest.approx(0.3)  # REINDIR encoder only
    assert (tmp_path / "figure8_runtime_tradeoff.png").exists()
    plt.close(fig)
    rt = figures.runtime_table(jac, bend, folder=tmp_path).set_index(["regulariser", "method"])
    assert rt.loc[("jacobian", "REINDIR"), "encoder_step_equivalents"] == pytest.approx(0.3 / 0.05)
    assert rt.loc[("bending", "REINDIR"), "encoder_step_equivalents"] == pytest.approx(0.3 / 0.25)
    assert rt.loc[("bending", "ccIDIR"), "encoder_step_equivalents"] == 0.0
    assert (tmp_path / "runtime_table.csv").exists()


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="lacks columns"):
        figures.registration_error_curves(pd.DataFrame({"pair": ["a"]}))
