"""Readers pinned by hand-computed mm coordinates; bundled real pair; k-fold splits."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

import reindir_nb as rn
from reindir_nb import datasets, io
from reindir_nb.pair import Pair
from reindir_nb.volume import Volume


def write_nifti(path, arr, spacing, origin):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def test_dirlab_raw_and_one_based_landmarks(tmp_path):
    # case 1: 256 x 256 x 94 voxels, 0.97 x 0.97 x 2.5 mm
    folder = tmp_path / "Case1Pack"
    (folder / "Images").mkdir(parents=True)
    (folder / "ExtremePhases").mkdir()
    raw = np.zeros((94, 256, 256), dtype="<i2")
    raw[10, 20, 30] = 1024 + 40  # HU 40 at (z=10, y=20, x=30)
    raw.tofile(folder / "Images" / "case1_T00_s.img")
    (raw * 0 + 24).astype("<i2").tofile(folder / "Images" / "case1_T50_s.img")
    # 1-based voxel (31, 21, 11) is the 0-based voxel (30, 20, 10):
    # x = 30 * 0.97 = 29.1 mm, y = 20 * 0.97 = 19.4 mm, z = 10 * 2.5 = 25.0 mm
    (folder / "ExtremePhases" / "Case1_300_T00_xyz.txt").write_text("31 21 11\n1 1 1\n")
    (folder / "ExtremePhases" / "Case1_300_T50_xyz.txt").write_text("31 21 13\n2 1 1\n")
    pair = datasets.load_dirlab_case(tmp_path, 1)
    np.testing.assert_allclose(pair.fixed_landmarks, [[29.1, 19.4, 25.0], [0, 0, 0]], atol=1e-9)
    np.testing.assert_allclose(pair.moving_landmarks, [[29.1, 19.4, 30.0], [0.97, 0, 0]], atol=1e-9)
    assert pair.fixed.array[10, 20, 30] == 40.0  # HU = stored - 1024
    assert pair.fixed.array[0, 0, 0] == -1024.0
    assert pair.fixed.spacing == (0.97, 0.97, 2.5)
    np.testing.assert_allclose(pair.fixed.sample_world(pair.fixed_landmarks[:1]), [40.0])


def test_dirlab_name_variants(tmp_path):
    folder = tmp_path / "Case8Deploy"
    folder.mkdir()
    np.zeros((128, 512, 512), dtype="<i2").tofile(folder / "case8_T00.img")
    np.zeros((128, 512, 512), dtype="<i2").tofile(folder / "case8_T50.img")
    (folder / "Case8_300_T00_xyz.txt").write_text("1 1 1\n")
    (folder / "Case8_300_T50_xyz.txt").write_text("1 1 2\n")
    pair = rn.load_pair(f"dirlab:{tmp_path}:8")
    assert pair.fixed.grid.shape == (128, 512, 512)
    np.testing.assert_allclose(pair.moving_landmarks, [[0, 0, 2.5]])
    sub = tmp_path / "other" / "Case2Pack"
    sub.mkdir(parents=True)
    np.zeros((112, 256, 256), dtype="<i2").tofile(sub / "case2_T00-ssm.img")
    np.zeros((112, 256, 256), dtype="<i2").tofile(sub / "case2_T50-ssm.img")
    (sub / "Case2_300_T00_xyz.txt").write_text("2 3 4\n")
    (sub / "Case2_300_T50_xyz.txt").write_text("2 3 4\n")
    pair = datasets.load_dirlab_case(tmp_path / "other", 2)
    np.testing.assert_allclose(pair.fixed_landmarks, [[1.16, 2 * 1.16, 3 * 2.5]])


def test_nlst_keypoints_axis_order(tmp_path):
    # array (z, y, x) = (6, 8, 10): NIfTI axes i, j, k = x, y, z
    spacing, origin = (1.5, 2.0, 2.5), (-10.0, 5.0, 100.0)
    arr = np.zeros((6, 8, 10), np.float32)
    arr[4, 2, 7] = 99.0  # x=7, y=2, z=4
    write_nifti(tmp_path / "imagesTr" / "NLST_0003_0000.nii.gz", arr, spacing, origin)
    write_nifti(tmp_path / "imagesTr" / "NLST_0003_0001.nii.gz", arr, spacing, origin)
    (tmp_path / "keypointsTr").mkdir()
    # csv column order is (i, j, k) = (x, y, z) voxel, 0-based:
    # x = -10 + 7 * 1.5 = 0.5, y = 5 + 2 * 2 = 9, z = 100 + 4 * 2.5 = 110
    (tmp_path / "keypointsTr" / "NLST_0003_0000.csv").write_text("7.0,2.0,4.0\n")
    (tmp_path / "keypointsTr" / "NLST_0003_0001.csv").write_text("6.0,2.0,4.0\n")
    (tmp_path / "NLST_dataset.json").write_text(json.dumps({"name": "NLST"}))
    pair = rn.load_pair(f"nlst:{tmp_path}:3")
    np.testing.assert_allclose(pair.fixed_landmarks, [[0.5, 9.0, 110.0]])
    np.testing.assert_allclose(pair.moving_landmarks, [[-1.0, 9.0, 110.0]])
    assert pair.fixed.sample_world(pair.fixed_landmarks)[0] == pytest.approx(99.0)
    assert datasets.dataset_json(tmp_path)["name"] == "NLST"
    assert len(rn.load_cohort(f"nlst:{tmp_path}")) == 1


def test_cbct_layouts(tmp_path):
    arr = np.zeros((5, 6, 7), np.float32)
    for i in (0, 1, 2):
        write_nifti(tmp_path / "imagesTr" / f"ThoraxCBCT_0011_000{i}.nii.gz", arr, (2, 2, 2), (0, 0, 0))
    (tmp_path / "keypoints02Tr").mkdir()
    (tmp_path / "keypoints02Tr" / "ThoraxCMASKBCT_0011_0002.csv").write_text("1,2,3\n")
    (tmp_path / "keypoints02Tr" / "ThoraxCMASKBCT_0011_0000.csv").write_text("1,2,2\n")
    pair = rn.load_pair(f"cbct:{tmp_path}:11", cbct=2)
    assert pair.dataset == "cbct" and pair.name == "cbct-0011-cbct2"
    np.testing.assert_allclose(pair.fixed_landmarks, [[2, 4, 6]])  # fixed = CBCT
    np.testing.assert_allclose(pair.moving_landmarks, [[2, 4, 4]])  # moving = planning CT
    assert rn.load_pair(f"cbct:{tmp_path}:11").fixed_landmarks is None  # no keypoints for CBCT 1
    assert len(rn.load_cohort(f"cbct:{tmp_path}")) == 2


def test_generic_pair_units_explicit(tmp_path):
    arr = np.zeros((5, 6, 7), np.float32)
    write_nifti(tmp_path / "f.mha", arr, (1, 1, 2), (-5, 0, 0))
    write_nifti(tmp_path / "m.mha", arr, (1, 1, 2), (-5, 0, 0))
    (tmp_path / "f.csv").write_text("x,y,z\n1,2,3\n")
    (tmp_path / "m.csv").write_text("x,y,z\n1,2,4\n")
    with pytest.raises(ValueError, match="units"):
        datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "m.mha", tmp_path / "f.csv", tmp_path / "m.csv")
    mm = datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "m.mha", tmp_path / "f.csv", tmp_path / "m.csv", units="mm")
    np.testing.assert_allclose(mm.fixed_landmarks, [[1, 2, 3]])
    vox = datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "m.mha", tmp_path / "f.csv", tmp_path / "m.csv", units="voxel")
    np.testing.assert_allclose(vox.fixed_landmarks, [[-4, 2, 6]])  # x = -5 + 1 * 1, z = 3 * 2


def test_elastix_point_set_reader_on_real_files():
    root = datasets.data_root() / "itkelastix_lung_point_sets"
    f = io.read_elastix_points(root / "CT_3D_lung_fixed_point_set_corrected.txt")
    m = io.read_elastix_points(root / "CT_3D_lung_moving_point_set_corrected.txt")
    assert f.shape == m.shape == (51, 3)
    np.testing.assert_allclose(f[0], [-36.351, -36.974, -1204.5])
    assert 34.0 < np.linalg.norm(f - m, axis=1).mean() < 36.5  # PROVENANCE: 35.3 mm
    mask = io.read_image(root / "CT_3D_lung_fixed_mask.mha")
    assert mask.grid.shape == (129, 157, 115)
    np.testing.assert_allclose(mask.spacing, (1.366, 1.366, 2.5), atol=1e-3)


def test_elastix_points_round_trip_and_index(tmp_path):
    pts = np.array([[1.5, -2.25, 3.125], [4, 5, 6]])
    io.write_elastix_points(pts, tmp_path / "p.txt")
    np.testing.assert_allclose(io.read_elastix_points(tmp_path / "p.txt"), pts)
    (tmp_path / "i.txt").write_text("index\n1\n1 2 3\n")
    grid = rn.Grid((10, 10, 10), spacing=(2, 2, 2), origin=(1, 1, 1))
    np.testing.assert_allclose(io.read_elastix_points(tmp_path / "i.txt", grid), [[3, 5, 7]])


def test_bundled_elastix_lung_pair():
    pair = rn.load_pair("bundled:elastix-lung")
    assert pair.fixed.grid.shape == (129, 157, 115) and pair.moving.grid.shape == (131, 166, 115)
    # 49 of the 100 file landmarks lie in the other lung, outside both (one-lung) images
    assert len(pair.fixed_landmarks) == 51 and pair.meta["landmarks_dropped"] == 49
    d = pair.initial_distances()
    assert 34.8 < d.mean() < 35.8  # 35.3 mm, as ITKElastix's corrected 51-point sets
    assert pair.fixed_mask.array.any() and pair.meta["label"] == "real pair, real landmarks"
    # the landmarks sit inside the lungs (real anatomy): most in the mask, at lung-like HU
    inside = pair.fixed_mask.sample_world(pair.fixed_landmarks, order=0) > 0
    assert inside.mean() > 0.9


def test_save_load_pairs_round_trip(tmp_path):
    pair = rn.load_pair("bundled:elastix-lung")
    table = io.save_pairs([pair], tmp_path)
    assert list(table["name"]) == ["elastix-lung"] and (tmp_path / "manifest.csv").is_file()
    back = io.load_manifest(tmp_path)[0]
    np.testing.assert_allclose(back.fixed_landmarks, pair.fixed_landmarks, atol=1e-6)
    np.testing.assert_array_equal(back.fixed.array, pair.fixed.array)
    np.testing.assert_array_equal(back.moving_mask.array, pair.moving_mask.array)
    assert back.moving.grid.same_as(pair.moving.grid, tol=1e-4)
    assert back.meta["label"] == pair.meta["label"]
    assert not list(tmp_path.rglob("*.tmp*")), "temporary files left behind"
    assert io.load_manifest(tmp_path, dataset="other") == []


def test_kfold_stratified():
    vol = Volume.from_array(np.zeros((2, 2, 2), np.float32))
    pairs = [Pair(vol, vol, name=f"{d}{i}", dataset=d) for d in ("a", "b", "c") for i in range(7)]
    splits = datasets.kfold_splits(pairs, k=5, seed=1)
    held = sorted(i for _, test in splits for i in test)
    assert held == list(range(len(pairs)))  # every pair held out exactly once
    for train, test in splits:
        assert not set(train) & set(test) and len(train) + len(test) == len(pairs)
        for d in "abc":
            n = sum(pairs[i].dataset == d for i in test)
            assert n in (1, 2)  # 7 pairs per set over 5 folds
