"""ccIDIR test-time registration on phantoms with known motion, the real pair, exports."""

import numpy as np
import pytest
import SimpleITK as sitk

import reindir_nb as rn
from reindir_nb import export
from reindir_nb.geometry import apply_affine
from reindir_nb.prealign import estimate_prealign
from reindir_nb.register import needs_prealign, target_registration_error


@pytest.fixture(scope="module")
def phantom_pairs():
    return {s: rn.prepare(rn.phantom.make_pair(seed=11, style=s, profile="smoke"), "smoke") for s in ("dirlab", "nlst", "cbct")}


def test_identity_start_gives_initial_distance(phantom_pairs):
    pair = phantom_pairs["nlst"]
    run = rn.register(pair, iterations=0, output_scale=0.0, prealign="none", progress=False)
    np.testing.assert_allclose(run.tre_mm, pair.initial_distances(), atol=1e-4)
    np.testing.assert_allclose(run.history["tre_mean_mm"].iloc[0], pair.initial_distances().mean(), atol=1e-4)
    assert run.folding_fraction() == 0.0
    np.testing.assert_allclose(run.jacobian_determinant().array, 1.0, atol=1e-6)


@pytest.mark.parametrize("style,factor", [("dirlab", 1.6), ("nlst", 1.6), ("cbct", 1.3)])
def test_ccidir_reduces_tre(phantom_pairs, style, factor):
    """Measured at smoke size (8 mm voxels, 150 steps, 2000 points): see the assertions' bounds."""
    pair = phantom_pairs[style]
    run = rn.register(pair, iterations=150, points_per_step=2000, record_every=50, prealign="none", seed=0,
                      output_scale=0.0, progress=False)
    before = pair.initial_distances().mean()
    after = run.history["tre_mean_mm"].iloc[-1]
    assert after < before / factor, f"{style}: {before:.2f} -> {after:.2f} mm"
    assert run.folding_fraction() < 0.01
    assert list(run.history["iteration"]) == [0, 50, 100, 150]
    assert run.history["seconds"].is_monotonic_increasing


def test_same_seed_same_history(phantom_pairs):
    pair = phantom_pairs["dirlab"]
    a = rn.register(pair, iterations=5, points_per_step=500, record_every=5, prealign="none", progress=False)
    b = rn.register(pair, iterations=5, points_per_step=500, record_every=5, prealign="none", progress=False)
    cols = ["total", "ncc_f", "reg_b", "cycle_f", "tre_mean_mm"]
    np.testing.assert_array_equal(a.history[cols].to_numpy(), b.history[cols].to_numpy())


def test_snapshots_and_fields(phantom_pairs):
    pair = phantom_pairs["nlst"]
    run = rn.register(pair, iterations=20, points_per_step=500, record_every=5, prealign="none", progress=False,
                      snapshot_limit=3)
    assert len(run.snapshots) <= 3 and 0 in run.snapshots
    early = run.snapshot(0)
    np.testing.assert_allclose(early.landmark_errors(), run.landmark_errors(iteration=0))
    disp = run.displacement()
    assert disp.array.shape == (*pair.fixed.grid.shape, 3)
    # displacement at a voxel centre equals the transformed point minus the point
    p = pair.fixed.grid.index_to_world([[10, 12, 14]])
    np.testing.assert_allclose(disp.array[14, 12, 10], run.transform_points(p, "forward")[0] - p[0], atol=1e-4)
    assert run.uncertainty().array.min() >= 0
    assert run.warp().grid.same_as(pair.fixed.grid)


def test_prealign_recovers_known_affine():
    pair = rn.prepare(rn.phantom.make_pair(seed=3, style="nlst", profile="smoke"), "smoke")
    truth = np.eye(4)
    c, s = np.cos(0.05), np.sin(0.05)
    truth[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) * 1.03
    truth[:3, 3] = [12.0, -8.0, 25.0]
    # moving image = fixed image seen through `truth` (moving(T(x)) = fixed(x))
    moving_grid = pair.fixed.grid
    world = moving_grid.voxel_centres_world().reshape(-1, 3)
    back = apply_affine(np.linalg.inv(truth), world)
    moving = pair.fixed.with_array(pair.fixed.sample_world(back).reshape(moving_grid.shape).astype(np.float32))
    mmask = pair.fixed_mask.with_array(pair.fixed_mask.sample_world(back, order=0).reshape(moving_grid.shape) > 0)
    shifted = rn.Pair(pair.fixed, moving, pair.fixed_landmarks, apply_affine(truth, pair.fixed_landmarks),
                      pair.fixed_mask, mmask, name="affine", meta=pair.meta)
    assert needs_prealign(shifted)
    est = estimate_prealign(shifted, "affine")
    err = target_registration_error(apply_affine(est, shifted.fixed_landmarks), shifted.moving_landmarks)
    assert err["mean"] < 2.0, err  # 8 mm voxels
    assert np.allclose(estimate_prealign(shifted, "none"), np.eye(4))


def test_real_pair_prealign_and_ccidir():
    pair = rn.prepare(rn.load_pair("bundled:elastix-lung"), "smoke")
    run = rn.register(pair, iterations=60, points_per_step=2000, record_every=30, progress=False)
    assert run.settings["prealign"] == "affine"
    tre = run.history.set_index("iteration")["tre_mean_mm"]
    assert pair.initial_distances().mean() > 34 and tre.iloc[-1] < 8.0, tre


def test_exports_round_trip(tmp_path, phantom_pairs):
    pair = phantom_pairs["dirlab"]
    run = rn.register(pair, iterations=20, points_per_step=1000, record_every=20, prealign="affine", progress=False)
    path = export.write_itk_displacement(run, tmp_path / "disp.nii.gz")
    tx = export.read_itk_displacement_transform(path)
    # at voxel centres the field is exact; compare the ITK transform with the run there
    pts = pair.fixed.grid.index_to_world(np.array([[5, 6, 7], [10, 12, 14], [20, 16, 9]], float))
    ours = run.transform_points(pts, "forward")
    itk = np.array([tx.TransformPoint(tuple(p)) for p in pts])
    np.testing.assert_allclose(itk, ours, atol=0.1)
    # at landmarks (between voxel centres) trilinear interpolation of a smooth field
    lm = pair.fixed_landmarks[:50]
    itk_lm = np.array([tx.TransformPoint(tuple(p)) for p in lm])
    assert np.median(np.linalg.norm(itk_lm - run.transform_points(lm, "forward"), axis=1)) < 0.5
    l2r = export.write_learn2reg_displacement(run, tmp_path, 1, 1)
    assert l2r.name == "disp_0001_0001.nii.gz"
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(l2r)))
    mm = run.displacement().array
    np.testing.assert_allclose(arr * 8.0, mm, atol=1e-3)  # 8 mm isotropic voxels
