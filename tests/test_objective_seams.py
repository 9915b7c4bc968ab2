"""The objective seam: one typed Objective for register, meta-training and sweeps; a new
regulariser is one registry entry; meta-training runs with the LNCC similarity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reindir_nb as rn
from reindir_nb import meta
from reindir_nb.inr import derivatives, objective
from reindir_nb.inr.network import SirenConfig, init_siren


@pytest.fixture(scope="module")
def pair():
    return rn.prepare(rn.phantom.make_pair(seed=3, style="nlst", profile="smoke", n_landmarks=20), "smoke")


@pytest.fixture
def frobenius():
    """A user regulariser: mean squared Frobenius norm of the displacement Jacobian in mm/mm."""
    def penalty(jac, to_mm):
        # jac: (N, 3, 3) d v_inr / d x_inr; in mm: A J A^-1 with A the INR -> mm linear map
        a = to_mm.to(jac.dtype)
        j_mm = a @ jac @ torch.linalg.inv(a)
        return (j_mm ** 2).sum(dim=(1, 2)).mean()

    entry = objective.register_regulariser(objective.Regulariser("frobenius", 1, penalty, lambda w: 0.3))
    yield entry
    del objective.REGULARISERS["frobenius"]


def test_a_registered_regulariser_is_used_by_register(pair, frobenius):
    run = rn.register(pair, "random", iterations=3, seed=0, points_per_step=300, prealign="none", progress=False,
                      regulariser="frobenius")
    assert run.settings["objective"].regulariser == "frobenius" and run.settings["regulariser"] == "frobenius"
    assert np.isfinite(run.history["total"]).all()
    # the recorded reg term is the entry's penalty at the recorded state, by hand
    problem = objective.Problem.from_pair(pair)
    gen = torch.Generator().manual_seed(0)
    x = problem.sample_points(200, gen, "fixed")
    config = SirenConfig()
    net = init_siren(config, torch.Generator().manual_seed(1))
    obj = objective.Objective(regulariser="frobenius")
    terms = obj.terms(net, net, problem, x, x, config.omega)
    _, jac = derivatives.jacobian(net, x, config.omega)
    assert float(terms["reg_f"]) == pytest.approx(float(frobenius.penalty(jac, problem.fixed_to_mm[:3, :3])),
                                                  rel=1e-5)
    total = (terms["ncc_f"] + terms["ncc_b"] + 0.3 * (terms["reg_f"] + terms["reg_b"])
             + obj.weights.cycle * (terms["cycle_f"] + terms["cycle_b"]))
    assert float(terms["total"]) == pytest.approx(float(total), rel=1e-6)


def test_unknown_entries_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="regulariser must be one of"):
        objective.Objective(regulariser="elastic")
    with pytest.raises(ValueError, match="similarity must be one of"):
        objective.Objective(similarity="mi")
    with pytest.raises(ValueError, match="order must be 0, 1 or 2"):
        objective.register_regulariser(objective.Regulariser("third", 3, lambda d, a: d, lambda w: 1.0))


def test_meta_training_uses_the_lncc_similarity(pair, monkeypatch):
    calls = []
    lncc = objective.SIMILARITIES["lncc"]

    def counted(fixed, warped):
        calls.append(tuple(fixed.shape))
        return lncc.loss(fixed, warped)

    monkeypatch.setitem(objective.SIMILARITIES, "lncc", objective.Similarity("lncc", counted, lncc.stencil_voxels))
    cohorts = {"a": [pair]}
    with_lncc = meta.train_reptile(cohorts, "smoke", seed=0, outer_steps=1, inner_steps=2, inner_points=200,
                                   similarity="lncc", progress=False)
    assert calls and all(len(s) == 2 and s[1] == 7 for s in calls)  # (N, 7): the 7-point LNCC stencil
    settings = meta.TrainSettings.for_profile("smoke", similarity="lncc")
    assert settings.objective == objective.Objective(similarity="lncc")
    n = len(calls)
    with_ncc = meta.train_reptile(cohorts, "smoke", seed=0, outer_steps=1, inner_steps=2, inner_points=200,
                                  progress=False)
    assert len(calls) == n  # the NCC run never touched LNCC
    moved = [float((a - b).abs().max()) for a, b in zip(with_lncc.forward, with_ncc.forward)]
    assert max(moved) > 0  # another similarity, another template


def test_omega_lives_in_the_siren_config_only(pair):
    with pytest.raises(TypeError):
        rn.register(pair, "random", iterations=0, omega=20.0, progress=False)
    run = rn.register(pair, "random", iterations=0, siren=SirenConfig(omega=20.0), progress=False, prealign="none")
    assert np.isfinite(run.history["tre_mean_mm"].iloc[0])
    with pytest.raises(TypeError, match="unknown training settings"):
        meta.TrainSettings.for_profile("smoke", omega=20.0)
