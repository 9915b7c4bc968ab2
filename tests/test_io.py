"""rn.io (data/images.py, points.py, store.py): image and landmark readers/writers pinned by HAND-COMPUTED mm coordinates, saved pairs.

Geometry everywhere: world = origin + direction @ (spacing * index_0based), index in (x, y, z),
arrays in (z, y, x). Origins, spacings and directions are deliberately non-trivial and the axes
have different sizes, so an off-by-one or a swapped axis changes the expected numbers.
"""

import json

import numpy as np
import pandas as pd
import pytest

from reindir_nb import io
from reindir_nb.data import store
from reindir_nb.data.datasets import data_root
from reindir_nb.core.geometry import Grid
from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume

from imagefiles import FLIP_XY, write_sitk

# ----------------------------------------------------------------------------------- images
@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
def test_read_image_keeps_geometry_and_dtype(tmp_path, suffix):
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (z, y, x)
    path = write_sitk(tmp_path / f"ct{suffix}", arr, (0.8, 1.25, 3.0), (-120.5, 30.0, -900.25), FLIP_XY)
    vol = io.read_image(path)
    assert vol.array.dtype == np.int16 and vol.grid.shape == (4, 5, 6)
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.spacing, (0.8, 1.25, 3.0), rtol=1e-6)
    np.testing.assert_allclose(vol.origin, (-120.5, 30.0, -900.25), rtol=1e-6)
    np.testing.assert_allclose(vol.direction, np.reshape(FLIP_XY, (3, 3)))
    # voxel (x=5, y=1, z=3): x = -120.5 - 5*0.8 = -124.5, y = 30 - 1*1.25 = 28.75, z = -900.25 + 3*3 = -891.25
    np.testing.assert_allclose(vol.grid.index_to_world(np.array([[5.0, 1, 3]])), [[-124.5, 28.75, -891.25]], atol=1e-4)
    assert vol.sample_world(np.array([[-124.5, 28.75, -891.25]]), order=0)[0] == arr[3, 1, 5]
    assert str(path) in vol.name


def test_write_image_round_trip_is_atomic_and_lossless(tmp_path):
    vol = Volume.from_array(np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32),
                            spacing=(1.366, 0.7, 2.5), origin=(-153.827, -150.352, -1434.5), direction=np.reshape(FLIP_XY, (3, 3)))
    out = io.write_image(vol, tmp_path / "sub" / "v.mha")
    back = io.read_image(out)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.grid.same_as(vol.grid, tol=1e-12)  # MetaImage keeps double-precision geometry
    mask = vol.with_array(vol.array > 0)
    back_mask = io.read_image(io.write_image(mask, tmp_path / "m.nii.gz"))
    assert back_mask.array.dtype == np.uint8
    np.testing.assert_array_equal(back_mask.array > 0, mask.array)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["m.nii.gz", "v.mha"]


def test_write_image_failure_leaves_no_file(tmp_path):
    vol = Volume.from_array(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(RuntimeError):
        io.write_image(vol, tmp_path / "v.unknownformat")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- DIR-LAB
def test_dirlab_table_and_raw_reader(tmp_path):
    shapes = {c: io.dirlab_grid(c).shape for c in range(1, 11)}
    assert shapes[1] == (94, 256, 256) and shapes[2] == (112, 256, 256) and shapes[5] == (106, 256, 256)
    assert [shapes[c][0] for c in range(6, 11)] == [128, 136, 128, 128, 120]
    assert all(shapes[c][1:] == (512, 512) for c in range(6, 11))
    assert [io.dirlab_grid(c).spacing[0] for c in range(1, 6)] == [0.97, 1.16, 1.15, 1.13, 1.10]
    assert all(io.dirlab_grid(c).spacing[2] == 2.5 for c in range(1, 11))
    # case 4: 256 x 256 x 99 int16 little endian, stored = HU + 1024
    raw = np.full((99, 256, 256), 24, dtype="<i2")  # HU -1000 (air)
    raw[60, 10, 200] = 1024 + 55
    path = tmp_path / "case4_T00_s.img"
    raw.tofile(path)
    vol = io.read_dirlab_img(path, 4)
    assert vol.array.dtype == np.float32 and vol.grid.shape == (99, 256, 256)
    assert vol.spacing == (1.13, 1.13, 2.5) and vol.origin == (0.0, 0.0, 0.0)
    assert vol.array[60, 10, 200] == 55.0 and vol.array[0, 0, 0] == -1000.0
    # big-endian bytes would give 24 -> 6144 - 1024: pin the byte order with the raw bytes
    assert path.read_bytes()[:2] == b"\x18\x00"


def test_dirlab_landmarks_are_one_based(tmp_path):
    grid = io.dirlab_grid(2)  # 256 x 256 x 112, 1.16 x 1.16 x 2.5 mm, origin 0
    (tmp_path / "Case2_300_T00_xyz.txt").write_text("31\t21\t11\n1 1 1\n256 256 112\n")
    pts = io.read_dirlab_landmarks(tmp_path / "Case2_300_T00_xyz.txt", grid)
    # 1-based (31, 21, 11) = 0-based (30, 20, 10): x = 30*1.16 = 34.8, y = 20*1.16 = 23.2, z = 10*2.5 = 25
    # 1-based (1, 1, 1) = voxel 0 = origin; (256, 256, 112) = last voxel: 255*1.16 = 295.8, 111*2.5 = 277.5
    np.testing.assert_allclose(pts, [[34.8, 23.2, 25.0], [0, 0, 0], [295.8, 295.8, 277.5]], atol=1e-9)
    # the same convention on a grid with an origin and anisotropic spacing:
    g = Grid((20, 30, 40), spacing=(0.5, 0.75, 2.0), origin=(-10.0, 20.0, 30.0))
    (tmp_path / "lm.txt").write_text("4 3 2\n")
    # 0-based (3, 2, 1): x = -10 + 3*0.5 = -8.5, y = 20 + 2*0.75 = 21.5, z = 30 + 1*2 = 32
    np.testing.assert_allclose(io.read_dirlab_landmarks(tmp_path / "lm.txt", g), [[-8.5, 21.5, 32.0]])


# ------------------------------------------------------------------------------- Learn2Reg
def test_learn2reg_keypoints_axis_order_against_the_image(tmp_path):
    # SimpleITK array (z, y, x) = (6, 8, 10): the NIfTI axes are i = x (10), j = y (8), k = z (6)
    arr = np.zeros((6, 8, 10), np.float32)
    arr[4, 2, 7] = 99.0  # x = 7, y = 2, z = 4
    path = write_sitk(tmp_path / "NLST_0001_0000.nii.gz", arr, (1.5, 2.0, 2.5), (-10.0, 5.0, 100.0), FLIP_XY)
    vol = io.read_image(path)
    (tmp_path / "kp.csv").write_text("7.0,2.0,4.0\n0,0,0\n")
    pts = io.read_learn2reg_keypoints(tmp_path / "kp.csv", vol.grid)
    # columns (i, j, k) = (x, y, z), 0-based; direction diag(-1, -1, 1):
    # x = -10 - 7*1.5 = -20.5, y = 5 - 2*2.0 = 1.0, z = 100 + 4*2.5 = 110.0; (0, 0, 0) = origin
    np.testing.assert_allclose(pts, [[-20.5, 1.0, 110.0], [-10.0, 5.0, 100.0]], atol=1e-5)
    assert vol.sample_world(pts[:1], order=0)[0] == 99.0  # the keypoint sits on the marked voxel
    # nibabel's array order is SimpleITK's reversed: data[i, j, k] == arr[k, j, i]
    assert np.transpose(arr)[7, 2, 4] == 99.0


# -------------------------------------------------------------------------- generic points
def test_read_points_units_are_explicit(tmp_path):
    g = Grid((10, 10, 10), spacing=(2.0, 3.0, 4.0), origin=(1.0, -1.0, 0.5))
    (tmp_path / "p.csv").write_text("x,y,z\n1,2,3\n0.5,0,0\n")
    np.testing.assert_allclose(io.read_points(tmp_path / "p.csv", units="mm"), [[1, 2, 3], [0.5, 0, 0]])
    # voxel (1, 2, 3): x = 1 + 1*2 = 3, y = -1 + 2*3 = 5, z = 0.5 + 3*4 = 12.5; (0.5, 0, 0): x = 2
    np.testing.assert_allclose(io.read_points(tmp_path / "p.csv", units="voxel", grid=g), [[3, 5, 12.5], [2, -1, 0.5]])
    # one-based voxel (1, 2, 3) = 0-based (0, 1, 2): x = 1, y = 2, z = 8.5
    np.testing.assert_allclose(io.read_points(tmp_path / "p.csv", "voxel", g, one_based=True)[0], [1, 2, 8.5])
    (tmp_path / "t.txt").write_text("# comment\n1 2 3 7\n4;5;6;8\n")  # extra columns ignored
    np.testing.assert_allclose(io.read_points(tmp_path / "t.txt", units="mm"), [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match=r"p\.csv: units must be 'mm' or 'voxel'"):
        io.read_points(tmp_path / "p.csv", units="auto")
    with pytest.raises(ValueError, match=r"p\.csv: voxel units need the image grid"):
        io.read_points(tmp_path / "p.csv", units="voxel")


def test_points_csv_round_trip(tmp_path):
    pts = np.array([[-36.351, -36.974, -1204.5], [1e-3, 2.5, 1234.125]])
    io.write_points_csv(pts, tmp_path / "lm.csv")
    assert (tmp_path / "lm.csv").read_text().splitlines()[0] == "x_mm,y_mm,z_mm"
    np.testing.assert_allclose(io.read_points(tmp_path / "lm.csv", units="mm"), pts, atol=1e-6)


# ------------------------------------------------------------------------------- elastix
def test_elastix_point_sets_real_files():
    root = data_root()
    f = io.read_elastix_points(root / "itkelastix_lung_point_sets" / "CT_3D_lung_fixed_point_set_corrected.txt")
    m = io.read_elastix_points(root / "itkelastix_lung_point_sets" / "CT_3D_lung_moving_point_set_corrected.txt")
    assert f.shape == m.shape == (51, 3)
    np.testing.assert_allclose(f[0], [-36.351, -36.974, -1204.5])
    assert np.linalg.norm(f - m, axis=1).mean() == pytest.approx(35.27, abs=0.01)
    base = io.read_elastix_points(root / "elastix_lung_pair" / "3DCT_lung_baseline_landmarks.txt")
    truth = io.read_elastix_points(root / "elastix_lung_pair" / "3DCT_lung_groundtruth_point.txt")
    assert base.shape == truth.shape == (100, 3)
    np.testing.assert_allclose(base[:2], [[-36.351, -36.974, -1204.5], [98.883, -26.046, -1324.5]])
    assert 33.5 < np.linalg.norm(base - truth, axis=1).mean() < 35.0  # PROVENANCE: 34.3 mm
    # read_points recognises the format when the stated units agree
    np.testing.assert_array_equal(
        io.read_points(root / "elastix_lung_pair" / "3DCT_lung_baseline_landmarks.txt", units="mm"), base)
    with pytest.raises(ValueError, match="elastix 'point' file holds mm coordinates, but units='voxel'"):
        io.read_points(root / "elastix_lung_pair" / "3DCT_lung_baseline_landmarks.txt", units="voxel", grid=Grid((2, 2, 2)))
    mask = io.read_image(root / "itkelastix_lung_point_sets" / "CT_3D_lung_fixed_mask.mha")
    assert mask.grid.shape == (129, 157, 115)
    np.testing.assert_allclose(mask.spacing, (1.366, 1.366, 2.5))


def test_elastix_points_round_trip_and_index_files(tmp_path):
    pts = np.array([[1.5, -2.25, 3.125], [4, 5, 6]])
    io.write_elastix_points(pts, tmp_path / "p.txt")
    assert (tmp_path / "p.txt").read_text().splitlines()[:2] == ["point", "2"]
    np.testing.assert_allclose(io.read_elastix_points(tmp_path / "p.txt"), pts)
    (tmp_path / "i.txt").write_text("index\n1\n1 2 3\n")
    grid = Grid((10, 10, 10), spacing=(2, 3, 4), origin=(1, 1, 1))
    # elastix indices are 0-based: x = 1 + 1*2 = 3, y = 1 + 2*3 = 7, z = 1 + 3*4 = 13
    np.testing.assert_allclose(io.read_elastix_points(tmp_path / "i.txt", grid), [[3, 7, 13]])
    with pytest.raises(ValueError, match=r"i\.txt: 'index' point sets need the image grid"):
        io.read_elastix_points(tmp_path / "i.txt")


# --------------------------------------------------------------------------- saved pairs
def _small_pair(name="p0", dataset="toy", shift=(1.0, -2.0, 3.0)):
    rng = np.random.default_rng(1)
    grid_args = dict(spacing=(1.5, 2.0, 2.5), origin=(-20.25, 10.5, -300.0), direction=np.reshape(FLIP_XY, (3, 3)))
    fixed = Volume.from_array(rng.normal(size=(6, 7, 8)).astype(np.float32), name="f", **grid_args)
    moving = Volume.from_array(rng.normal(size=(6, 7, 8)).astype(np.float32), name="m", **grid_args)
    mask = np.zeros((6, 7, 8), bool)
    mask[2:4, 2:5, 3:6] = True
    gt = np.broadcast_to(np.array(shift, np.float32), (6, 7, 8, 3)).copy()
    fl = fixed.grid.index_to_world(np.array([[1.0, 2, 3], [4, 5, 2]]))
    return Pair(fixed, moving, fl, fl + np.array(shift), fixed.with_array(mask), moving.with_array(mask),
                name=name, dataset=dataset, ground_truth=fixed.with_array(gt),
                meta={"label": "toy", "seed": np.int64(3), "amp": np.float32(1.5), "list": (1, 2)})


def test_save_and_load_pair_round_trip(tmp_path):
    pair = _small_pair()
    io.save_pair(pair, tmp_path / "p0")
    assert sorted(p.name for p in (tmp_path / "p0").iterdir()) == sorted(
        ["fixed.mha", "moving.mha", "fixed_mask.mha", "moving_mask.mha", "ground_truth.mha",
         "fixed_landmarks.csv", "moving_landmarks.csv", "pair.json"])
    info = json.loads((tmp_path / "p0" / "pair.json").read_text())
    assert info["name"] == "p0" and info["dataset"] == "toy" and info["meta"] == {"label": "toy", "seed": 3, "amp": 1.5, "list": [1, 2]}
    back = io.load_saved_pair(tmp_path / "p0")
    for attr in ("fixed", "moving", "fixed_mask", "moving_mask", "ground_truth"):
        a, b = getattr(pair, attr), getattr(back, attr)
        np.testing.assert_array_equal(b.array, a.array)
        assert b.grid.same_as(a.grid, tol=1e-12), attr
    assert back.fixed_mask.array.dtype == bool
    np.testing.assert_allclose(back.fixed_landmarks, pair.fixed_landmarks, atol=1e-6)
    np.testing.assert_allclose(back.initial_distances(), np.linalg.norm([1.0, -2.0, 3.0]), atol=1e-5)
    assert back.name == "p0" and back.dataset == "toy" and back.meta["seed"] == 3


def test_save_pair_replaces_whole_folder_and_failure_keeps_old(tmp_path, monkeypatch):
    io.save_pair(_small_pair(), tmp_path / "p")
    bare = Pair(_small_pair().fixed, _small_pair().moving, name="bare", dataset="toy")
    io.save_pair(bare, tmp_path / "p")  # no masks/landmarks now: nothing stale may remain
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["fixed.mha", "moving.mha", "pair.json"]
    assert io.load_saved_pair(tmp_path / "p").name == "bare"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_points_csv", broken)  # the name the pair store writes with
    with pytest.raises(OSError, match="disk full"):
        io.save_pair(_small_pair(), tmp_path / "p")
    assert io.load_saved_pair(tmp_path / "p").name == "bare"  # old folder untouched
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary folders left


def test_save_pairs_manifest_and_filter(tmp_path):
    pairs = [_small_pair("a0", "toy"), _small_pair("a1", "toy", shift=(0, 0, 4.0)),
             Pair(_small_pair().fixed, _small_pair().moving, name="b0", dataset="other")]
    table = io.save_pairs(pairs, tmp_path, progress=False)
    disk = pd.read_csv(tmp_path / "manifest.csv")
    assert list(disk.columns) == ["name", "dataset", "label", "path", "fixed_shape", "moving_shape",
                                  "spacing_mm", "landmarks", "initial_mean_mm", "initial_max_mm"]
    assert list(disk["path"]) == ["toy/a0", "toy/a1", "other/b0"] and list(table["name"]) == ["a0", "a1", "b0"]
    assert disk.loc[0, "fixed_shape"] == "6x7x8" and disk.loc[0, "spacing_mm"] == "1.5x2x2.5"
    assert list(disk["landmarks"]) == [2, 2, 0]
    # |(1, -2, 3)| = sqrt(14) = 3.7417; |(0, 0, 4)| = 4
    np.testing.assert_allclose(disk["initial_mean_mm"][:2], [np.sqrt(14), 4.0], atol=1e-5)
    assert np.isnan(disk["initial_mean_mm"][2])
    assert [p.name for p in io.load_manifest(tmp_path)] == ["a0", "a1", "b0"]
    assert [p.name for p in io.load_manifest(tmp_path, dataset="other")] == ["b0"]
    assert [p.name for p in io.load_manifest(tmp_path, dataset=["toy"])] == ["a0", "a1"]
    assert io.load_manifest(tmp_path, dataset="none") == []
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
