"""Evaluation: summary / Wilcoxon tables by hand, deformation statistics, the elastix peer on a
known translation, and the resumable sweep + keypoint propagation on smoke phantoms."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter, shift

import reindir_nb as rn
from reindir_nb import evaluate
from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume


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
    # log of det clipped at 1e-9 (the RegistrationRun definition): log(1e-9) twice, 0, 1
    assert s["std_log_jac"] == pytest.approx(np.std([np.log(1e-9)] * 2 + [0.0, 1.0]))
    s = evaluate.deformation_statistics(det, mask=np.array([[[0, 0, 1, 1]]]))
    assert s["pct_folded"] == 0.0 and s["std_log_jac"] == pytest.approx(0.5)
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


# --------------------------------------------------------------- real sweeps (smoke)
register_module = importlib.import_module("reindir_nb.inr.registration")
from reindir_nb import phantom  # noqa: E402
from reindir_nb.inr.network import SirenConfig, init_siren  # noqa: E402
from reindir_nb.data.preprocess import prepare  # noqa: E402

REG = dict(points_per_step=500, prealign="none")


@pytest.fixture(scope="module")
def smoke_pairs():
    return [prepare(phantom.make_pair(s, "nlst", "smoke", n_landmarks=30), "smoke") for s in range(2)]


class SeededInit:
    """A real (minimal) Initialiser: a fixed seeded SIREN pair, recording which pairs asked."""

    def __init__(self, seed: int, output_scale: float = 1.0):
        self.siren_config = SirenConfig(output_scale=output_scale)
        self.seed, self.used_on = seed, []
        self.encoder_seconds = 0.0

    def initial_params(self, problem):
        from reindir_nb.core.device import make_generator

        self.used_on.append(problem.fixed_shape)
        gen = make_generator(self.seed)
        return init_siren(self.siren_config, gen), init_siren(self.siren_config, gen)


def test_sweep_rows_match_an_independent_run(tmp_path, smoke_pairs):
    pair = smoke_pairs[0]
    t = evaluate.sweep([pair], {"ccIDIR": "random"}, seeds=[3], iterations=[0, 2, 4], results_path=tmp_path / "s.csv",
                       progress=False, **REG)
    assert list(t["iteration"]) == [0, 2, 4] and list(t.columns) == evaluate.RESULT_COLUMNS
    run = register_module.register(pair, "random", iterations=4, seed=3, record_every=2, progress=False, **REG)
    for it in (0, 2, 4):
        row = t[t["iteration"] == it].iloc[0]
        assert row["tre_mean_mm"] == pytest.approx(run.landmark_errors("cycle", it).mean(), rel=1e-5)
        assert row["tre_fwd_mean_mm"] == pytest.approx(run.landmark_errors("forward", it).mean(), rel=1e-5)
        assert row["pct_folded"] == pytest.approx(100 * run.folding_fraction(it), abs=1e-9)
        assert row["std_log_jac"] == pytest.approx(run.std_log_jacobian(it), rel=1e-5)
        assert row["uncertainty_mean_mm"] == pytest.approx(run.point_uncertainty(pair.fixed_landmarks, it).mean(),
                                                           rel=1e-5)
    assert t["initial_tre_mean_mm"].iloc[0] == pytest.approx(pair.initial_distances().mean())
    assert t.loc[t["iteration"] == 0, "seconds"].iloc[0] == 0.0
    assert 0 < t.loc[t["iteration"] == 2, "seconds"].iloc[0] < t.loc[t["iteration"] == 4, "seconds"].iloc[0]
    pts = evaluate.load_points(tmp_path / "s.csv", pair.name, "ccIDIR", 3, "jacobian", 4)
    np.testing.assert_allclose(pts, run.transform_points(pair.fixed_landmarks), atol=1e-4)


def test_interrupted_sweep_resumes_only_missing_runs(tmp_path, smoke_pairs, monkeypatch):
    calls = []
    real = register_module.register

    def spy(pair, *args, **kwargs):
        calls.append((pair.name, kwargs["seed"]))
        return real(pair, *args, **kwargs)

    monkeypatch.setattr(register_module, "register", spy)
    path = tmp_path / "results" / "sweep.csv"
    pair = smoke_pairs[1]
    kw = dict(seeds=[0, 1, 2], iterations=[0, 1], results_path=path, progress=False, **REG)
    first = evaluate.sweep([pair], {"ccIDIR": "random"}, **kw)
    assert len(first) == 3 * 2 and len(calls) == 3
    # simulate an interruption: seed 1 lost a row, seed 2 never ran
    stored = pd.read_csv(path)
    lost = (stored["seed"] == 1) & (stored["iteration"] == 1)
    stored[~(lost | (stored["seed"] == 2))].to_csv(path, index=False)
    calls.clear()
    second = evaluate.sweep([pair], {"ccIDIR": "random"}, **kw)
    assert sorted(calls) == [(pair.name, 1), (pair.name, 2)]
    assert sorted(second.attrs["computed"]) == [(pair.name, "ccIDIR", 1), (pair.name, "ccIDIR", 2)]
    assert len(second) == 6 and not second.duplicated(["pair", "method", "seed", "iteration"]).any()
    key = ["seed", "iteration"]
    a = first.set_index(key)["tre_mean_mm"].sort_index()
    b = second.set_index(key)["tre_mean_mm"].sort_index()
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5)  # same seeds -> same numbers
    calls.clear()
    evaluate.sweep([pair], {"ccIDIR": "random"}, **kw)
    assert calls == []  # complete: nothing recomputed
    assert len(pd.read_csv(path)) == 6


def test_per_fold_models_and_peers_in_one_table(tmp_path, smoke_pairs):
    identity, other = SeededInit(0, output_scale=0.0), SeededInit(1)
    folds = {smoke_pairs[0].name: 0, smoke_pairs[1].name: 1}
    methods = {"REINDIR": {0: identity, 1: other}}
    from reindir_nb import voxelmorph

    if voxelmorph.available():
        methods["VoxelMorph"] = voxelmorph.VoxelMorph(seed=0)
    if evaluate.elastix_available():
        methods["elastix"] = "elastix"
    # safe_start=False: the rows must show each fold model's own zero-shot start (register would
    # otherwise replace a start worse than the identity by the identity)
    t = evaluate.sweep(smoke_pairs, methods, seeds=[0, 1], iterations=[0, 2], folds=folds, results_path=tmp_path / "s.csv",
                       progress=False, elastix_kwargs=dict(max_iterations=50, resolutions=1), safe_start=False, **REG)
    # each pair was initialised by the model of its own fold, once per seed
    assert len(identity.used_on) == 2 and len(other.used_on) == 2
    r0 = t[(t["method"] == "REINDIR") & (t["pair"] == smoke_pairs[0].name) & (t["iteration"] == 0)]
    assert list(r0["fold"]) == [0, 0]
    # the identity model of fold 0 starts exactly at the initial landmark distances
    np.testing.assert_allclose(r0["tre_mean_mm"], smoke_pairs[0].initial_distances().mean(), rtol=1e-4)
    r1 = t[(t["method"] == "REINDIR") & (t["pair"] == smoke_pairs[1].name) & (t["iteration"] == 0)]
    assert abs(r1["tre_mean_mm"].iloc[0] - smoke_pairs[1].initial_distances().mean()) > 0.1
    if "VoxelMorph" in methods:
        v = t[t["method"] == "VoxelMorph"]
        assert set(v["seed"]) == {0} and set(v["iteration"]) == {0, 2}  # deterministic: first seed only
        assert (v["encoder_seconds"] > 0).all() and v["uncertainty_mean_mm"].isna().all()
    if "elastix" in methods:
        e = t[t["method"] == "elastix"]
        assert list(e["iteration"]) == [evaluate.CONVERGED] * 2
        assert (e["tre_mean_mm"] < e["initial_tre_mean_mm"]).all()
    with pytest.raises(ValueError, match="no model for fold"):
        evaluate.sweep(smoke_pairs, {"REINDIR": {0: identity}}, seeds=[0], iterations=[0], folds=folds,
                       results_path=tmp_path / "t.csv", progress=False, **REG)
    with pytest.raises(ValueError, match="has no fold"):
        evaluate.sweep(smoke_pairs, {"REINDIR": {0: identity}}, seeds=[0], iterations=[0],
                       results_path=tmp_path / "u.csv", progress=False, **REG)


def test_propagate_keypoints_on_phantom_cbct():
    """Appendix B on a smoke cbct phantom: the ensemble median of the most confident runs
    propagates the fixed landmarks to within half of the initial distance of the truth."""
    pair = prepare(phantom.make_pair(0, "cbct", "smoke", n_landmarks=40), "smoke")
    initial = pair.initial_distances().mean()
    r = evaluate.propagate_keypoints(pair, pair.fixed_landmarks, runs=3, keep=2, iterations=30,
                                     points_per_step=1000, progress=False)
    err = np.linalg.norm(r.points - pair.moving_landmarks, axis=1).mean()
    print(f"propagation error {err:.2f} mm (initial {initial:.2f} mm, kept-run uncertainty "
          f"{r.mean_kept_uncertainty_mm:.2f} mm)")
    assert err < 0.5 * initial
    np.testing.assert_array_equal(r.kept, np.argsort(r.run_uncertainty_mm, kind="stable")[:2])
    np.testing.assert_allclose(r.points, np.median(r.run_points[r.kept], axis=0))
    assert r.mean_kept_uncertainty_mm == pytest.approx(r.run_uncertainty_mm[r.kept].mean())
    assert r.excluded == (r.mean_kept_uncertainty_mm > 5.0)
    with pytest.raises(ValueError, match="keep"):
        evaluate.propagate_keypoints(pair, pair.fixed_landmarks, runs=2, keep=3, iterations=1)


def test_sweep_det_j_statistics_inside_the_mask_equal_the_whole_grid_ones():
    """Sweep rows evaluate det J at the lung-mask voxels only: same numbers as the whole-grid map."""
    from reindir_nb.core.metrics import deformation_statistics
    from reindir_nb.evaluation.methods import InrRegistration

    pair = rn.prepare(rn.phantom.make_pair(seed=5, style="cbct", profile="smoke"), "smoke")
    run = rn.register(pair, iterations=6, seed=1, record_every=3, prealign="none", progress=False,
                      points_per_step=500)
    reg = InrRegistration(run, "ccIDIR")
    mask = pair.fixed_mask.array
    for it in (0, 3, 6):
        whole = deformation_statistics(run.jacobian_determinant(it).array, mask)
        fast = reg.deformation_statistics(it, mask)
        assert fast["pct_folded"] == pytest.approx(whole["pct_folded"], abs=1e-9)
        assert fast["std_log_jac"] == pytest.approx(whole["std_log_jac"], rel=1e-5)
    assert whole["std_log_jac"] > 0  # a real, non-identity map was compared
