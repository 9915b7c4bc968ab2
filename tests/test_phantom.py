"""Phantom cohorts and the breathing motion model: determinism, invertibility, exact landmarks."""

import dataclasses

import numpy as np
import pytest

from reindir_nb import phantom
from reindir_nb.core.geometry import Grid
from reindir_nb.simulation.motion import (
    BreathingMotion,
    ThoraxFrame,
    breathing_displacement,
    invert_displacement,
    jacobian_determinant,
    sample_field,
    transport_points,
    warp_image,
)
from reindir_nb.core.volume import Volume

FRAME = ThoraxFrame(centre_x_mm=0.0, centre_y_mm=8.0, half_width_mm=125.0, half_depth_mm=85.0,
                    apex_z_mm=115.0, diaphragm_z_mm=-110.0)


@pytest.fixture(scope="module")
def pairs():
    """Seed 1 of every style at smoke size (generated once: ~0.2 s each)."""
    return {style: phantom.make_pair(1, style, "smoke") for style in phantom.STYLES}


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# ------------------------------------------------------------------ motion model
def test_motion_analytic_jacobian_matches_finite_differences():
    m = BreathingMotion.random(FRAME, seed=4, amplitude_mm=25.0, shift_max_mm=5.0)
    p = np.random.default_rng(0).uniform(-150, 150, size=(500, 3))
    e = 1e-2
    fd = np.stack([(m.displacement(p + e * np.eye(3)[j]) - m.displacement(p - e * np.eye(3)[j])) / (2 * e)
                   for j in range(3)], axis=-1)
    np.testing.assert_allclose(m.jacobian(p), fd, atol=1e-3)
    # the bound really bounds the spectral norm of grad u
    assert np.linalg.norm(m.jacobian(p), 2, axis=(1, 2)).max() <= m.lipschitz_bound()


def test_motion_shape_superior_at_bases_small_at_apex():
    m = BreathingMotion.random(FRAME, seed=0, amplitude_mm=20.0, random_fraction=0.0)
    apex = m.displacement(np.array([[0.0, 8.0, FRAME.apex_z_mm + 5]]))[0]
    base = m.displacement(np.array([[0.0, 8.0, FRAME.diaphragm_z_mm]]))[0]
    assert abs(apex[2]) < 1e-9 and base[2] == pytest.approx(20.0, rel=0.01)  # exhale: bases move up (+z)
    post = m.displacement(np.array([[0.0, 80.0, FRAME.diaphragm_z_mm]]))[0]
    ant = m.displacement(np.array([[0.0, -70.0, FRAME.diaphragm_z_mm]]))[0]
    assert post[2] > base[2] > ant[2]  # posterior bases move most
    assert ant[1] > post[1] > 0  # anterior wall moves back (+y, LPS)


def test_motion_inverse_is_accurate():
    m = BreathingMotion.random(FRAME, seed=2, amplitude_mm=25.0, shift_max_mm=6.0)
    x = np.random.default_rng(1).uniform(-160, 160, size=(2000, 3))
    np.testing.assert_allclose(m.inverse(m.transport(x), tol_mm=1e-6), x, atol=1e-5)
    y = np.random.default_rng(2).uniform(-160, 160, size=(2000, 3))
    np.testing.assert_allclose(m.transport(m.inverse(y, tol_mm=1e-6)), y, atol=1e-5)


def test_numerical_field_inverse_matches_analytic_inverse():
    grid = Grid((30, 28, 34), spacing=(8.0, 8.0, 8.0), origin=(-132.0, -108.0, -150.0))
    m = BreathingMotion.random(FRAME, seed=3, amplitude_mm=20.0)
    u = m.field(grid)
    v_num = invert_displacement(u, tol_mm=1e-4)
    v_true = m.inverse_field(grid, tol_mm=1e-5)
    # where phi^-1(y) stays inside the grid the only error is trilinear interpolation of u
    src = grid.voxel_centres_world().reshape(-1, 3) + v_true.array.reshape(-1, 3)
    inside = grid.contains(src, margin_voxels=-1.0)
    err = np.linalg.norm(v_num.array.reshape(-1, 3) - v_true.array.reshape(-1, 3), axis=1)
    assert inside.mean() > 0.5
    assert err[inside].max() < 0.1
    # and composing u with its numerical inverse gives the identity: v(y) + u(y + v(y)) = 0
    y = grid.voxel_centres_world().reshape(-1, 3)[inside]
    resid = v_num.array.reshape(-1, 3)[inside] + m.displacement(y + v_num.array.reshape(-1, 3)[inside])
    assert np.abs(resid).max() < 0.1


def test_jacobian_determinant_of_linear_field_hand_computed():
    c, s = np.cos(0.4), np.sin(0.4)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    grid = Grid((6, 7, 8), spacing=(1.5, 2.0, 2.5), origin=(3.0, -4.0, 5.0), direction=direction)
    a = np.array([[0.10, 0.02, -0.05], [0.00, -0.20, 0.03], [0.04, 0.01, 0.15]])
    x = grid.voxel_centres_world()
    u = Volume(x @ a.T, grid)
    np.testing.assert_allclose(jacobian_determinant(u), np.linalg.det(np.eye(3) + a), rtol=1e-10)


def test_breathing_displacement_volume_and_bad_amplitude():
    grid = Grid((20, 20, 20), spacing=(10.0, 10.0, 10.0), origin=(-95.0, -95.0, -95.0))
    disp = breathing_displacement(grid, seed=5, amplitude_mm=15.0)
    assert disp.array.shape == (20, 20, 20, 3) and disp.grid.same_as(grid)
    np.testing.assert_array_equal(disp.array, breathing_displacement(grid, seed=5, amplitude_mm=15.0).array)
    assert not np.array_equal(disp.array, breathing_displacement(grid, seed=6, amplitude_mm=15.0).array)
    assert jacobian_determinant(disp).min() > 0
    with pytest.raises(ValueError, match="gradient bound"):
        BreathingMotion.random(FRAME, seed=0, amplitude_mm=200.0)
    with pytest.raises(ValueError, match="amplitude_mm"):
        BreathingMotion.random(FRAME, seed=0, amplitude_mm=float("nan"))


def test_warp_image_renders_moving_from_fixed():
    """M(y) = F(phi^-1(y)) with a linear ramp image: values are the ramp at the inverse points."""
    grid = Grid((24, 24, 24), spacing=(6.0, 6.0, 6.0), origin=(-69.0, -69.0, -69.0))
    frame = ThoraxFrame(0.0, 0.0, 60.0, 60.0, 60.0, -60.0)
    m = BreathingMotion.random(frame, seed=1, amplitude_mm=10.0)
    x = grid.voxel_centres_world()
    ramp = Volume(1.0 * x[..., 0] + 2.0 * x[..., 1] - 0.5 * x[..., 2], grid)
    moved = warp_image(ramp, m.inverse_field(grid, tol_mm=1e-6), order=1, mode="nearest")
    src = m.inverse(x.reshape(-1, 3), tol_mm=1e-6)
    inside = grid.contains(src, margin_voxels=0.0)
    expect = src @ np.array([1.0, 2.0, -0.5])
    np.testing.assert_allclose(moved.array.reshape(-1)[inside], expect[inside], atol=1e-3)


# ------------------------------------------------------------------ phantom pairs
def test_pair_is_deterministic_from_seed():
    a = phantom.make_pair(3, "nlst", "smoke", n_landmarks=50)
    b = phantom.make_pair(3, "nlst", "smoke", n_landmarks=50)
    c = phantom.make_pair(4, "nlst", "smoke", n_landmarks=50)
    for field in ("fixed", "moving", "fixed_mask", "moving_mask", "ground_truth"):
        np.testing.assert_array_equal(getattr(a, field).array, getattr(b, field).array)
    np.testing.assert_array_equal(a.fixed_landmarks, b.fixed_landmarks)
    np.testing.assert_array_equal(a.moving_landmarks, b.moving_landmarks)
    assert not np.array_equal(a.fixed.array, c.fixed.array)
    assert a.name == "phantom-nlst-003" and a.dataset == "phantom-nlst"


@pytest.mark.parametrize("style", phantom.STYLES)
def test_ground_truth_is_invertible(pairs, style):
    pair = pairs[style]
    assert phantom.motion_of(pair).lipschitz_bound() < 0.9
    det = jacobian_determinant(pair.ground_truth)
    assert det.min() > 0.3, f"{style}: det J min {det.min():.3f}"
    assert 0.8 < np.median(det) < 1.2


@pytest.mark.parametrize("style", phantom.STYLES)
def test_landmarks_move_by_exactly_the_ground_truth(pairs, style):
    pair = pairs[style]
    motion = phantom.motion_of(pair)
    assert len(pair.fixed_landmarks) == 300
    np.testing.assert_allclose(pair.moving_landmarks, pair.fixed_landmarks + motion.displacement(pair.fixed_landmarks),
                               atol=1e-9)
    np.testing.assert_allclose(transport_points(pair.fixed_landmarks, motion), pair.moving_landmarks, atol=1e-9)
    # the stored ground-truth field agrees (trilinear interpolation of a smooth field)
    est = pair.fixed_landmarks + sample_field(pair.ground_truth, pair.fixed_landmarks)
    assert np.abs(est - pair.moving_landmarks).max() < 0.3
    # the stored field is u at the voxel centres
    centres = pair.fixed.grid.voxel_centres_world().reshape(-1, 3)[::97]
    np.testing.assert_allclose(pair.ground_truth.array.reshape(-1, 3)[::97], motion.displacement(centres), atol=1e-4)


@pytest.mark.parametrize("style", phantom.STYLES)
def test_moving_image_follows_the_motion(pairs, style):
    """Warping the moving image back with the true motion, F'(x) = M(x + u(x)), matches the fixed
    image in the lungs far better than the unregistered moving image does."""
    pair = pairs[style]
    grid = pair.fixed.grid
    back = warp_image(pair.moving, pair.ground_truth, order=1, mode="nearest")
    lungs = pair.fixed_mask.array > 0
    if style == "cbct":  # compare only where the moving image saw the lungs
        lungs &= warp_image(pair.moving_mask, pair.ground_truth, order=0, mode="constant").array > 0
    f = pair.fixed.array[lungs]
    before, after = _ncc(f, pair.moving.array[lungs]), _ncc(f, back.array[lungs])
    # measured at seeds 0-3: NCC before 0.28-0.59, after 0.86-0.92 (CT) and 0.74-0.82 (noisy CBCT)
    assert after > (0.65 if style == "cbct" else 0.8), f"{style}: NCC after {after:.3f}"
    assert after > before + 0.25, f"{style}: NCC before {before:.3f}, after {after:.3f}"
    # the lung masks correspond too (Dice after warping back)
    mov_back = warp_image(pair.moving_mask, pair.ground_truth, order=0, mode="constant").array > 0
    fix = pair.fixed_mask.array > 0
    if style != "cbct":
        dice_before = 2 * (fix & (pair.moving_mask.array > 0)).sum() / (fix.sum() + (pair.moving_mask.array > 0).sum())
        dice_after = 2 * (fix & mov_back).sum() / (fix.sum() + mov_back.sum())
        # 8 mm voxels and nearest-neighbour masks: Dice 0.86-0.93 before, 0.94-0.97 after
        assert dice_after > 0.92 and dice_after > dice_before + 0.03
    assert grid.same_as(pair.moving.grid)


def test_moving_render_is_exact_at_landmarks():
    """Noise-free, 1 mm: the exhale rendering at a moving landmark equals the inhale rendering at the
    fixed landmark (the anatomy is sampled at phi^-1(y)), and landmarks sit on bright vessels."""
    anatomy, motion = phantom.make_subject(2, "dirlab")
    pair = phantom.make_pair(2, "dirlab", "smoke", n_landmarks=20, noise=False)
    for fl, ml in zip(pair.fixed_landmarks[:6], pair.moving_landmarks[:6]):
        g_f = Grid((5, 5, 5), spacing=(1.0, 1.0, 1.0), origin=tuple(fl - 2.0))
        g_m = Grid((5, 5, 5), spacing=(1.0, 1.0, 1.0), origin=tuple(ml - 2.0))
        f_img, f_lung = phantom.render_anatomy(anatomy, g_f)
        m_img, m_lung = phantom.render_anatomy(anatomy, g_m, motion)
        assert f_img[2, 2, 2] == pytest.approx(m_img[2, 2, 2], abs=1.0)
        assert f_img[2, 2, 2] > -300.0, "landmark not on a vessel"
        assert f_lung[2, 2, 2] and m_lung[2, 2, 2]


def test_vessel_culling_for_the_moving_image_misses_nothing():
    """The moving image finds each vessel's voxels in its box moved by phi; compare with a brute force
    where every segment is tested against every voxel."""
    anatomy, motion = phantom.make_subject(0, "nlst")
    pick = np.random.default_rng(0).choice(len(anatomy.seg_a), 150, replace=False)  # keeps brute force cheap
    anatomy = dataclasses.replace(anatomy, seg_a=anatomy.seg_a[pick], seg_b=anatomy.seg_b[pick],
                                  seg_ra=anatomy.seg_ra[pick] + 2.0, seg_rb=anatomy.seg_rb[pick] + 2.0)
    grid = phantom.phantom_grid("nlst", "smoke")
    h = float(np.prod(grid.spacing) ** (1 / 3))
    pos = motion.inverse(grid.voxel_centres_world().reshape(-1, 3), tol_mm=1e-4).reshape(*grid.shape, 3)
    culled = phantom._render_vessels(anatomy, grid, pos, h, forward=motion.transport,
                                     lipschitz=motion.lipschitz_bound())
    brute = phantom._render_vessels(anatomy, grid, pos, h, forward=motion.transport, lipschitz=1e4)
    assert brute.max() > 0.5
    np.testing.assert_array_equal(culled, brute)


@pytest.mark.parametrize(
    "style, lo, hi", [("dirlab", 6.0, 14.0), ("nlst", 4.0, 11.0), ("cbct", 4.0, 13.0)],
)
def test_initial_landmark_distances_in_stated_range(style, lo, hi):
    means = [phantom.make_pair(s, style, "smoke", n_landmarks=100).initial_distances().mean() for s in (0, 5)]
    assert all(lo <= m <= hi for m in means), f"{style}: {means}"


def test_grids_follow_profile_and_style():
    d, n = phantom.phantom_grid("dirlab", "smoke"), phantom.phantom_grid("nlst", "smoke")
    assert d.spacing == (8.0, 8.0, 12.0) and n.spacing == (8.0, 8.0, 8.0)
    assert phantom.phantom_grid("dirlab", "paper").spacing == (1.0, 1.0, 2.5)
    assert phantom.phantom_grid("nlst", "demo").spacing == (4.0, 4.0, 4.0)
    assert all(30 <= s <= 45 for s in n.shape)
    # lungs span ~250 mm laterally
    pair = phantom.make_pair(0, "nlst", "smoke", n_landmarks=10)
    xs = pair.fixed.grid.voxel_centres_world()[..., 0][pair.fixed_mask.array > 0]
    assert 200 <= xs.max() - xs.min() <= 290
    # lungs at lung HU, bone bright, outside air
    lung_hu = np.median(pair.fixed.array[pair.fixed_mask.array > 0])
    assert -900 < lung_hu < -750 and pair.fixed.array.max() > 400 and pair.fixed.array[0, 0, 0] < -900


def test_landmarks_are_tree_bifurcations_inside_lungs_and_spread(pairs):
    anatomy, _ = phantom.make_subject(1, "nlst")
    pair = pairs["nlst"]
    d = np.linalg.norm(pair.fixed_landmarks[:, None] - anatomy.bifurcations[None], axis=2).min(axis=1)
    assert d.max() < 1e-9
    assert (anatomy.lung_sd(pair.fixed_landmarks) < -2.0).all()
    gaps = np.linalg.norm(pair.fixed_landmarks[:, None] - pair.fixed_landmarks[None], axis=2)
    assert gaps[~np.eye(len(gaps), dtype=bool)].min() >= 6.0
    # in the masks (nearest voxel; 8 mm voxels blur the pleura)
    fixed_in = pair.fixed_mask.sample_world(pair.fixed_landmarks, order=0) > 0
    moving_in = pair.moving_mask.sample_world(pair.moving_landmarks, order=0) > 0
    assert fixed_in.mean() > 0.95 and moving_in.mean() > 0.95


def test_cbct_moving_image_is_cone_beam_like(pairs):
    pair = pairs["cbct"]
    fov = phantom.ConeBeamFOV(**pair.meta["cbct_fov_mm"])
    centres = pair.moving.grid.voxel_centres_world().reshape(-1, 3)
    inside = fov.contains(centres)
    assert 0.2 < inside.mean() < 0.8
    assert np.all(pair.moving.array.reshape(-1)[~inside] == phantom.AIR)
    assert not np.any(pair.moving_mask.array.reshape(-1)[~inside])
    assert fov.contains(pair.moving_landmarks, margin_mm=5.0).all()
    # noisier than the fan-beam fixed image: compare a smooth-soft-tissue proxy (voxel-to-voxel differences)
    fixed_rough = np.median(np.abs(np.diff(pair.fixed.array, axis=2)))
    moving_in = inside.reshape(pair.moving.grid.shape)
    moving_rough = np.median(np.abs(np.diff(pair.moving.array, axis=2))[moving_in[:, :, 1:] & moving_in[:, :, :-1]])
    assert moving_rough > 1.3 * fixed_rough


def test_make_cohort_and_bad_input():
    cohort = phantom.make_cohort("nlst", 2, seed=7, profile="smoke", progress=False, n_landmarks=20)
    assert [p.name for p in cohort] == ["phantom-nlst-007", "phantom-nlst-008"]
    with pytest.raises(ValueError, match="unknown phantom style"):
        phantom.make_pair(0, "ct")
    with pytest.raises(ValueError, match="unknown profile"):
        phantom.make_pair(0, "nlst", "huge")
    with pytest.raises(ValueError, match="bifurcations"):
        phantom.make_pair(0, "nlst", "smoke", n_landmarks=100000)


def test_motion_round_trips_through_meta(pairs):
    pair = pairs["dirlab"]
    m = phantom.motion_of(pair)
    again = BreathingMotion.from_dict(m.to_dict())
    pts = pair.fixed_landmarks[:10]
    np.testing.assert_array_equal(m.displacement(pts), again.displacement(pts))
    assert dataclasses.asdict(m.frame) == pair.meta["motion"]["frame"]
