"""Hostile inputs to registration and meta-training (issue 12): every malformed argument is a
clear error naming it, a diverged run stops at its last finite state and says so, a learned start
worse than identity is not used, crafted or stale model files are refused, and a resume never
returns a result computed for other inputs."""

from __future__ import annotations

import pickle
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

import reindir_nb as rn
from reindir_nb import meta
from reindir_nb.inr.network import SirenConfig, init_siren

REG = dict(points_per_step=300, prealign="none", progress=False)


@pytest.fixture(scope="module")
def pair():
    return rn.prepare(rn.phantom.make_pair(seed=5, style="nlst", profile="smoke", n_landmarks=30), "smoke")


@pytest.fixture(scope="module")
def cohorts():
    return {s: [rn.prepare(rn.phantom.make_pair(seed=i, style=s, profile="smoke", n_landmarks=20), "smoke")
                for i in range(2)] for s in ("nlst", "cbct")}


TINY = dict(outer_steps=2, inner_steps=2, inner_points=200, progress=False)


# ------------------------------------------------------------------ register
@pytest.mark.parametrize("kwargs, error, match", [
    ({"iterations": 2.7}, TypeError, "iterations"),
    ({"iterations": "10"}, TypeError, "iterations"),
    ({"seed": "0"}, TypeError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"iterations": "abc"}, TypeError, "iterations"),
    ({"lr": float("nan")}, ValueError, "lr"),
    ({"lr": -1e-4}, ValueError, "lr"),
    ({"record_every": 0}, ValueError, "record_every"),
    ({"points_per_step": 10.5}, TypeError, "points_per_step"),
])
def test_register_refuses_malformed_arguments(pair, kwargs, error, match):
    with pytest.raises(error, match=match):
        rn.register(pair, **{**REG, **kwargs})


def test_register_refuses_what_is_not_a_pair():
    with pytest.raises(TypeError, match="Pair"):
        rn.register(None, iterations=1)
    with pytest.raises(TypeError, match="Pair"):
        rn.register("bundled:elastix-lung", iterations=1)


def test_a_diverging_run_stops_at_its_last_finite_state(pair):
    with pytest.warns(RuntimeWarning, match="non-finite"):
        run = rn.register(pair, iterations=8, lr=1e3, record_every=1, seed=0, **REG)
    assert run.diverged
    hist = run.history
    assert bool(hist["diverged"].iloc[-1]) and not hist["diverged"].iloc[:-1].any()
    assert np.isfinite(hist["total"]).all() and np.isfinite(hist["tre_mean_mm"]).all()
    assert hist["iteration"].iloc[-1] < 8  # it stopped, it did not report 8 steps
    assert np.isfinite(run.transform_points(pair.fixed_landmarks)).all()
    stable = rn.register(pair, iterations=3, seed=0, **REG)
    assert not stable.diverged and not stable.history["diverged"].any()


class _Scrambled:
    """A learned start that is far worse than identity: large random output layers."""

    def __init__(self):
        self.siren_config = SirenConfig()
        self.encoder_seconds = 0.0

    def initial_params(self, problem):
        gen = torch.Generator().manual_seed(4)
        fwd, bwd = init_siren(self.siren_config, gen), init_siren(self.siren_config, gen)
        for params in (fwd, bwd):
            params[-2].data.mul_(400.0)
        return fwd, bwd


def test_a_start_worse_than_identity_is_not_used(pair):
    safe = rn.register(pair, init=_Scrambled(), iterations=0, **REG)
    assert safe.settings["start"].startswith("identity (learned start similarity")
    assert safe.history["start"].iloc[0] == safe.settings["start"]
    assert safe.history["tre_mean_mm"].iloc[0] == pytest.approx(pair.initial_distances().mean(), abs=1e-3)
    raw = rn.register(pair, init=_Scrambled(), iterations=0, safe_start=False, **REG)
    assert not raw.settings["start"].startswith("identity")
    assert raw.history["tre_mean_mm"].iloc[0] > safe.history["tre_mean_mm"].iloc[0]


# ------------------------------------------------------------------ training settings
@pytest.mark.parametrize("changes, match", [
    ({"outer_steps": -3}, "outer_steps"),
    ({"inner_lr": float("nan")}, "inner_lr"),
    ({"inner_steps": -1}, "inner_steps"),
    ({"eps": -0.5}, "eps"),
    ({"encoder_lr": float("inf")}, "encoder_lr"),
])
def test_training_settings_refuse_malformed_values(changes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        meta.TrainSettings.for_profile("smoke", **changes)


def test_checkpoint_every_zero_is_refused(tmp_path, cohorts):
    with pytest.raises(ValueError, match="checkpoint_every"):
        meta.train_reptile(cohorts, "smoke", checkpoint=tmp_path / "c.ckpt", checkpoint_every=0, **TINY)


# ------------------------------------------------------------------ model files
class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if unpickled


def test_a_crafted_model_file_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"kind": "reptile", "payload": _Payload(marker)}, path, pickle_module=pickle)
    with pytest.raises(ValueError, match="model.pt.*read safely"):
        meta.load(path)
    assert not marker.exists()


def test_nan_weights_and_other_embedding_lengths_are_refused(tmp_path, cohorts):
    template = meta.train_reptile(cohorts, "smoke", **TINY)
    state = template.state()
    state["forward"][0] = torch.full_like(state["forward"][0], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="nan.pt.*finite"):
        meta.load(tmp_path / "nan.pt")
    model = meta.train_reindir(cohorts, "smoke", start=template, **TINY)
    path = model.save(tmp_path / "reindir.pt")
    assert meta.load(path, embedding_length=model.encoder.embedding_length) is not None
    with pytest.raises(ValueError, match="reindir.pt.*embedding"):
        meta.load(path, embedding_length=model.encoder.embedding_length + 8)
    old = torch.load(path, weights_only=True)
    old["format_version"] = 1
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="old.pt"):
        meta.load(tmp_path / "old.pt")


# ------------------------------------------------------------------ stale resumes
def test_a_checkpoint_for_other_inputs_is_not_resumed(tmp_path, cohorts):
    ckpt = tmp_path / "reptile.ckpt"
    kw = dict(checkpoint=ckpt, checkpoint_every=1, **TINY)
    meta.train_reptile(cohorts, "smoke", seed=0, **kw)
    with pytest.raises(ValueError, match=r"(?s)written for other inputs.*seed: 0 stored, 1 now"):
        meta.train_reptile(cohorts, "smoke", seed=1, **kw)
    with pytest.raises(ValueError, match="settings.inner_steps"):
        meta.train_reptile(cohorts, "smoke", seed=0, **{**kw, "inner_steps": 3})
    p = cohorts["nlst"][0]
    changed = {**cohorts, "nlst": [replace(p, fixed_landmarks=p.fixed_landmarks + 1.0), cohorts["nlst"][1]]}
    with pytest.raises(ValueError, match="data"):  # same names, other content
        meta.train_reptile(changed, "smoke", seed=0, **kw)
    fresh = meta.train_reptile(cohorts, "smoke", seed=1, resume=False, **{k: v for k, v in kw.items()})
    assert fresh.info["outer_steps"] == 2
    again = meta.train_reptile(cohorts, "smoke", seed=1, **kw)  # the same inputs resume (finished: same result)
    assert all(torch.equal(a, b) for a, b in zip(fresh.forward, again.forward))


def test_meta_training_stops_on_a_non_finite_loss(tmp_path, cohorts):
    ckpt = tmp_path / "reptile.ckpt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = meta.train_reptile(cohorts, "smoke", checkpoint=ckpt, checkpoint_every=1, inner_lr=1e6,
                                   **{**TINY, "outer_steps": 3})
    assert model.info["diverged"], "a diverged training must say so"
    assert any("training stopped" in str(w.message) and str(ckpt) in str(w.message) for w in caught)
    assert all(torch.isfinite(t).all() for t in model.forward + model.backward)


def test_point_arrays_must_be_n_by_3(pair):
    run = rn.register(pair, iterations=0, **REG)
    good = pair.fixed_landmarks[:4]
    for bad, match in ((good.T, r"\(N, 3\)"), (np.hstack([good, np.ones((4, 1))]), r"\(N, 3\)"),
                       (np.zeros((0, 3)), "empty|no points|N == 0|at least one"), (None, "None")):
        with pytest.raises((TypeError, ValueError), match=f"points_mm.*({match})|({match}).*points_mm"):
            run.transform_points(bad)
    with pytest.raises(ValueError, match="points_mm"):
        run.point_uncertainty(np.full((2, 3), np.nan))


def test_network_and_export_arguments_are_checked():
    from reindir_nb.inr.export import refine_grid

    for bad, error in ((dict(omega=0), ValueError), (dict(omega=float("nan")), ValueError),
                       (dict(hidden=2.5), TypeError), (dict(hidden_layers=0), ValueError)):
        with pytest.raises(error, match="SirenConfig"):
            SirenConfig(**bad)
    grid = rn.Grid((4, 4, 4), (2.0, 2.0, 2.0))
    with pytest.raises(TypeError, match="refine factor"):
        refine_grid(grid, 2.5)
    assert refine_grid(grid, 2).spacing == (1.0, 1.0, 1.0)


def test_an_unwritable_results_folder_fails_before_any_registration(tmp_path, pair, monkeypatch):
    calls = []
    monkeypatch.setattr(rn.evaluation.methods._registration, "register", lambda *a, **k: calls.append(1))
    blocker = tmp_path / "afile"
    blocker.write_text("a file, not a folder")
    kw = dict(seeds=[0], iterations=[0, 1], progress=False, points_per_step=300, prealign="none")
    with pytest.raises(NotADirectoryError, match="afile"):
        rn.evaluate.sweep([pair], {"ccIDIR": "random"}, results_path=blocker / "t.csv", **kw)
    assert calls == []
