"""Global pre-alignment: known affine/rigid maps recovered, the "auto" decision, composition with the INR."""

import numpy as np
import pytest

import reindir_nb as rn
from reindir_nb.core.geometry import apply_affine
from reindir_nb.data.prealign import estimate_prealign
from reindir_nb.core.metrics import target_registration_error
from reindir_nb.data.prealign import PREALIGN_AUTO_MM, needs_prealign, prealign_distance_mm, resolve_prealign


def _rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _matrix(linear: np.ndarray, shift_mm) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = shift_mm
    return m


@pytest.fixture(scope="module")
def raw_phantom():
    # unprepared smoke phantom (8 mm voxels): the whole thorax inside the field of view, air around it
    return rn.phantom.make_pair(seed=3, style="nlst", profile="smoke")


def _moved_pair(pair: rn.Pair, truth: np.ndarray) -> rn.Pair:
    """Moving image = fixed image seen through ``truth`` (fixed mm -> moving mm): moving(T(x)) = fixed(x)."""
    grid = pair.fixed.grid
    back = apply_affine(np.linalg.inv(truth), grid.voxel_centres_world().reshape(-1, 3))
    background = float(pair.fixed.array.min())
    moving = pair.fixed.with_array(pair.fixed.sample_world(back, cval=background).reshape(grid.shape).astype(np.float32))
    mask = pair.fixed_mask.with_array(pair.fixed_mask.sample_world(back, order=0).reshape(grid.shape) > 0)
    moved = apply_affine(truth, pair.fixed_landmarks)
    keep = grid.contains(moved, margin_voxels=-1.0)
    return rn.Pair(pair.fixed, moving, pair.fixed_landmarks[keep], moved[keep], pair.fixed_mask, mask, name="known-affine")


def test_recovers_known_affine(raw_phantom):
    truth = _matrix(_rotation_z(0.05) @ np.diag([1.03, 0.97, 1.05]), [12.0, -8.0, 20.0])
    pair = _moved_pair(raw_phantom, truth)
    before = target_registration_error(pair.fixed_landmarks, pair.moving_landmarks)["mean"]
    est = estimate_prealign(pair, "affine")
    err = target_registration_error(apply_affine(est, pair.fixed_landmarks), pair.moving_landmarks)
    assert before > 20 and err["mean"] < 1.0 and err["max"] < 2.0, err  # measured: mean 0.35, max 0.65 mm
    np.testing.assert_allclose(est[:3, :3], truth[:3, :3], atol=0.02)
    # deterministic: every voxel of the mask, single-threaded metric
    np.testing.assert_array_equal(estimate_prealign(pair, "affine"), est)


def test_recovers_known_rigid(raw_phantom):
    truth = _matrix(_rotation_z(-0.06), [-10.0, 6.0, 15.0])
    pair = _moved_pair(raw_phantom, truth)
    est = estimate_prealign(pair, "rigid")
    err = target_registration_error(apply_affine(est, pair.fixed_landmarks), pair.moving_landmarks)
    assert err["mean"] < 1.0, err
    np.testing.assert_allclose(est[:3, :3] @ est[:3, :3].T, np.eye(3), atol=1e-6)  # a rotation


def test_auto_decision_is_image_based(raw_phantom):
    prepared = rn.prepare(raw_phantom, "smoke")
    # breathing alone: below the threshold, no pre-alignment
    assert prealign_distance_mm(prepared) < PREALIGN_AUTO_MM and not needs_prealign(prepared)
    shifted = _moved_pair(raw_phantom, _matrix(np.eye(3), [0.0, 0.0, 30.0]))
    assert prealign_distance_mm(shifted) == pytest.approx(30.0, abs=3.0)  # lungs partly leave the FOV
    assert needs_prealign(shifted)
    # no landmarks needed: the decision does not look at them
    assert needs_prealign(shifted.replace(fixed_landmarks=None, moving_landmarks=None))


def test_resolve_prealign_choices(raw_phantom):
    kind, m = resolve_prealign(raw_phantom, "none")
    assert kind == "none" and np.array_equal(m, np.eye(4))
    given = _matrix(_rotation_z(0.1), [1.0, 2.0, 3.0])
    kind, m = resolve_prealign(raw_phantom, given)
    assert kind == "matrix" and np.array_equal(m, given)
    stored = raw_phantom.replace(meta={**raw_phantom.meta, "prealign_matrix": given.tolist()})
    kind, m = resolve_prealign(stored, "auto")
    assert kind == "prepared" and np.allclose(m, given)
    with pytest.raises(ValueError, match="prealign"):
        resolve_prealign(raw_phantom, "bspline")
    with pytest.raises(ValueError, match="4x4"):
        resolve_prealign(raw_phantom, np.zeros((4, 4)))


def test_register_composes_prealign(raw_phantom):
    """Zero-displacement INRs + a given matrix: every output equals the matrix alone."""
    pair = rn.prepare(raw_phantom, "smoke")
    truth = _matrix(_rotation_z(0.04) @ np.diag([1.02, 0.98, 1.01]), [4.0, -3.0, 6.0])
    run = rn.register(pair, iterations=0, output_scale=0.0, prealign=truth, progress=False)
    assert run.settings["prealign"] == "matrix" and np.array_equal(run.prealign_matrix, truth)
    lm = pair.fixed_landmarks
    for est in ("forward", "cycle"):
        np.testing.assert_allclose(run.transform_points(lm, est), apply_affine(truth, lm), atol=1e-3)
    np.testing.assert_allclose(run.jacobian_determinant().array, np.linalg.det(truth[:3, :3]), rtol=1e-5)
    centres = pair.fixed.grid.voxel_centres_world().reshape(-1, 3)
    expected = pair.moving.sample_world(apply_affine(truth, centres)).reshape(pair.fixed.grid.shape)
    np.testing.assert_allclose(run.warp().array, expected, atol=1e-4)
    np.testing.assert_allclose(run.point_uncertainty(lm), 0.0, atol=1e-3)


def test_bad_kind(raw_phantom):
    with pytest.raises(ValueError, match="rigid"):
        estimate_prealign(raw_phantom, "similarity")
    with pytest.raises(ValueError, match="metric"):
        estimate_prealign(raw_phantom, "affine", metric="mse")
