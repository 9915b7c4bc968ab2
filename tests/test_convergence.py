"""The convergence stop of ``register`` (``RegisterSettings.stop``) and the one-pass map sample
that every output reads (``RegistrationRun.sample``)."""

import numpy as np
import pytest
import torch

import reindir_nb as rn
from reindir_nb.inr.convergence import Convergence


@pytest.fixture(scope="module")
def pair():
    return rn.prepare(rn.phantom.make_pair(seed=2, style="nlst", profile="smoke"), "smoke")


def _run(pair, iterations, stop=None, **kw):
    settings = rn.RegisterSettings(stop=stop, points_per_step=500, record_every=5)
    return rn.register(pair, init="identity", iterations=iterations, prealign="none", settings=settings,
                       progress=False, **kw)


def test_a_converged_run_stops_and_equals_the_fixed_length_run_of_its_steps(pair):
    """A loose tolerance ends the run early; the result is exactly the run of that many steps
    (the probes use their own generator), the history ends there and says why."""
    rule = Convergence(tolerance_mm=5.0, window=10, check_every=5, patience=2, min_steps=10, probes=256)
    stopped = _run(pair, 60, rule)
    n = stopped.iterations
    assert 10 <= n < 60 and n % 5 == 0
    info = stopped.settings["stopped"]
    assert info["reason"] == "converged" and info["iteration"] == n and info["map_change_mm"] < 5.0
    assert info["rule"]["tolerance_mm"] == 5.0 and info["best_map_change_mm"] > 0
    assert int(stopped.history["iteration"].iloc[-1]) == n
    assert stopped.history["map_change_mm"].notna().iloc[-1]
    fixed = _run(pair, n)
    assert fixed.settings["stopped"] == {"reason": "iterations", "iteration": n}
    for a, b in zip(stopped.forward + stopped.backward, fixed.forward + fixed.backward):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(stopped.tre_mm, fixed.tre_mm)


def test_a_tight_tolerance_runs_to_the_maximum(pair):
    rule = Convergence(tolerance_mm=1e-9, min_improvement=0.0, patience=100, window=10, check_every=5, min_steps=0,
                       probes=128)
    run = _run(pair, 20, rule)
    assert run.iterations == 20 and run.settings["stopped"]["reason"] == "iterations"
    changes = run.history["map_change_mm"].dropna()
    assert len(changes) and (changes > 0).all()  # measured, never below the tolerance


def test_the_map_change_is_in_mm_and_zero_for_a_frozen_map(pair):
    """lr tiny: the map hardly moves, so the change is ~0 and the run stops at min_steps."""
    rule = Convergence(tolerance_mm=1e-3, window=10, check_every=5, patience=1, min_steps=15, probes=128)
    run = _run(pair, 40, rule, lr=1e-12, lr_warmup=0)
    assert run.iterations == 15 and run.settings["stopped"]["map_change_mm"] < 1e-3


def test_the_plateau_rule_by_hand():
    """Stops after ``patience`` checks without a 10 % improvement on the best change, or below the
    tolerance; never before min_steps; a change that keeps falling runs on."""
    from reindir_nb.inr.convergence import Plateau

    rule = Convergence(min_improvement=0.1, patience=2, tolerance_mm=0.01, min_steps=20)
    plateau = Plateau(rule)
    decisions = [plateau.update(step, change) for step, change in
                 ((10, 2.0), (15, 1.0), (20, 0.5), (25, 0.48), (30, 0.52))]
    assert decisions == [False, False, False, False, True]
    falling = Plateau(rule)
    assert not any(falling.update(5 * i, 2.0 * 0.8 ** i) for i in range(1, 20))  # still above the tolerance
    early = Plateau(rule)
    assert [early.update(s, 0.001) for s in (10, 15, 20)] == [False, False, True]  # below the tolerance


def test_convergence_rules_are_checked():
    with pytest.raises(ValueError, match="tolerance_mm"):
        Convergence(tolerance_mm=0.0)
    with pytest.raises(ValueError, match="min_improvement"):
        Convergence(min_improvement=1.0)
    with pytest.raises(ValueError, match="multiple of check_every"):
        Convergence(window=12, check_every=5)
    with pytest.raises(TypeError, match="Convergence"):
        rn.RegisterSettings(stop=0.05)


def test_one_sample_gives_every_output(pair):
    """``sample`` evaluates each network once per point; its estimates, det J and uncertainty
    equal the methods that compute one of them each."""
    run = _run(pair, 5)
    pts = pair.fixed.grid.voxel_centres_world().reshape(-1, 3)[::97]
    sample = run.sample(pts)
    np.testing.assert_allclose(sample.moved("cycle"), run.transform_points(pts, "cycle"), atol=1e-4)
    np.testing.assert_allclose(sample.moved("forward"), run.transform_points(pts, "forward"), atol=1e-4)
    np.testing.assert_allclose(sample.det, run.jacobian_determinant_at(pts), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sample.uncertainty_mm, run.point_uncertainty(pts), atol=1e-4)
    forward_only = run.sample(pts, backward=False, det=False)
    assert forward_only.backward_mm is None and forward_only.det is None
    with pytest.raises(ValueError, match="backward"):
        forward_only.moved("cycle")
