"""Drive the SliceScrubber from Python and assert the state it shows."""

import numpy as np

from reindir_nb.pair import Pair
from reindir_nb.volume import Volume
from reindir_nb.widgets import SliceScrubber, landmarks_in_slab, take_slice


def make_pair(moving_origin=(0.0, 0.0, 0.0)):
    arr = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    fixed = Volume.from_array(arr, spacing=(1.0, 2.0, 3.0))
    moving = Volume.from_array(arr * 2, spacing=(1.0, 2.0, 3.0), origin=moving_origin)
    fl = fixed.grid.index_to_world([[1, 2, 3], [4, 5, 1]])  # (x, y, z) index
    return Pair(fixed, moving, fl, fl.copy(), name="toy")


def test_slices_and_landmarks_follow_the_widgets():
    s = SliceScrubber(make_pair())
    assert s.axis == "axial" and s.index == 3  # middle of 6 slices
    np.testing.assert_array_equal(s.image, s.layers.fixed[3])
    np.testing.assert_allclose(s.fixed_points, [[1, 2]])  # landmark 0 sits in slice z = 3 at (x=1, y=2)
    s.slice_w.value = 1
    np.testing.assert_allclose(s.fixed_points, [[4, 5]])
    s.layer_w.value = "difference"
    np.testing.assert_array_equal(s.image, s.layers.moving[1] - s.layers.fixed[1])
    s.axis_w.value = "coronal"
    assert s.slice_w.max == 6 and s.index == 3  # y has 7 voxels
    np.testing.assert_array_equal(s.layer_image("fixed"), s.layers.fixed[:, 3, :][::-1])


def test_moving_layer_is_resampled_in_world_coordinates():
    # moving origin shifted by +2 mm in x = 2 voxels: moving voxel i is at fixed voxel i + 2
    s = SliceScrubber(make_pair(moving_origin=(2.0, 0.0, 0.0)), layer="moving")
    m = s.pair.moving.array
    np.testing.assert_allclose(s.image[:, 2:], m[3][:, :-2])  # world alignment, not index alignment


def test_slab_projection_orientations():
    from reindir_nb.geometry import Grid

    g = Grid((5, 6, 7), spacing=(1, 1, 2))
    pts = g.index_to_world([[3, 4, 1]])
    sel, px = landmarks_in_slab(pts, g, "sagittal", 3)
    np.testing.assert_allclose(px, [[4, 5 - 1 - 1]])  # column y=4, row counted from the top (z flipped)
    img = take_slice(np.arange(5 * 6 * 7).reshape(5, 6, 7), "sagittal", 3)
    assert img.shape == (5, 6)
