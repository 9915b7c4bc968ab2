"""Two views of a pair (issue 13): the INRs register a fine view (the images at their own or a
chosen resolution) in the coarse view's INR frame, so a template or an embedding trained on
coarse patches means the same world-mm motion on both; the encoder embeds the coarse patch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import reindir_nb as rn
from reindir_nb import meta
from reindir_nb.data.preprocess import normalize_intensity, prepare_fine


@pytest.fixture(scope="module")
def raw():
    return rn.phantom.make_pair(seed=7, style="nlst", profile="demo", n_landmarks=40)


@pytest.fixture(scope="module")
def fine(raw):
    return prepare_fine(raw, "smoke", spacing_mm=5.0)


@pytest.fixture(scope="module")
def models(fine):
    cohorts = {"nlst": [fine.coarse]}
    kw = dict(outer_steps=2, inner_steps=2, inner_points=200, progress=False)
    template = meta.train_reptile(cohorts, "smoke", **kw)
    return template, meta.train_reindir(cohorts, "smoke", start=template, **kw)  # the smoke recipe: warm-started


def test_the_fine_view_keeps_world_geometry(raw, fine):
    assert fine.coarse.fixed.grid.shape == (32, 32, 32) and fine.coarse.fixed.spacing == (8.0, 8.0, 8.0)
    assert fine.fixed.spacing == (5.0, 5.0, 5.0) and fine.fixed.grid.shape != fine.coarse.fixed.grid.shape
    np.testing.assert_array_equal(fine.fixed_landmarks, raw.fixed_landmarks)
    assert fine.fixed.grid.contains(fine.fixed_landmarks).all() and fine.moving.grid.contains(fine.moving_landmarks).all()
    # intensities stay where they were in world mm: exactly at native resolution (a crop, no
    # resampling), to within interpolation at 5 mm
    before = normalize_intensity(raw.fixed).sample_world(raw.fixed_landmarks)
    native = prepare_fine(raw, "smoke")
    assert native.fixed.spacing == raw.fixed.spacing
    np.testing.assert_allclose(native.fixed.sample_world(raw.fixed_landmarks), before, atol=1e-6)
    assert np.corrcoef(before, fine.fixed.sample_world(raw.fixed_landmarks))[0, 1] > 0.8
    assert fine.preparation.profile == "smoke" and fine.fixed_mask.array.any()


@pytest.mark.parametrize("which", ["reptile", "reindir"])
def test_a_learned_start_means_the_same_motion_on_both_views(fine, models, which):
    model = models[0] if which == "reptile" else models[1]
    kw = dict(iterations=0, prealign="none", progress=False, safe_start=False)
    on_coarse = rn.register(fine.coarse, init=model, **kw).transform_points(fine.fixed_landmarks, "forward")
    on_fine = rn.register(fine, init=model, **kw).transform_points(fine.fixed_landmarks, "forward")
    np.testing.assert_allclose(on_fine, on_coarse, atol=1e-4)
    assert np.abs(on_coarse - fine.fixed_landmarks).max() > 0.05  # the start does move points
    # the bug this guards against: the fine grid's own [-1, 1] frame rescales the template's motion
    own_frame = rn.register(replace(fine, coarse=None), init=model, **kw).transform_points(
        fine.fixed_landmarks, "forward")
    assert np.abs(own_frame - on_coarse).max() > 1e-2


def test_ccidir_registers_the_fine_view(fine):
    run = rn.register(fine, init="random", iterations=15, points_per_step=1000, prealign="none", progress=False)
    assert run.history["tre_mean_mm"].iloc[-1] < 0.6 * fine.initial_distances().mean()
    assert run.jacobian_determinant().grid.same_as(fine.fixed.grid)


def test_bad_uses_are_refused(raw, fine, tmp_path):
    with pytest.raises(ValueError, match="raw pair"):
        prepare_fine(fine.coarse, "smoke")
    with pytest.raises(ValueError, match="spacing_mm"):
        prepare_fine(raw, "smoke", spacing_mm=0)
    with pytest.raises(ValueError, match="fine view"):
        rn.io.save_pair(fine, tmp_path / "p")
    with pytest.raises(TypeError, match="coarse"):
        replace(fine, coarse="patch")
