"""Displacement export: ITK displacement field round trip, Learn2Reg layout read as the challenge does."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import map_coordinates

import reindir_nb as rn
from reindir_nb import export
from reindir_nb.core.geometry import Grid


@pytest.fixture(scope="module")
def run():
    pair = rn.prepare(rn.phantom.make_pair(seed=11, style="dirlab", profile="smoke"), "smoke")
    c, s = np.cos(0.03), np.sin(0.03)
    pre = np.eye(4)
    pre[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    pre[:3, 3] = [3.0, -2.0, 5.0]
    # a real deformation (TRE 9.4 -> ~3 mm) composed with a known rotation + shift
    return rn.register(pair, iterations=10, points_per_step=1000, record_every=10, prealign=pre, output_scale=0.0,
                       progress=False)


def _transform(tx, points):
    return np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in points])


def test_itk_field_round_trip(run, tmp_path):
    pair = run.pair
    path = export.write_itk_displacement(run, tmp_path / "disp.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["disp.nii.gz"]  # atomic: no temporary left
    tx = export.read_itk_displacement_transform(path)
    # at voxel centres the stored field is the network's (pre-alignment included)
    idx = np.array([[5, 6, 7], [10, 12, 14], [20, 16, 9], [16, 16, 16]], float)
    pts = pair.fixed.grid.index_to_world(idx)
    ours = run.transform_points(pts, "forward")
    assert np.linalg.norm(ours - pts, axis=1).min() > 2.0  # a real displacement, not the identity
    np.testing.assert_allclose(_transform(tx, pts), ours, atol=1e-3)
    # between voxel centres: trilinear interpolation of the 8 mm field
    lm = pair.fixed_landmarks
    err = np.linalg.norm(_transform(tx, lm) - run.transform_points(lm, "forward"), axis=1)
    assert err.mean() < 0.25, err.mean()


def test_itk_field_on_finer_grid_matches_at_landmarks(run, tmp_path):
    """Written on a finer grid (here 2 mm around a group of landmarks), SimpleITK's transform
    gives the network's points at landmarks within 0.1 mm."""
    pair = run.pair
    lm = pair.fixed_landmarks
    inside = np.all(np.abs(lm[:, None] - lm[None]) < 18.0, axis=2)  # landmark pairs within a 36 mm cube
    centre = lm[np.argmax(inside.sum(1))]
    near = lm[np.all(np.abs(lm - centre) < 18.0, axis=1)]
    assert len(near) >= 10
    fine = Grid((21, 21, 21), (2.0, 2.0, 2.0), tuple(centre - 20.0), pair.fixed.grid.direction)
    tx = export.read_itk_displacement_transform(export.write_itk_displacement(run, tmp_path / "fine.mha", grid=fine))
    err = np.linalg.norm(_transform(tx, near) - run.transform_points(near, "forward"), axis=1)
    assert err.max() < 0.05, err  # measured 0.009 mm (0.15 mm on the 8 mm grid)
    refined = export.refine_grid(pair.fixed.grid, 4)
    assert refined.shape == (125, 125, 125) and refined.spacing == (2.0, 2.0, 2.0)
    np.testing.assert_allclose(refined.index_to_world([[124, 124, 124]]), pair.fixed.grid.index_to_world([[31, 31, 31]]))


def test_learn2reg_layout(run, tmp_path):
    nib = pytest.importorskip("nibabel")
    pair = run.pair
    path = export.write_learn2reg_displacement(run, tmp_path, 1, 2)
    assert path.name == "disp_0001_0002.nii.gz" and [p.name for p in tmp_path.iterdir()] == [path.name]
    img = nib.load(str(path))
    disp = img.get_fdata()
    nz, ny, nx = pair.fixed.grid.shape
    assert disp.shape == (nx, ny, nz, 3)
    np.testing.assert_allclose(img.header.get_zooms()[:3], pair.fixed.grid.spacing)
    np.testing.assert_allclose(export.read_learn2reg_displacement(path), disp, atol=1e-6)

    def challenge_warp(keypoints_vox):  # the Learn2Reg evaluation's keypoint warp (voxel units)
        return keypoints_vox + np.stack([map_coordinates(disp[..., c], keypoints_vox.T) for c in range(3)], axis=1)

    # keypoints at fixed voxel centres: exact
    rng = np.random.default_rng(0)
    k = np.argwhere(pair.fixed_mask.array)[rng.choice(int(pair.fixed_mask.array.sum()), 40, replace=False)][:, ::-1]
    k = k.astype(float)
    moved_mm = pair.moving.grid.index_to_world(challenge_warp(k))
    np.testing.assert_allclose(moved_mm, run.transform_points(pair.fixed.grid.index_to_world(k), "forward"), atol=1e-3)
    # the challenge's TRE at the landmarks (spline-interpolated field) agrees with ours
    k_fix = pair.fixed.grid.world_to_index(pair.fixed_landmarks)
    k_mov = pair.moving.grid.world_to_index(pair.moving_landmarks)
    tre_challenge = np.linalg.norm((challenge_warp(k_fix) - k_mov) * np.array(pair.moving.grid.spacing), axis=1)
    np.testing.assert_allclose(tre_challenge.mean(), run.landmark_errors("forward").mean(), atol=0.05)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="no such"):
        export.read_itk_displacement_transform(tmp_path / "missing.nii.gz")
    scalar = tmp_path / "scalar.mha"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkFloat32), str(scalar))
    with pytest.raises(ValueError, match="scalar.mha"):
        export.read_itk_displacement_transform(scalar)
    with pytest.raises(ValueError, match="scalar.mha"):
        export.read_learn2reg_displacement(scalar)
    with pytest.raises(ValueError, match="refine"):
        export.refine_grid(Grid((4, 4, 4)), 0)


def test_learn2reg_from_an_itk_field_equals_mapping_each_voxel():
    """The vectorised Learn2Reg array of a displacement field equals mapping every fixed voxel
    centre through the field (trilinear inside its grid, the pre-alignment outside) one by one."""
    from reindir_nb.core.geometry import Grid, apply_affine
    from reindir_nb.core.volume import Volume
    from reindir_nb.inr.export import learn2reg_from_field

    rng = np.random.default_rng(0)
    fixed = Grid((6, 7, 8), (2.0, 2.5, 3.0), (-10.0, 5.0, 2.0))
    moving = Grid((9, 8, 7), (1.5, 2.0, 2.5), (-12.0, 3.0, 0.0))
    field_grid = Grid((4, 4, 5), (4.0, 4.0, 4.0), (-6.0, 9.0, 6.0))  # covers part of the fixed image
    field = Volume(rng.normal(0, 2, (*field_grid.shape, 3)).astype(np.float32), field_grid)
    pre = np.eye(4)
    pre[:3, 3] = (1.0, -2.0, 0.5)
    got = learn2reg_from_field(field, pre, fixed, moving)
    centres = fixed.voxel_centres_world().reshape(-1, 3)
    disp = field.sample_world(centres, order=1, cval=np.nan)
    inside = np.all(np.isfinite(disp), axis=1)
    assert 0 < inside.sum() < len(inside)  # both cases are exercised
    moved = np.where(inside[:, None], centres + np.nan_to_num(disp), apply_affine(pre, centres))
    want = (moving.world_to_index(moved) - fixed.world_to_index(centres)).reshape(*fixed.shape, 3).transpose(2, 1, 0, 3)
    assert got.shape == (8, 7, 6, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-4)
