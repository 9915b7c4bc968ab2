"""Preprocessing keeps world mm exact; lung masks; scale augmentation is consistent."""

import numpy as np
import pytest

import reindir_nb as rn
from reindir_nb import preprocess
from reindir_nb.geometry import Grid
from reindir_nb.volume import Volume


def synthetic_torso(spacing=(2.0, 2.0, 3.0), origin=(-100.0, -80.0, 50.0)):
    """Ellipsoid body at 0 HU in air, two ellipsoid lungs at -850 HU."""
    grid = Grid((40, 70, 90), spacing, origin)
    p = grid.voxel_centres_world() - grid.index_to_world([[45, 35, 20]])[0]
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    body = (x / 85) ** 2 + (y / 60) ** 2 < 1
    left = ((x + 38) / 28) ** 2 + (y / 38) ** 2 + (z / 50) ** 2 < 1
    right = ((x - 38) / 28) ** 2 + (y / 38) ** 2 + (z / 50) ** 2 < 1
    arr = np.where(body, 0.0, -1000.0)
    arr[left | right] = -850.0
    return Volume(arr.astype(np.float32), grid, "torso"), left | right


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_lung_mask_synthetic_torso():
    vol, truth = synthetic_torso()
    mask = preprocess.lung_mask(vol, use_lungmask=False)
    assert dice(mask.array, truth) > 0.95


@pytest.mark.parametrize("style", ["dirlab", "nlst", "cbct"])
def test_lung_mask_on_phantom(style):
    # demo size (4 mm): at 8 mm a quarter of the lung voxels are partial-volume boundary voxels
    pair = rn.phantom.make_pair(seed=1, style=style, profile="demo")
    mask = preprocess.lung_mask(pair.fixed, use_lungmask=False)
    assert dice(mask.array > 0, pair.fixed_mask.array > 0) >= 0.85  # measured 0.89 / 0.96 / 0.90


def test_lung_mask_no_air_is_an_error():
    with pytest.raises(ValueError, match="flat: no voxel below"):
        preprocess.lung_mask(Volume.from_array(np.zeros((5, 5, 5)), name="flat"), use_lungmask=False)


def test_resample_keeps_world_positions():
    vol, _ = synthetic_torso()
    iso = preprocess.resample_isotropic(vol, 4.0)
    assert iso.spacing == (4.0, 4.0, 4.0) and iso.origin == vol.origin
    assert np.allclose(iso.grid.extent_mm, vol.grid.extent_mm, atol=4.0)
    # deep inside the body (0 HU) and inside a lung (-850 HU), away from blurred edges
    pts = vol.grid.index_to_world([[45, 35, 20], [26, 35, 20]])
    np.testing.assert_allclose(vol.sample_world(pts), [0.0, -850.0])
    np.testing.assert_allclose(iso.sample_world(pts), [0.0, -850.0], atol=5)


def test_crop_or_pad_preserves_world_positions():
    arr = np.random.default_rng(0).normal(size=(10, 12, 14)).astype(np.float32)
    vol = Volume.from_array(arr, spacing=(1.5, 2.0, 2.5), origin=(3, -4, 5))
    centre = vol.grid.index_to_world([[2, 3, 4]])[0]
    out = preprocess.crop_or_pad(vol, (8, 16, 6), centre, pad_value=-7)
    assert out.grid.shape == (8, 16, 6)
    # every output voxel inside the source has the source value at the same world point
    world = out.grid.voxel_centres_world().reshape(-1, 3)
    inside = vol.grid.contains(world, margin_voxels=0.01)
    np.testing.assert_allclose(out.array.reshape(-1)[inside], vol.sample_world(world[inside]), atol=1e-5)
    assert np.all(out.array.reshape(-1)[~inside] == -7)


def test_scale_augment_is_consistent():
    pair = rn.phantom.make_pair(seed=2, style="nlst", profile="smoke")
    for s in (0.85, 1.15):
        aug = preprocess.scale_augment(pair, s)
        assert aug.fixed.grid.same_as(pair.fixed.grid) and aug.meta["scale"] == s
        centre = pair.fixed.grid.index_to_world(((pair.fixed.grid.size_xyz - 1) / 2)[None])[0]
        # the scaled landmarks sit on the same anatomy: same intensity as before scaling
        orig = (aug.fixed_landmarks - centre) / s + centre
        values = aug.fixed.sample_world(aug.fixed_landmarks)
        same = np.corrcoef(values, pair.fixed.sample_world(orig))[0, 1]
        unscaled = np.corrcoef(values, pair.fixed.sample_world(aug.fixed_landmarks))[0, 1]
        assert same > 0.9 and same > unscaled + 0.1  # resampling at 8 mm blurs thin vessels a little
        # correspondence: moving landmark = fixed landmark + scaled ground truth there
        gt = aug.ground_truth.sample_world(aug.fixed_landmarks)
        err = np.linalg.norm(aug.fixed_landmarks + gt - aug.moving_landmarks, axis=1)
        assert np.median(err) < 1.0  # mm, trilinear sampling of the field at 8 mm


def test_prepare_phantom_keeps_geometry():
    pair = rn.phantom.make_pair(seed=0, style="dirlab", profile="smoke")
    prep = rn.prepare(pair, "smoke")
    assert prep.fixed.grid.shape == (32, 32, 32) and prep.moving.grid.shape == (32, 32, 32)
    assert prep.fixed.spacing == (8.0, 8.0, 8.0)
    np.testing.assert_array_equal(prep.fixed_landmarks, pair.fixed_landmarks)  # world mm untouched
    assert 0.0 <= prep.fixed.array.min() and prep.fixed.array.max() <= 1.0
    assert prep.meta["prepared"] == "smoke" and rn.prepare(prep, "smoke") is prep
    assert prep.ground_truth.grid.same_as(prep.fixed.grid)
    # intensities at the landmarks agree with the original (normalised) within interpolation error
    before = preprocess.normalize_intensity(pair.fixed).sample_world(pair.fixed_landmarks)
    after = prep.fixed.sample_world(prep.fixed_landmarks)
    assert np.corrcoef(before, after)[0, 1] > 0.9


def test_prepare_real_pair():
    pair = rn.load_pair("bundled:elastix-lung")
    prep = rn.prepare(pair, "smoke")
    assert len(prep.fixed_landmarks) == 51
    assert prep.fixed_mask.sample_world(prep.fixed_landmarks, order=0).mean() > 0.8
