"""Drive the SliceScrubber from Python (set widget values) and assert the state it shows."""

import numpy as np
import pytest

from reindir_nb.core.geometry import Grid
from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume
from reindir_nb.viz.widgets import PINK, TEAL, LinkedState, SliceScrubber, landmarks_in_slab, take_slice

SPACING = (1.0, 2.0, 3.0)  # (x, y, z) mm


def make_pair(moving_origin=(0.0, 0.0, 0.0), fixed_idx=((1, 2, 3), (4, 5, 1)), moving_idx=None) -> Pair:
    """6 x 7 x 8 (z, y, x) fixed image with values = flat index; moving = 2 x fixed, shifted origin.
    Landmarks given as continuous (x, y, z) indices of the fixed grid."""
    arr = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    fixed = Volume.from_array(arr, spacing=SPACING)
    moving = Volume.from_array(arr * 2, spacing=SPACING, origin=moving_origin)
    fl = fixed.grid.index_to_world(np.asarray(fixed_idx, float))
    ml = fl.copy() if moving_idx is None else fixed.grid.index_to_world(np.asarray(moving_idx, float))
    return Pair(fixed, moving, fl, ml, name="toy")


def test_slices_and_landmarks_follow_the_widgets():
    s = SliceScrubber(make_pair())
    assert s.axis == "axial" and s.index == 3  # middle of 6 slices
    np.testing.assert_array_equal(s.image, s.layers.fixed[3])
    np.testing.assert_allclose(s.fixed_points, [[1, 2]])  # landmark 0 sits in slice z = 3 at (x=1, y=2)
    assert s.fixed_drawn.tolist() == [0]
    s.slice_w.value = 1
    np.testing.assert_allclose(s.fixed_points, [[4, 5]])
    assert s.fixed_drawn.tolist() == [1]
    s.layer_w.value = "difference"
    np.testing.assert_array_equal(s.image, s.layers.moving[1] - s.layers.fixed[1])
    assert s.clim[0] == -s.clim[1] == -np.abs(s.image).max()  # zero difference sits mid-colormap
    s.axis_w.value = "coronal"
    assert s.slice_w.max == 6 and s.index == 3  # y has 7 voxels; middle slice
    np.testing.assert_array_equal(s.layer_image("fixed"), s.layers.fixed[:, 3, :][::-1])  # superior on top
    s.layer_w.value = "checkerboard"
    f, m = s.layers.fixed[:, 3, :][::-1], s.layers.moving[:, 3, :][::-1]
    assert s.image[0, 0] == f[0, 0] and s.image[0, -1] == m[0, -1]  # 8 tiles across 8 columns alternate


def test_what_is_drawn_is_the_state():
    s = SliceScrubber(make_pair(moving_idx=((2, 2, 3), (4, 5, 1))))
    image = s.ax.images[0]
    np.testing.assert_array_equal(image.get_array(), s.image)
    assert image.get_clim() == s.clim
    fixed_dots, moving_dots = s.ax.collections
    np.testing.assert_allclose(fixed_dots.get_offsets(), [[1, 2]])
    np.testing.assert_allclose(moving_dots.get_offsets(), [[2, 2]])
    np.testing.assert_allclose(fixed_dots.get_facecolor()[0][:3], [0, 0x99 / 255, 0x99 / 255])  # TEAL
    assert (TEAL, PINK) == ("#009999", "#ff3399")
    np.testing.assert_allclose(moving_dots.get_facecolor()[0][:3], [1, 0x33 / 255, 0x99 / 255])  # PINK


@pytest.mark.parametrize("axis, aspect", [("axial", 2.0 / 1.0), ("coronal", 3.0 / 1.0), ("sagittal", 3.0 / 2.0)])
def test_pixel_aspect_comes_from_the_spacing(axis, aspect):
    s = SliceScrubber(make_pair(), axis=axis)
    assert s.aspect == pytest.approx(aspect)  # row height / column width in mm
    assert s.ax.get_aspect() == pytest.approx(aspect)


def test_landmarks_within_the_slab_only():
    # continuous z indices 2.0, 2.4, 2.6, 3.9, 5.0 (x = y = 1)
    zs = [2.0, 2.4, 2.6, 3.9, 5.0]
    pair = make_pair(fixed_idx=[(1, 1, z) for z in zs])
    s = SliceScrubber(pair)
    s.slice_w.value = 2
    assert s.fixed_drawn.tolist() == [0, 1]  # |z - 2| <= 0.5
    s.slice_w.value = 3
    assert s.fixed_drawn.tolist() == [2]
    s.slice_w.value = 4
    assert s.fixed_drawn.tolist() == [3]
    wide = SliceScrubber(pair, slab=1.0)
    wide.slice_w.value = 3
    assert wide.fixed_drawn.tolist() == [0, 1, 2, 3]  # |z - 3| <= 1
    np.testing.assert_allclose(wide.fixed_points, [[1, 1]] * 4)


def test_moving_layer_is_resampled_in_world_coordinates():
    # moving origin shifted by +2 mm in x = 2 voxels: moving voxel i is at fixed voxel i + 2
    s = SliceScrubber(make_pair(moving_origin=(2.0, 0.0, 0.0)), layer="moving")
    m = s.pair.moving.array
    np.testing.assert_allclose(s.image[:, 2:], m[3][:, :-2])  # world alignment, not index alignment


def test_moving_grid_with_other_shape_and_origin():
    """A moving image on another grid (shape, origin, spacing) whose values are a linear function of
    world mm: trilinear resampling onto the fixed grid reproduces that function exactly."""

    def f(x, y, z):
        return 0.5 * x - 2.0 * y + 3.0 * z + 7.0

    fixed = Volume.from_array(np.zeros((6, 7, 8), np.float32), spacing=SPACING, origin=(0.0, 0.0, 0.0))
    mgrid = Grid((9, 12, 14), spacing=(1.0, 1.5, 2.0), origin=(-3.25, -4.5, -2.0))
    xyz = mgrid.voxel_centres_world()
    moving = Volume(f(xyz[..., 0], xyz[..., 1], xyz[..., 2]).astype(np.float32), mgrid)
    s = SliceScrubber(Pair(fixed, moving, name="grids"), axis="axial", layer="moving")
    s.slice_w.value = 2
    world = fixed.grid.voxel_centres_world()[2]  # (y, x, 3) of fixed slice z = 2
    np.testing.assert_allclose(s.image, f(world[..., 0], world[..., 1], world[..., 2]), atol=1e-3)
    assert not np.allclose(s.image, moving.array[2, :7, :8])  # index-to-index would be wrong
    s.layer_w.value = "difference"
    np.testing.assert_allclose(s.image, f(world[..., 0], world[..., 1], world[..., 2]), atol=1e-3)  # fixed = 0


def test_linked_state_moves_every_view():
    pair = make_pair()
    state = LinkedState()
    a, b = SliceScrubber(pair, state=state), SliceScrubber(pair, state=state, layer="moving")
    a.slice_w.value = 1
    assert state.index == 1 and b.index == 1
    np.testing.assert_array_equal(b.image, b.layers.moving[1])
    b.axis_w.value = "sagittal"
    assert a.axis == "sagittal" and a.slice_w.max == 7 and a.index == b.index == 4
    np.testing.assert_array_equal(a.image, a.layers.fixed[:, :, 4][::-1])
    state.select_landmark(1)  # landmark 1 sits at x index 4
    assert a.index == 4 and 1 in a.fixed_drawn
    state.axis = "axial"
    assert a.axis == b.axis == "axial" and a.index == b.index == 1  # landmark 1 is in slice z = 1
    assert a.fixed_drawn.tolist() == [1]


def test_bad_arguments_are_rejected():
    pair = make_pair()
    with pytest.raises(ValueError, match="axis"):
        SliceScrubber(pair, axis="transverse")
    with pytest.raises(ValueError, match="layer"):
        SliceScrubber(pair, layer="warped")
    other = Pair(Volume.from_array(np.zeros((5, 5, 5), np.float32)), Volume.from_array(np.zeros((5, 5, 5), np.float32)))
    state = LinkedState()
    SliceScrubber(pair, state=state)
    with pytest.raises(ValueError, match="same fixed grid"):
        SliceScrubber(other, state=state)


def test_slab_projection_orientations():
    g = Grid((5, 6, 7), spacing=(1, 1, 2))
    pts = g.index_to_world([[3, 4, 1]])
    sel, px = landmarks_in_slab(pts, g, "sagittal", 3)
    np.testing.assert_allclose(px, [[4, 5 - 1 - 1]])  # column y=4, row counted from the top (z flipped)
    img = take_slice(np.arange(5 * 6 * 7).reshape(5, 6, 7), "sagittal", 3)
    assert img.shape == (5, 6)
