"""Pin the one coordinate convention: index <-> world mm <-> INR [-1, 1]."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reindir_nb.core.geometry import Grid, apply_affine
from reindir_nb.core.volume import Volume


def oblique_grid():
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return Grid((5, 7, 9), spacing=(0.8, 1.2, 2.5), origin=(-10.0, 20.0, 35.0), direction=direction)


def test_index_to_world_hand_computed():
    g = Grid((10, 20, 30), spacing=(0.5, 2.0, 2.5), origin=(1.0, 2.0, 3.0))
    # index (x=4, y=3, z=2) -> origin + spacing * index
    np.testing.assert_allclose(g.index_to_world([[4, 3, 2]]), [[1 + 2.0, 2 + 6.0, 3 + 5.0]])


def test_normalized_align_corners_true():
    g = Grid((10, 20, 30), spacing=(0.5, 2.0, 2.5))
    # voxel centre 0 -> -1, last voxel centre (x=29, y=19, z=9) -> +1
    np.testing.assert_allclose(g.index_to_normalized([[0, 0, 0], [29, 19, 9]]), [[-1, -1, -1], [1, 1, 1]])
    np.testing.assert_allclose(g.index_to_normalized([[14.5, 9.5, 4.5]]), [[0, 0, 0]], atol=1e-12)


def test_round_trips_oblique():
    g = oblique_grid()
    pts = np.random.default_rng(0).uniform(-50, 50, size=(20, 3))
    np.testing.assert_allclose(g.index_to_world(g.world_to_index(pts)), pts, atol=1e-10)
    np.testing.assert_allclose(g.normalized_to_world(apply_affine(g.world_to_normalized_matrix(), pts)), pts, atol=1e-10)


def test_matches_sitk_physical_point():
    g = oblique_grid()
    vol = Volume(np.zeros(g.shape, np.float32), g)
    img = vol.to_sitk()
    for idx in [(0, 0, 0), (3, 2, 1), (8, 6, 4)]:
        np.testing.assert_allclose(g.index_to_world([idx])[0], img.TransformIndexToPhysicalPoint(idx), atol=1e-9)
    p = (1.5, 30.2, 40.0)
    np.testing.assert_allclose(g.world_to_index([p])[0], img.TransformPhysicalPointToContinuousIndex(p), atol=1e-9)


def test_inr_coords_agree_with_grid_sample():
    """A voxel's INR coordinate samples exactly that voxel with grid_sample(align_corners=True)."""
    g = Grid((4, 5, 6))
    arr = np.arange(np.prod(g.shape), dtype=np.float32).reshape(g.shape)
    idx = np.array([[5, 0, 3], [2, 4, 1], [0, 0, 0]], dtype=float)  # (x, y, z)
    coords = torch.tensor(g.index_to_normalized(idx), dtype=torch.float32).view(1, -1, 1, 1, 3)
    out = F.grid_sample(torch.tensor(arr)[None, None], coords, align_corners=True).view(-1).numpy()
    np.testing.assert_allclose(out, [arr[3, 0, 5], arr[1, 4, 2], arr[0, 0, 0]])


def test_volume_sitk_lossless():
    g = oblique_grid()
    arr = np.random.default_rng(1).normal(size=g.shape).astype(np.float32)
    vol = Volume(arr, g, "x")
    back = Volume.from_sitk(vol.to_sitk())
    np.testing.assert_array_equal(back.array, arr)
    assert back.grid.same_as(g, tol=1e-12)
    vec = Volume(np.random.default_rng(2).normal(size=(*g.shape, 3)), g)
    img = vec.to_sitk()
    assert img.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_array_equal(Volume.from_sitk(img).array, vec.array)


@pytest.mark.parametrize("spacing", [(0, 1, 1), (1, -1, 1), (1, float("nan"), 1)])
def test_bad_spacing_rejected(spacing):
    with pytest.raises(ValueError, match="spacing"):
        Grid((2, 2, 2), spacing=spacing)


def test_sample_world_matches_voxel():
    g = Grid((4, 5, 6), spacing=(2.0, 3.0, 4.0), origin=(10, 20, 30))
    arr = np.random.default_rng(3).normal(size=g.shape)
    vol = Volume(arr, g)
    p = g.index_to_world([[2, 3, 1]])
    np.testing.assert_allclose(vol.sample_world(p), [arr[1, 3, 2]])
