"""VoxelMorph baseline: geometry convention against the package's own warp, maths of the
helpers, test-time fine-tuning on a translated pair, checkpoints and per-fold training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, shift

from reindir_nb import voxelmorph as V
from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume

pytestmark = pytest.mark.skipif(not V.available(), reason="voxelmorph package not installed")

SHIFT_ZYX = (2.0, -1.5, 1.0)  # moving = fixed content shifted by this many voxels


def translated_pair(name: str = "t", seed: int = 0, size: int = 32) -> Pair:
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.standard_normal((size, size, size)), 2.5)
    mov = shift(img, SHIFT_ZYX, order=1, mode="nearest")
    spacing, origin = (2.0, 2.0, 3.0), (5.0, -3.0, 2.0)
    f = Volume.from_array(img.astype(np.float32), spacing=spacing, origin=origin)
    m = Volume.from_array(mov.astype(np.float32), spacing=spacing, origin=origin)
    idx = rng.uniform(8, size - 8, size=(20, 3))
    # fixed voxel x shows the content that sits at x + shift in the moving image
    return Pair(f, m, f.grid.index_to_world(idx), f.grid.index_to_world(idx + np.array(SHIFT_ZYX[::-1])), name=name)


def tre(result, pair, it):
    return np.linalg.norm(result.transform_points(pair.fixed_landmarks, it) - pair.moving_landmarks, axis=1).mean()


def test_grad_l2_and_jacobian_by_hand():
    z, y, x = torch.meshgrid(*[torch.arange(6.0)] * 3, indexing="ij")
    field = torch.stack([0.5 * x, 0 * x, 2.0 * z])[None]  # d/dx of channel 0 = 0.5, d/dz of channel 2 = 2
    # forward differences: channel 0 varies along x (0.5), channel 2 along z (2); means over all diffs
    expected = ((2.0**2) / 3 + (0.5**2) / 3) / 3.0
    assert float(V.grad_l2(field)) == pytest.approx(expected)
    a = np.array([[0.1, 0.0, 0.2], [0.0, -0.3, 0.0], [0.05, 0.0, 0.0]])  # du_i/dx_j in (z, y, x) order
    zz, yy, xx = np.meshgrid(*[np.arange(8.0)] * 3, indexing="ij")
    coords = np.stack([zz, yy, xx])
    disp = np.einsum("ij,jzyx->izyx", a, coords)
    det = V.jacobian_determinant_voxels(disp)
    np.testing.assert_allclose(det, np.linalg.det(np.eye(3) + a), rtol=1e-10)


def test_points_follow_the_same_convention_as_the_package_warp():
    """Warping the moving image with the network's displacement (the package's spatial
    transformer) must equal sampling the moving image at transform_points of each fixed voxel."""
    pair = translated_pair()
    g = pair.fixed.grid
    rng = np.random.default_rng(1)
    disp = gaussian_filter(rng.standard_normal((3, 32, 32, 32)), (0, 4, 4, 4)) * 20.0  # voxels, (z, y, x)
    result = V.VoxelMorphResult(pair, None, {0: disp}, {0: 0.0}, 0.0, float("nan"))
    import voxelmorph as vxm

    moving = torch.as_tensor(np.asarray(pair.moving.array, dtype=np.float32))[None, None]
    warped = vxm.nn.modules.SpatialTransformer()(moving, torch.as_tensor(disp, dtype=torch.float32)[None])[0, 0]
    idx = np.array([[5, 7, 9], [20, 11, 3], [16, 16, 16], [9, 25, 12]])  # (x, y, z) fixed voxels
    world = g.index_to_world(idx.astype(float))
    mapped = result.transform_points(world)
    expected = pair.moving.sample_world(mapped, order=1)
    got = warped.numpy()[idx[:, 2], idx[:, 1], idx[:, 0]]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # a constant 1-voxel z displacement is one z spacing (3 mm) in world z
    const = V.VoxelMorphResult(pair, None, {0: np.stack([np.ones((32, 32, 32)), 0 * disp[1], 0 * disp[2]])},
                               {0: 0.0}, 0.0, float("nan"))
    np.testing.assert_allclose(const.transform_points(world) - world, np.tile([0.0, 0.0, 3.0], (4, 1)), atol=1e-9)


def test_fine_tuning_recovers_a_translation():
    pair = translated_pair()
    model = V.VoxelMorph(V.VoxelMorphConfig(lr=1e-3), seed=0)
    result = model.register(pair, iterations=(0, 10, 50))
    assert result.iterations == [0, 10, 50]
    initial = np.linalg.norm(pair.fixed_landmarks - pair.moving_landmarks, axis=1).mean()  # sqrt(2^2+3^2+6^2)=7
    assert initial == pytest.approx(7.0)
    assert tre(result, pair, 0) == pytest.approx(initial, abs=0.05)  # untrained net: ~zero field
    assert tre(result, pair, 50) < initial / 3.0
    assert result.seconds[50] > result.seconds[10] > 0 and result.step_seconds > 0 and result.encoder_seconds > 0
    assert (result.jacobian_determinant(50) > 0).all()
    # fine-tuning works on a copy: the model's own zero-shot prediction is unchanged
    again = model.predict(pair)
    np.testing.assert_allclose(again.displacements_vox[0], result.displacements_vox[0], atol=1e-6)


def test_checkpoint_round_trip_and_bad_file(tmp_path):
    pair = translated_pair(size=16)
    model = V.train_voxelmorph([pair], epochs=2, seed=3, progress=False)
    path = model.save(tmp_path / "vxm.pt")
    loaded = V.VoxelMorph.load(path)
    np.testing.assert_allclose(loaded.predict(pair).displacements_vox[0], model.predict(pair).displacements_vox[0],
                               atol=1e-6)
    assert len(loaded.training_log) == 2
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        V.VoxelMorph.load(bad)


def test_training_is_seeded_and_folds_hold_out_their_pairs(tmp_path):
    pairs = [translated_pair(f"p{i}", seed=i, size=16) for i in range(3)]
    a = V.train_voxelmorph(pairs[:2], epochs=1, seed=7, progress=False)
    b = V.train_voxelmorph(pairs[:2], epochs=1, seed=7, progress=False)
    for pa, pb in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(pa, pb)
    folds = {"p0": 0, "p1": 1, "p2": 1}
    models = V.train_voxelmorph_folds(pairs, folds, epochs=1, folder=tmp_path, progress=False)
    assert sorted(models) == [0, 1]
    assert len(models[0].training_log) == 2  # fold 0 holds p0 out: trained on p1, p2
    assert len(models[1].training_log) == 1  # fold 1 holds p1, p2 out: trained on p0
    assert (tmp_path / "voxelmorph_fold_0.pt").exists() and (tmp_path / "voxelmorph_fold_1.pt").exists()
    with pytest.raises(ValueError, match="without a fold"):
        V.train_voxelmorph_folds(pairs, {"p0": 0}, epochs=1, progress=False)
