"""Preprocessing keeps world mm exact; lung masks match known lungs; scale augmentation is
consistent; ``rn.prepare`` keeps landmarks inside and does not normalise twice.

Exactness tests use images that are LINEAR in world mm: trilinear interpolation (and a Gaussian
blur, away from the borders) reproduces a linear function exactly, so any geometry error shows up
as a value error of (slope x mm offset).
"""

import logging
import sys
import types

import numpy as np
import pytest
from scipy import ndimage

import reindir_nb as rn
from reindir_nb import preprocess
from reindir_nb.core.geometry import Grid
from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume

RAMP = np.array([1.5, -0.8, 0.6])  # HU per mm along world (x, y, z)


def ramp_volume(grid: Grid, offset: float = -300.0, name: str = "ramp") -> Volume:
    """I(x) = offset + RAMP . x (HU), sampled at the voxel centres of ``grid``."""
    return Volume((offset + grid.voxel_centres_world() @ RAMP).astype(np.float32), grid, name)


def ramp_value(points: np.ndarray, offset: float = -300.0) -> np.ndarray:
    return offset + points @ RAMP


def rotation(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def synthetic_torso(spacing=(2.0, 2.0, 3.0), origin=(-100.0, -80.0, 50.0), shape=(40, 70, 90)):
    """Ellipsoid body at 0 HU in -1000 HU air, two ellipsoid lungs at -850 HU (the truth)."""
    grid = Grid(shape, spacing, origin)
    p = grid.voxel_centres_world() - grid.index_to_world([[45, 35, 20]])[0]
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    body = (x / 85) ** 2 + (y / 60) ** 2 < 1
    left = ((x + 38) / 28) ** 2 + (y / 38) ** 2 + (z / 50) ** 2 < 1
    right = ((x - 38) / 28) ** 2 + (y / 38) ** 2 + (z / 50) ** 2 < 1
    arr = np.where(body, 0.0, -1000.0)
    arr[left | right] = -850.0
    return Volume(arr.astype(np.float32), grid, "torso"), left | right


def dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def phantoms():
    """One demo-size (4 mm) phantom pair per style, generated once for this module."""
    return {s: rn.phantom.make_pair(seed=1, style=s, profile="demo") for s in ("dirlab", "nlst", "cbct")}


# --------------------------------------------------------------------- intensities
def test_normalize_intensity_maps_hu_window_to_unit_range():
    vol = Volume.from_array(np.array([-3000, -1000, -250, 0, 500, 2000], np.float32).reshape(1, 1, 6))
    out = preprocess.normalize_intensity(vol)
    np.testing.assert_allclose(out.array.ravel(), [0, 0, 0.5, 1000 / 1500, 1, 1], atol=1e-6)
    assert out.array.dtype == np.float32 and out.grid.same_as(vol.grid)
    np.testing.assert_allclose(preprocess.normalize_intensity(vol, (-1000, 0)).array.ravel(), [0, 0, 0.75, 1, 1, 1])
    with pytest.raises(ValueError, match="increasing"):
        preprocess.normalize_intensity(vol, (0, -1000))


# ----------------------------------------------------------------------- lung mask
def test_lung_mask_synthetic_torso():
    vol, truth = synthetic_torso()
    assert dice(preprocess.lung_mask(vol, use_lungmask=False).array, truth) > 0.97


def test_lung_mask_keeps_lungs_touching_a_cropped_border():
    # the image cuts through both lungs at the top face and one lung at a side face: lung
    # parenchyma touching the border is not outside air (it is not clear air below -950 HU)
    vol, truth = synthetic_torso()
    origin = tuple(vol.grid.index_to_world([[30, 20, 0]])[0])
    cut = Volume(vol.array[:, 20:, 30:], Grid((40, 50, 60), vol.spacing, origin))
    assert truth[:, 20, 30:].any() and truth[:, 20:, 30].any()  # the lungs really reach two cut faces
    assert dice(preprocess.lung_mask(cut, use_lungmask=False).array, truth[:, 20:, 30:]) > 0.97


def test_lung_mask_thin_chest_wall_does_not_leak():
    # a lung whose partial-volume edge touches the outside air through a one-voxel wall
    vol, truth = synthetic_torso()
    arr = vol.array.copy()
    arr[:, 35, 2:26] = -700.0  # partial-volume bridge from the outside air (x = 2) into the left lung
    mask = preprocess.lung_mask(vol.with_array(arr), use_lungmask=False).array
    assert dice(mask, truth) > 0.97


@pytest.mark.parametrize("style", ["dirlab", "nlst", "cbct"])
def test_lung_mask_on_phantom_lungs(phantoms, style):
    pair = phantoms[style]
    for image, truth in ((pair.fixed, pair.fixed_mask), (pair.moving, pair.moving_mask)):
        # measured 0.980-0.989 over 3 seeds per style (domes, vessels, airways, CBCT field of view)
        assert dice(preprocess.lung_mask(image, use_lungmask=False).array, truth.array) >= 0.95


def test_lung_mask_on_real_ct_matches_its_masks():
    pair = rn.load_pair("bundled:elastix-lung")  # a real CT cropped to one lung (touches the faces)
    assert dice(preprocess.lung_mask(pair.fixed, use_lungmask=False).array, pair.fixed_mask.array) > 0.95  # 0.990
    assert dice(preprocess.lung_mask(pair.moving, use_lungmask=False).array, pair.moving_mask.array) > 0.93  # 0.966


def test_lung_mask_no_air_is_an_error():
    with pytest.raises(ValueError, match="flat: no voxel below"):
        preprocess.lung_mask(Volume.from_array(np.zeros((5, 5, 5)), name="flat"), use_lungmask=False)


def test_lung_mask_only_outside_air_is_an_error():
    arr = np.full((6, 12, 12), -1000.0, np.float32)
    arr[:, 3:9, 3:9] = 40.0  # a body without lungs
    with pytest.raises(ValueError, match="noair: all air .* outside the body"):
        preprocess.lung_mask(Volume.from_array(arr, name="noair"), use_lungmask=False)


@pytest.fixture
def fake_lungmask(monkeypatch):
    """Installs a stand-in ``lungmask`` module; yields a setter for its LMInferer behaviour."""
    module = types.ModuleType("lungmask")
    monkeypatch.setitem(sys.modules, "lungmask", module)
    preprocess._lungmask_inferer.cache_clear()
    yield module
    preprocess._lungmask_inferer.cache_clear()


def test_lungmask_package_without_weights_falls_back_with_a_warning(fake_lungmask, caplog):
    class NoWeights:
        def __init__(self):
            raise RuntimeError("could not download weights")

    fake_lungmask.LMInferer = NoWeights
    vol, truth = synthetic_torso()
    with caplog.at_level(logging.WARNING, logger="reindir_nb.data.preprocess"):
        mask = preprocess.lung_mask(vol)
    assert "could not download weights" in caplog.text
    np.testing.assert_array_equal(mask.array, preprocess.lung_mask(vol, use_lungmask=False).array)


def test_lungmask_package_is_used_when_its_weights_load(fake_lungmask):
    class Inferer:
        def apply(self, image):  # lungmask returns a label array: 1 right lung, 2 left lung
            import SimpleITK as sitk

            arr = sitk.GetArrayFromImage(image)
            return np.where(arr == -850, 1 + (np.arange(arr.shape[2]) > arr.shape[2] // 2), 0)

    fake_lungmask.LMInferer = Inferer
    vol, truth = synthetic_torso()
    mask = preprocess.lung_mask(vol)
    assert "lungmask" in mask.name
    np.testing.assert_array_equal(mask.array, truth)


# ---------------------------------------------------------------------- resampling
def test_resample_isotropic_keeps_world_positions_with_oblique_direction():
    grid = Grid((30, 40, 36), (1.2, 0.9, 2.5), (-20.0, 15.0, 40.0), rotation(25, 10))
    vol = ramp_volume(grid)
    iso = preprocess.resample_isotropic(vol, 3.0)
    assert iso.spacing == (3.0, 3.0, 3.0) and iso.origin == vol.origin  # first voxel centre fixed
    np.testing.assert_allclose(iso.direction, vol.direction)
    assert np.all(np.abs(iso.grid.extent_mm - vol.grid.extent_mm) <= 1.5 + 1e-9)  # half a new voxel
    # interior voxels of the new grid carry the ramp value of their own world position
    centres = iso.grid.voxel_centres_world()[3:-3, 3:-3, 3:-3].reshape(-1, 3)
    values = iso.array[3:-3, 3:-3, 3:-3].ravel()
    np.testing.assert_allclose(values, ramp_value(centres), atol=0.05)


def test_resample_isotropic_masks_nearest():
    vol, truth = synthetic_torso()
    mask = preprocess.resample_isotropic(vol.with_array(truth), 4.0, order=0)
    assert mask.array.dtype == bool
    pts = mask.grid.voxel_centres_world().reshape(-1, 3)
    inside_src = vol.grid.contains(pts, margin_voxels=0.0)
    np.testing.assert_array_equal(mask.array.ravel()[inside_src],
                                  vol.with_array(truth.astype(np.float32)).sample_world(pts[inside_src], order=0) > 0.5)


def test_resample_torso_values_far_from_edges():
    vol, _ = synthetic_torso()
    iso = preprocess.resample_isotropic(vol, 4.0)
    pts = vol.grid.index_to_world([[45, 35, 20], [26, 35, 20]])  # body (0 HU), a lung (-850 HU)
    np.testing.assert_allclose(iso.sample_world(pts), [0.0, -850.0], atol=5)


# ------------------------------------------------------------------------ crop/pad
def test_crop_or_pad_preserves_world_positions():
    arr = np.random.default_rng(0).normal(size=(10, 12, 14)).astype(np.float32)
    vol = Volume.from_array(arr, spacing=(1.5, 2.0, 2.5), origin=(3, -4, 5), direction=rotation(30, -15))
    centre = vol.grid.index_to_world([[2, 3, 4]])[0]
    out = preprocess.crop_or_pad(vol, (8, 16, 6), centre, pad_value=-7)
    assert out.grid.shape == (8, 16, 6)
    # the patch's central voxel (z, y, x) = (4, 8, 3) is source voxel (x, y, z) = (2, 3, 4), same world point
    np.testing.assert_allclose(out.grid.index_to_world([[3, 8, 4]]), vol.grid.index_to_world([[2, 3, 4]]), atol=1e-9)
    assert out.array[4, 8, 3] == arr[4, 3, 2]
    # every output voxel centre is a source voxel centre (or outside: padding) and keeps its value
    world = out.grid.voxel_centres_world().reshape(-1, 3)
    idx = vol.grid.world_to_index(world)
    np.testing.assert_allclose(idx, np.round(idx), atol=1e-9)
    idx = np.round(idx).astype(int)
    inside = np.all((idx >= 0) & (idx < vol.grid.size_xyz), axis=1)
    assert inside.sum() == 5 * 11 * 8  # the overlap of the patch with the source
    np.testing.assert_array_equal(out.array.reshape(-1)[inside], arr[idx[inside, 2], idx[inside, 1], idx[inside, 0]])
    assert np.all(out.array.reshape(-1)[~inside] == -7)


def test_crop_or_pad_defaults_to_image_minimum_and_false_for_masks():
    vol = Volume.from_array(np.arange(8, dtype=np.float32).reshape(2, 2, 2) - 3)
    out = preprocess.crop_or_pad(vol, (4, 4, 4), vol.grid.index_to_world([[0, 0, 0]])[0])
    assert out.array.min() == -3 and (out.array == -3).sum() == 64 - 7
    mask = preprocess.crop_or_pad(vol.with_array(vol.array > 0), (4, 4, 4), (0, 0, 0))
    assert mask.array.dtype == bool and mask.array.sum() == 4


# ------------------------------------------------------------------- augmentation
def ramp_pair(offset_moving=(4.0, -3.0, 2.0)) -> Pair:
    """Linear-ramp fixed/moving images, a constant ground-truth shift and landmarks that follow it."""
    grid = Grid((30, 32, 34), (3.0, 3.0, 3.0), (-50.0, -48.0, -45.0))
    shift = np.array(offset_moving)
    rng = np.random.default_rng(3)
    fl = grid.index_to_world(rng.uniform(8, 22, size=(25, 3)))
    gt = Volume(np.broadcast_to(shift, grid.shape + (3,)).astype(np.float32).copy(), grid, "gt")
    ones = Volume(np.ones(grid.shape, bool), grid, "mask")
    return Pair(ramp_volume(grid, name="fixed"), ramp_volume(grid, offset=-250.0, name="moving"), fl, fl + shift,
                fixed_mask=ones, moving_mask=ones, name="ramp", ground_truth=gt,
                meta={"motion": {"stale": True}})


@pytest.mark.parametrize("scale", [0.8, 0.9, 1.17])
def test_scale_augment_landmarks_hit_the_same_anatomy(scale):
    pair = ramp_pair()
    aug = preprocess.scale_augment(pair, scale)
    assert aug.fixed.grid.same_as(pair.fixed.grid) and aug.meta["scale"] == pytest.approx(scale)
    assert "motion" not in aug.meta  # the exact phantom motion no longer describes the pair
    assert len(aug.fixed_landmarks) == 25  # all stay inside for these scales
    # image values at the scaled landmarks equal the values at the original landmarks
    np.testing.assert_allclose(aug.fixed.sample_world(aug.fixed_landmarks),
                               pair.fixed.sample_world(pair.fixed_landmarks), atol=1e-3)
    np.testing.assert_allclose(aug.moving.sample_world(aug.moving_landmarks),
                               pair.moving.sample_world(pair.moving_landmarks), atol=1e-3)
    # the ground truth is the scaled displacement, and still links fixed to moving landmarks
    gt = aug.ground_truth.sample_world(aug.fixed_landmarks)
    np.testing.assert_allclose(gt, np.broadcast_to(scale * np.array([4.0, -3.0, 2.0]), gt.shape), atol=1e-4)
    np.testing.assert_allclose(aug.fixed_landmarks + gt, aug.moving_landmarks, atol=1e-4)
    assert aug.fixed_mask.array.dtype == bool


def test_scale_augment_seeded_draws_in_range():
    pair = ramp_pair()
    scales = [preprocess.scale_augment(pair, seed=s).meta["scale"] for s in range(4)]
    assert all(0.8 <= s <= 1.2 for s in scales) and len(set(scales)) == 4
    assert preprocess.scale_augment(pair, seed=2).meta["scale"] == scales[2]
    gen = np.random.default_rng(7)
    expected = np.random.default_rng(7).uniform(0.8, 1.2)
    assert preprocess.scale_augment(pair, generator=gen).meta["scale"] == expected
    with pytest.raises(ValueError, match="ramp: scale must be positive"):
        preprocess.scale_augment(pair, -1.0)


def test_scale_augment_phantom_is_consistent():
    pair = rn.phantom.make_pair(seed=2, style="nlst", profile="smoke")
    for s in (0.85, 1.15):
        aug = preprocess.scale_augment(pair, s)
        centre = pair.fixed.grid.index_to_world(((pair.fixed.grid.size_xyz - 1) / 2)[None])[0]
        orig = (aug.fixed_landmarks - centre) / s + centre  # where each kept landmark came from
        values = aug.fixed.sample_world(aug.fixed_landmarks)
        same = np.corrcoef(values, pair.fixed.sample_world(orig))[0, 1]
        unscaled = np.corrcoef(values, pair.fixed.sample_world(aug.fixed_landmarks))[0, 1]
        assert same > 0.9 and same > unscaled + 0.1  # resampling at 8 mm blurs thin vessels a little
        gt = aug.ground_truth.sample_world(aug.fixed_landmarks)
        err = np.linalg.norm(aug.fixed_landmarks + gt - aug.moving_landmarks, axis=1)
        assert np.median(err) < 1.0  # mm, trilinear sampling of the field at 8 mm


# ------------------------------------------------------------------------ prepare
def torso_pair(moving_origin_shift=(0.0, 0.0, 0.0), landmarks=None) -> Pair:
    vol, truth = synthetic_torso()
    mov = Volume(vol.array, Grid(vol.grid.shape, vol.spacing, tuple(np.add(vol.origin, moving_origin_shift))), "mov")
    fl = ml = None
    if landmarks is not None:
        fl, ml = landmarks, landmarks + np.asarray(moving_origin_shift)
    return Pair(vol, mov, fl, ml, name="torso-pair")


def test_prepare_values_at_landmarks_are_exact_on_a_ramp():
    pair = ramp_pair()
    prep = rn.prepare(pair, "smoke")  # 3 mm -> 8 mm, 32^3 patch
    assert prep.fixed.spacing == (8.0, 8.0, 8.0) and prep.fixed.grid.shape == (32, 32, 32)
    np.testing.assert_array_equal(prep.fixed_landmarks, pair.fixed_landmarks)
    np.testing.assert_array_equal(prep.moving_landmarks, pair.moving_landmarks)
    assert prep.fixed.grid.contains(prep.fixed_landmarks, 0.0).all()
    assert prep.moving.grid.contains(prep.moving_landmarks, 0.0).all()
    # values at the landmarks: the normalised ramp at the same world point, up to the blur at the
    # image border (landmarks are >= 24 mm inside the source image)
    for img, pts, off in ((prep.fixed, pair.fixed_landmarks, -300.0), (prep.moving, pair.moving_landmarks, -250.0)):
        np.testing.assert_allclose(img.sample_world(pts), (ramp_value(pts, off) + 1000) / 1500, atol=2e-3)
    gt = prep.ground_truth.sample_world(prep.fixed_landmarks)
    np.testing.assert_allclose(gt, np.broadcast_to([4.0, -3.0, 2.0], gt.shape), atol=1e-5)


def test_prepare_phantom_keeps_geometry():
    pair = rn.phantom.make_pair(seed=0, style="dirlab", profile="smoke")
    prep = rn.prepare(pair, "smoke")
    assert prep.fixed.grid.shape == (32, 32, 32) and prep.moving.grid.shape == (32, 32, 32)
    assert prep.fixed.spacing == (8.0, 8.0, 8.0)
    np.testing.assert_array_equal(prep.fixed_landmarks, pair.fixed_landmarks)  # world mm untouched
    assert 0.0 <= prep.fixed.array.min() and prep.fixed.array.max() <= 1.0
    assert prep.meta["prepared"] == "smoke" and prep.meta["normalized"] is True
    assert rn.prepare(prep, "smoke") is prep
    assert prep.ground_truth.grid.same_as(prep.fixed.grid)
    before = preprocess.normalize_intensity(pair.fixed).sample_world(pair.fixed_landmarks)
    after = prep.fixed.sample_world(prep.fixed_landmarks)
    assert np.corrcoef(before, after)[0, 1] > 0.9  # 2.5-6 mm -> 8 mm: within interpolation error
    assert np.median(np.abs(before - after)) < 0.03
    # the ground truth still carries fixed landmarks onto moving ones (phantom: exact motion)
    err = np.linalg.norm(prep.fixed_landmarks + prep.ground_truth.sample_world(prep.fixed_landmarks)
                         - prep.moving_landmarks, axis=1)
    assert np.median(err) < 1.0


def test_prepare_does_not_normalise_twice():
    pair = rn.phantom.make_pair(seed=0, style="nlst", profile="smoke")
    smoke = rn.prepare(pair, "smoke")
    again = rn.prepare(smoke, "demo")  # re-gridded to 4 mm / 64^3, values stay in [0, 1]
    assert again.meta["prepared"] == "demo" and again.fixed.spacing == (4.0, 4.0, 4.0)
    pts = smoke.fixed.grid.voxel_centres_world()[8:24, 8:24, 8:24].reshape(-1, 3)
    np.testing.assert_allclose(again.fixed.sample_world(pts), smoke.fixed.array[8:24, 8:24, 8:24].ravel(), atol=1e-4)
    # a normalised pair without masks: the lung mask threshold is converted to [0, 1] units
    norm = pair.replace(fixed=preprocess.normalize_intensity(pair.fixed),
                        moving=preprocess.normalize_intensity(pair.moving),
                        fixed_mask=None, moving_mask=None, meta={**pair.meta, "normalized": True})
    prep = rn.prepare(norm, "smoke")
    ref = rn.prepare(pair.replace(fixed_mask=None, moving_mask=None), "smoke")
    assert prep.fixed.grid.same_as(ref.fixed.grid) and prep.moving.grid.same_as(ref.moving.grid)
    np.testing.assert_array_equal(prep.fixed_mask.array, ref.fixed_mask.array)
    # equal up to where clipping before vs after the anti-aliasing blur differs (air noise, bone)
    assert np.median(np.abs(prep.fixed.array - ref.fixed.array)) < 1e-3


def test_prepare_shifts_the_crop_to_keep_landmarks():
    # landmarks far to one side of the lungs: the lung-centred 32 x 32 x 32 patch at 4 mm would cut them
    vol, _ = synthetic_torso(spacing=(2.0, 2.0, 2.0), shape=(60, 70, 100))
    lms = vol.grid.index_to_world(np.array([[3.0, 30, 20], [40, 40, 30], [50, 35, 25]]))
    pair = Pair(vol, vol.with_array(vol.array), lms, lms, name="edge-landmarks")
    prof = rn.profiles.get_profile("smoke").with_(spacing_mm=4.0)
    prep = rn.prepare(pair, prof)
    assert prep.fixed.grid.contains(lms, margin_voxels=-1.0).all()  # at least one voxel inside
    np.testing.assert_array_equal(prep.fixed_landmarks, lms)
    # landmarks spanning more than the patch (124 mm at 4 mm): a clear error naming the pair
    far = vol.grid.index_to_world(np.array([[1.0, 30, 20], [98, 40, 30]]))
    with pytest.raises(ValueError, match=r"edge-landmarks: the fixed landmarks span \[194.0"):
        rn.prepare(Pair(vol, vol.with_array(vol.array), far, far, name="edge-landmarks"), prof)


def test_prepare_prealign_centres_the_moving_patch():
    shift = np.array([30.0, -20.0, 12.0])
    pair = torso_pair(moving_origin_shift=shift)
    plain = rn.prepare(pair, "smoke")
    matrix = np.eye(4)
    matrix[:3, 3] = shift + np.array([16.0, 0.0, 0.0])  # deliberately two voxels off in x
    pre = rn.prepare(pair, "smoke", prealign=matrix)
    assert pre.meta["prealign_matrix"] == matrix.tolist() and "prealign_matrix" not in plain.meta
    np.testing.assert_allclose(np.subtract(pre.moving.origin, pre.fixed.origin), matrix[:3, 3], atol=1e-6)
    np.testing.assert_allclose(np.subtract(plain.moving.origin, plain.fixed.origin), shift, atol=1e-6)
    with pytest.raises(ValueError, match="torso-pair: prealign must be"):
        rn.prepare(pair, "smoke", prealign="sideways")


def test_prepare_real_pair_demo_and_smoke():
    pair = rn.load_pair("bundled:elastix-lung")
    for name, shape in (("smoke", (32, 32, 32)), ("demo", (64, 64, 64))):
        prep = rn.prepare(pair, name)
        assert prep.fixed.grid.shape == shape and prep.moving.grid.shape == shape
        assert len(prep.fixed_landmarks) == 51
        np.testing.assert_array_equal(prep.moving_landmarks, pair.moving_landmarks)
        assert prep.fixed.grid.contains(prep.fixed_landmarks, margin_voxels=0.0).all()
        assert prep.moving.grid.contains(prep.moving_landmarks, margin_voxels=0.0).all()
        assert prep.fixed_mask.sample_world(prep.fixed_landmarks, order=0).mean() > 0.8
        # values at the landmarks agree with the original seen at the coarser resolution (the same
        # anti-aliasing blur) within trilinear interpolation error; measured 0.95 (smoke) / 0.945
        # (demo), and 0.81 when the prepared image is shifted by half a voxel
        factor = prep.fixed.spacing[0] / np.array(pair.fixed.spacing)
        sigma_zyx = np.where(factor > 1, 0.4 * factor, 0)[::-1]
        blurred = ndimage.gaussian_filter(pair.fixed.array.astype(np.float32), sigma_zyx)
        before = preprocess.normalize_intensity(pair.fixed.with_array(blurred)).sample_world(pair.fixed_landmarks)
        after = prep.fixed.sample_world(prep.fixed_landmarks)
        assert np.corrcoef(before, after)[0, 1] > 0.9


def test_the_preparation_record_is_typed_and_survives_saving(tmp_path):
    from reindir_nb.core.pair import HU_RANGE
    from reindir_nb.data import io

    raw = rn.phantom.make_pair(seed=2, style="nlst", profile="smoke", n_landmarks=10)
    assert raw.preparation.profile is None and not raw.preparation.normalized
    matrix = np.eye(4)
    matrix[:3, 3] = [1.5, -2.0, 0.5]
    prep = rn.prepare(raw, "smoke", prealign=matrix)
    record = prep.preparation
    assert (record.profile, record.normalized, record.hu_range) == ("smoke", True, HU_RANGE)
    np.testing.assert_array_equal(record.prealign_matrix, matrix)
    assert record.to_image_units(-1000.0) == 0.0 and record.to_image_units(500.0) == 1.0
    back = io.load_saved_pair(io.save_pair(prep, tmp_path / "p"))
    assert back.preparation.profile == "smoke" and back.preparation.normalized
    np.testing.assert_allclose(back.preparation.prealign_matrix, matrix)
    again = prep.with_preparation(record.__class__(profile="demo"))
    assert again.preparation.prealign_matrix is None and again.preparation.profile == "demo"
