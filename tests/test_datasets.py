"""datasets.py: each public set's folder layout written small and read back as Pairs with
hand-computed world-mm landmarks; the registry; the bundled real pair; stratified k-fold."""

import json

import numpy as np
import pytest

import reindir_nb as rn
from reindir_nb import datasets, io
from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume

from imagefiles import FLIP_XY, write_sitk


def write_nifti(path, arr, spacing, origin, direction=FLIP_XY):
    return write_sitk(path, arr, spacing, origin, direction)


def zero_raw(path, case):
    """A DIR-LAB-sized raw file of zeros (sparse: no disk written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = io.dirlab_grid(case).shape
    with open(path, "wb") as fh:
        fh.truncate(nx * ny * nz * 2)


# ------------------------------------------------------------------------------ DIR-LAB
def test_dirlab_case_pack_layout(tmp_path):
    case = tmp_path / "Case1Pack"
    raw = np.full((94, 256, 256), 24, dtype="<i2")
    raw[10, 20, 30] = 1024 + 40  # HU 40 at (z=10, y=20, x=30)
    (case / "Images").mkdir(parents=True)
    raw.tofile(case / "Images" / "case1_T00_s.img")
    raw.tofile(case / "Images" / "case1_T50_s.img")
    (case / "ExtremePhases").mkdir()
    (case / "ExtremePhases" / "Case1_300_T00_xyz.txt").write_text("31 21 11\n1 1 1\n")
    (case / "ExtremePhases" / "Case1_300_T50_xyz.txt").write_text("31 21 13\n2 1 1\n")
    (case / "Sampled4D").mkdir()
    (case / "Sampled4D" / "case1_4D-75_T00.txt").write_text("1 1 1\n")  # must not be picked
    pair = rn.load_pair(f"dirlab:{tmp_path}:1")
    # case 1: 0.97 x 0.97 x 2.5 mm, origin 0; 1-based (31, 21, 11) -> 0-based (30, 20, 10):
    # x = 30*0.97 = 29.1, y = 20*0.97 = 19.4, z = 10*2.5 = 25.0; moving z = 12*2.5 = 30.0
    np.testing.assert_allclose(pair.fixed_landmarks, [[29.1, 19.4, 25.0], [0, 0, 0]], atol=1e-9)
    np.testing.assert_allclose(pair.moving_landmarks, [[29.1, 19.4, 30.0], [0.97, 0, 0]], atol=1e-9)
    assert pair.fixed.sample_world(pair.fixed_landmarks[:1], order=0)[0] == 40.0  # lands on the marked voxel
    assert pair.fixed.array[0, 0, 0] == -1000.0 and pair.fixed.spacing == (0.97, 0.97, 2.5)
    assert pair.name == "dirlab-case01" and pair.dataset == "dirlab"
    assert "case1_T00_s.img" in pair.fixed.name and "case1_T50_s.img" in pair.moving.name


def test_dirlab_name_variants_and_cohort(tmp_path):
    # case 8 as "Case8Deploy" with plain names; case 2 with "-ssm"; case 6 flat in a lower-case folder
    deploy = tmp_path / "Case8Deploy"
    zero_raw(deploy / "case8_T00.img", 8)
    zero_raw(deploy / "case8_T50.img", 8)
    (deploy / "Case8_300_T00_xyz.txt").write_text("1 1 1\n")
    (deploy / "Case8_300_T50_xyz.txt").write_text("1 1 2\n")
    zero_raw(tmp_path / "Case2Pack" / "Images" / "case2_T00-ssm.img", 2)
    zero_raw(tmp_path / "Case2Pack" / "Images" / "case2_T50-ssm.img", 2)
    (tmp_path / "Case2Pack" / "ExtremePhases").mkdir()
    (tmp_path / "Case2Pack" / "ExtremePhases" / "Case2_300_T00_xyz.txt").write_text("2 3 4\n")
    (tmp_path / "Case2Pack" / "ExtremePhases" / "Case2_300_T50_xyz.txt").write_text("2 3 5\n")
    pair8 = datasets.load_dirlab_case(tmp_path, 8)
    assert pair8.fixed.grid.shape == (128, 512, 512)
    np.testing.assert_allclose(pair8.moving_landmarks, [[0, 0, 2.5]])  # 1-based z=2 -> one 2.5 mm slice
    pair2 = datasets.load_dirlab_case(tmp_path / "Case2Pack", 2)  # the case folder itself works too
    # 1-based (2, 3, 4) -> (1, 2, 3): 1*1.16, 2*1.16, 3*2.5
    np.testing.assert_allclose(pair2.fixed_landmarks, [[1.16, 2.32, 7.5]])
    cohort = rn.load_cohort(f"dirlab:{tmp_path}", progress=False)
    assert [p.name for p in cohort] == ["dirlab-case02", "dirlab-case08"]
    flat = tmp_path / "flat" / "case5"  # plain names as case6_T00.img, lower-case folder, no subfolders
    zero_raw(flat / "case5_T00.img", 5)
    zero_raw(flat / "case5_T50.img", 5)
    (flat / "case5_300_T00_xyz.txt").write_text("1 1 1\n")
    (flat / "case5_300_T50_xyz.txt").write_text("1 1 1\n")
    assert rn.load_pair(f"dirlab:{tmp_path / 'flat'}:5").fixed.grid.shape == (106, 256, 256)


def test_dirlab_ambiguous_or_missing_files(tmp_path):
    zero_raw(tmp_path / "case3_T00_s.img", 3)
    zero_raw(tmp_path / "case3_T00.img", 3)
    with pytest.raises(ValueError, match="several candidates for DIR-LAB case 3 T00 image"):
        datasets.load_dirlab_case(tmp_path, 3)
    with pytest.raises(FileNotFoundError, match="no DIR-LAB case 4 T00 image found"):
        datasets.load_dirlab_case(tmp_path, 4)


# --------------------------------------------------------------------------------- NLST
def _nlst_folder(root, with_json=True):
    # array (z, y, x) = (6, 8, 10); NIfTI axes i = x, j = y, k = z
    spacing, origin = (1.5, 2.0, 2.5), (-10.0, 5.0, 100.0)
    fixed = np.zeros((6, 8, 10), np.int16)
    fixed[4, 2, 7] = 99  # x = 7, y = 2, z = 4
    moving = np.zeros((6, 8, 10), np.int16)
    moving[4, 2, 6] = 77
    write_nifti(root / "imagesTr" / "NLST_0003_0000.nii.gz", fixed, spacing, origin)
    write_nifti(root / "imagesTr" / "NLST_0003_0001.nii.gz", moving, spacing, origin)
    mask = np.zeros((6, 8, 10), np.uint8)
    mask[2:5, 1:4, 5:9] = 1
    write_nifti(root / "masksTr" / "NLST_0003_0000.nii.gz", mask, spacing, origin)
    write_nifti(root / "masksTr" / "NLST_0003_0001.nii.gz", mask, spacing, origin)
    (root / "keypointsTr").mkdir()
    (root / "keypointsTr" / "NLST_0003_0000.csv").write_text("7.0,2.0,4.0\n")
    (root / "keypointsTr" / "NLST_0003_0001.csv").write_text("6.0,2.0,4.0\n")
    if with_json:
        (root / "NLST_dataset.json").write_text(json.dumps({
            "name": "NLST", "release": "1.1", "registration_direction": {"fixed": 0, "moving": 1},
            "training_paired_images": [{"fixed": "./imagesTr/NLST_0003_0000.nii.gz",
                                        "moving": "./imagesTr/NLST_0003_0001.nii.gz"}],
            "registration_val": []}))


@pytest.mark.parametrize("with_json", [True, False])
def test_nlst_layout_and_keypoint_axis_order(tmp_path, with_json):
    _nlst_folder(tmp_path, with_json)
    pair = rn.load_pair(f"nlst:{tmp_path}:3")
    # keypoint columns (i, j, k) = (x, y, z), 0-based, direction diag(-1, -1, 1):
    # fixed (7, 2, 4): x = -10 - 7*1.5 = -20.5, y = 5 - 2*2 = 1, z = 100 + 4*2.5 = 110
    # moving (6, 2, 4): x = -10 - 6*1.5 = -19.0
    np.testing.assert_allclose(pair.fixed_landmarks, [[-20.5, 1.0, 110.0]], atol=1e-5)
    np.testing.assert_allclose(pair.moving_landmarks, [[-19.0, 1.0, 110.0]], atol=1e-5)
    assert pair.fixed.sample_world(pair.fixed_landmarks, order=0)[0] == 99.0
    assert pair.moving.sample_world(pair.moving_landmarks, order=0)[0] == 77.0
    assert pair.fixed.array.dtype == np.float32 and pair.fixed_mask.array.dtype == bool
    assert pair.fixed_mask.array.sum() == 3 * 3 * 4
    assert pair.name == "nlst-0003" and pair.dataset == "nlst"
    assert ("dataset_json" in pair.meta) == with_json
    if with_json:
        assert pair.meta["dataset_json"]["release"] == "1.1"
    assert [p.name for p in rn.load_cohort(f"nlst:{tmp_path}", progress=False)] == ["nlst-0003"]


def test_nlst_pairing_follows_the_json(tmp_path):
    _nlst_folder(tmp_path, with_json=False)
    # a json that swaps the direction: fixed = _0001
    (tmp_path / "NLST_dataset.json").write_text(json.dumps({"training_paired_images": [
        {"fixed": "./imagesTr/NLST_0003_0001.nii.gz", "moving": "./imagesTr/NLST_0003_0000.nii.gz"}]}))
    pair = datasets.load_nlst_pair(tmp_path, "0003")
    assert pair.fixed.name.endswith("NLST_0003_0001.nii.gz")
    np.testing.assert_allclose(pair.fixed_landmarks, [[-19.0, 1.0, 110.0]], atol=1e-5)


# --------------------------------------------------------------------------------- CBCT
def _cbct_images(root, case=11):
    arr = np.zeros((5, 6, 7), np.float32)
    for i in (0, 1, 2):
        write_nifti(root / "imagesTr" / f"ThoraxCBCT_{case:04d}_000{i}.nii.gz", arr, (2.0, 1.0, 3.0), (10.0, 20.0, -30.0))


def test_cbct_challenge_layout(tmp_path):
    _cbct_images(tmp_path)
    (tmp_path / "keypoints02Tr").mkdir()
    (tmp_path / "keypoints02Tr" / "ThoraxCBCT_0011_0002.csv").write_text("1,2,3\n")
    (tmp_path / "keypoints02Tr" / "ThoraxCBCT_0011_0000.csv").write_text("1,2,2\n")
    pair = rn.load_pair(f"cbct:{tmp_path}:11", cbct=2)
    assert pair.dataset == "cbct" and pair.name == "cbct-0011-cbct2"
    assert pair.fixed.name.endswith("ThoraxCBCT_0011_0002.nii.gz")  # fixed = CBCT
    assert pair.moving.name.endswith("ThoraxCBCT_0011_0000.nii.gz")  # moving = planning CT
    # spacing (2, 1, 3), origin (10, 20, -30), direction diag(-1, -1, 1):
    # (1, 2, 3): x = 10 - 1*2 = 8, y = 20 - 2*1 = 18, z = -30 + 3*3 = -21; (1, 2, 2): z = -24
    np.testing.assert_allclose(pair.fixed_landmarks, [[8.0, 18.0, -21.0]], atol=1e-5)
    np.testing.assert_allclose(pair.moving_landmarks, [[8.0, 18.0, -24.0]], atol=1e-5)
    assert pair.meta["keypoints"] == "challenge"
    cbct1 = rn.load_pair(f"cbct:{tmp_path}:11")  # no keypoints01Tr: a pair without landmarks
    assert cbct1.fixed_landmarks is None and cbct1.fixed.name.endswith("_0001.nii.gz")
    assert [p.name for p in rn.load_cohort(f"cbct:{tmp_path}", progress=False)] == ["cbct-0011-cbct1", "cbct-0011-cbct2"]
    assert [p.name for p in rn.load_cohort(f"cbct:{tmp_path}", progress=False, cbct=2)] == ["cbct-0011-cbct2"]
    with pytest.raises(FileNotFoundError, match="regenerated keypoints ThoraxCMASKBCT_0011_0002.csv"):
        datasets.load_cbct_pair(tmp_path, 11, cbct=2, keypoints="regenerated")


def test_cbct_regenerated_keypoints_layout(tmp_path):
    data, repo = tmp_path / "ThoraxCBCT", tmp_path / "cbct_generated_keypoints"
    _cbct_images(data)
    (data / "keypoints01Tr").mkdir()
    (data / "keypoints01Tr" / "ThoraxCBCT_0011_0001.csv").write_text("0,0,0\n")
    (data / "keypoints01Tr" / "ThoraxCBCT_0011_0000.csv").write_text("0,0,0\n")
    (repo / "keypoints01Tr").mkdir(parents=True)
    (repo / "keypoints01Tr" / "ThoraxCMASKBCT_0011_0001.csv").write_text("6,5,4\n3,0,1\n")
    (repo / "keypoints01Tr" / "ThoraxCMASKBCT_0011_0000.csv").write_text("6,5,3\n3,1,1\n")
    pair = datasets.load_cbct_pair(data, 11, cbct=1, keypoint_folder=repo)
    # (6, 5, 4): x = 10 - 6*2 = -2, y = 20 - 5 = 15, z = -30 + 4*3 = -18; (3, 0, 1): (4, 20, -27)
    np.testing.assert_allclose(pair.fixed_landmarks, [[-2.0, 15.0, -18.0], [4.0, 20.0, -27.0]], atol=1e-5)
    np.testing.assert_allclose(pair.moving_landmarks, [[-2.0, 15.0, -21.0], [4.0, 19.0, -27.0]], atol=1e-5)
    assert pair.meta["keypoints"] == "regenerated" and "louisvh" in pair.meta["keypoints_from"]
    challenge = datasets.load_cbct_pair(data, 11, cbct=1, keypoint_folder=repo, keypoints="challenge")
    assert len(challenge.fixed_landmarks) == 1 and challenge.meta["keypoints"] == "challenge"
    assert datasets.load_cbct_pair(data, 11, keypoints=None).fixed_landmarks is None


# ------------------------------------------------------------------------------ generic
def test_generic_pair_units_explicit(tmp_path):
    arr = np.zeros((5, 6, 7), np.float32)
    write_nifti(tmp_path / "f.mha", arr, (1.0, 1.5, 2.0), (-5.0, 3.0, 0.5))
    write_nifti(tmp_path / "m.mha", arr, (1.0, 1.5, 2.0), (-5.0, 3.0, 0.5))
    mask = np.zeros((5, 6, 7), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    write_nifti(tmp_path / "fm.nii.gz", mask, (1.0, 1.5, 2.0), (-5.0, 3.0, 0.5))
    # image box: x in [-11, -5], y in [-4.5, 3], z in [0.5, 8.5] mm
    (tmp_path / "f.csv").write_text("x,y,z\n1,2,3\n")
    (tmp_path / "m.csv").write_text("x,y,z\n1,2,4\n")
    (tmp_path / "f_mm.txt").write_text("-7.5 1.5 4.5\n")
    (tmp_path / "m_mm.txt").write_text("-7.5 1.5 6\n")
    args = (tmp_path / "f.mha", tmp_path / "m.mha", tmp_path / "f.csv", tmp_path / "m.csv")
    with pytest.raises(ValueError, match=r"f\.csv: say units='mm' or units='voxel'"):
        datasets.load_generic_pair(*args)
    mm = datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "m.mha", tmp_path / "f_mm.txt", tmp_path / "m_mm.txt",
                                    units="mm", fixed_mask=tmp_path / "fm.nii.gz")
    np.testing.assert_allclose(mm.fixed_landmarks, [[-7.5, 1.5, 4.5]])
    np.testing.assert_allclose(mm.initial_distances(), [1.5])
    assert mm.fixed_mask.array.sum() == 8 and mm.moving_mask is None and mm.name == "f" and mm.dataset == "generic"
    vox = datasets.load_generic_pair(*args, units="voxel")
    # direction diag(-1, -1, 1): x = -5 - 1*1 = -6, y = 3 - 2*1.5 = 0, z = 0.5 + 3*2 = 6.5
    np.testing.assert_allclose(vox.fixed_landmarks, [[-6.0, 0.0, 6.5]], atol=1e-5)
    one = datasets.load_generic_pair(*args, units="voxel", one_based=True)
    np.testing.assert_allclose(one.fixed_landmarks, [[-5.0, 1.5, 4.5]], atol=1e-5)  # 0-based (0, 1, 2)
    io.write_elastix_points(vox.fixed_landmarks, tmp_path / "f.txt")
    io.write_elastix_points(vox.moving_landmarks, tmp_path / "m.txt")
    el = datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "m.mha", tmp_path / "f.txt", tmp_path / "m.txt", units="mm")
    np.testing.assert_allclose(el.moving_landmarks, vox.moving_landmarks, atol=1e-6)


# ----------------------------------------------------------------------------- registry
def test_registry_specs_and_errors(tmp_path):
    ph = rn.load_pair("phantom:nlst:3", n_landmarks=20)
    direct = rn.phantom.make_pair(seed=3, style="nlst", n_landmarks=20)
    np.testing.assert_array_equal(ph.fixed.array, direct.fixed.array)
    np.testing.assert_array_equal(ph.moving_landmarks, direct.moving_landmarks)
    assert ph.dataset == "phantom-nlst"
    assert rn.load_pair("phantom:dirlab", seed=2, n_landmarks=10).name == "phantom-dirlab-002"
    cohort = rn.load_cohort("phantom:cbct", n=2, seed=5, progress=False, n_landmarks=10)
    assert [p.name for p in cohort] == ["phantom-cbct-005", "phantom-cbct-006"]
    with pytest.raises(ValueError, match="seed given twice"):
        rn.load_pair("phantom:nlst:3", seed=4)
    with pytest.raises(ValueError, match="unknown data set scheme 'foo'"):
        rn.load_pair("foo:bar:1")
    with pytest.raises(ValueError, match="unknown bundled pair"):
        rn.load_pair("bundled:nothing")
    with pytest.raises(ValueError, match="give the case after the folder"):
        rn.load_pair(f"dirlab:{tmp_path}")
    with pytest.raises(ValueError, match="looks like 'scheme:what"):
        rn.load_pair("elastix-lung")
    with pytest.raises(ValueError, match="no nlst pairs found"):
        rn.load_cohort(f"nlst:{tmp_path}", progress=False)
    with pytest.raises(FileNotFoundError, match="data set folder not found"):
        rn.load_cohort(f"dirlab:{tmp_path / 'missing'}")


def test_registry_bundled_thorax_ct_delegates():
    pair = rn.load_pair("bundled:thorax-ct", seed=0, spacing_mm=8.0, n_landmarks=30)
    assert pair.meta["label"] == "real anatomy, simulated motion" and len(pair.fixed_landmarks) == 30


# ------------------------------------------------------------------------------ bundled
def test_bundled_elastix_lung_pair():
    pair = rn.load_pair("bundled:elastix-lung")
    assert pair.fixed.grid.shape == (129, 157, 115) and pair.moving.grid.shape == (131, 166, 115)
    assert pair.fixed.array.dtype == np.float32 and pair.dataset == "elastix-lung"
    assert pair.meta["label"] == "real pair, real landmarks"
    np.testing.assert_allclose(pair.fixed.origin, (-153.827, -150.352, -1434.5))
    np.testing.assert_allclose(pair.moving.origin, (-161.831, -162.449, -1399.5))
    # all 100 file landmarks: 34.3 mm apart (PROVENANCE); 49 of them lie in the other lung, outside both
    # one-lung images, and are dropped: the remaining 51 are exactly ITKElastix's corrected point sets
    fl, ml = datasets.elastix_lung_landmarks()
    assert fl.shape == (100, 3) and 33.5 < np.linalg.norm(fl - ml, axis=1).mean() < 35.0
    assert pair.meta["landmarks_in_files"] == 100 and pair.meta["landmarks_dropped"] == 49
    corrected = datasets.data_root() / "itkelastix_lung_point_sets"
    np.testing.assert_array_equal(pair.fixed_landmarks, io.read_elastix_points(corrected / "CT_3D_lung_fixed_point_set_corrected.txt"))
    np.testing.assert_array_equal(pair.moving_landmarks, io.read_elastix_points(corrected / "CT_3D_lung_moving_point_set_corrected.txt"))
    assert pair.initial_distances().mean() == pytest.approx(35.27, abs=0.01)
    # fixed = baseline, moving = follow-up: each landmark set sits in its own image's lung mask, at lung HU
    assert (pair.fixed_mask.sample_world(pair.fixed_landmarks, order=0) > 0).mean() == 1.0
    assert (pair.moving_mask.sample_world(pair.moving_landmarks, order=0) > 0).mean() == 1.0
    assert np.median(pair.fixed.sample_world(pair.fixed_landmarks)) < -400
    assert pair.fixed.name.endswith("3DCT_lung_baseline.mha") and pair.moving.name.endswith("3DCT_lung_followup.mha")


def test_missing_bundled_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("REINDIR_NB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="bundled data not found.*REINDIR_NB_DATA"):
        rn.load_pair("bundled:elastix-lung")


# ------------------------------------------------------------------------------- splits
def test_kfold_stratified_every_pair_held_out_once():
    vol = Volume.from_array(np.zeros((2, 2, 2), np.float32))
    sizes = {"a": 7, "b": 10, "c": 3}
    pairs = [Pair(vol, vol, name=f"{d}{i}", dataset=d) for d, n in sizes.items() for i in range(n)]
    splits = datasets.kfold_splits(pairs, k=5, seed=1)
    assert len(splits) == 5
    held = sorted(i for _, test in splits for i in test)
    assert held == list(range(len(pairs)))  # every pair held out exactly once
    for train, test in splits:
        assert not set(train) & set(test) and len(train) + len(test) == len(pairs)
        assert len(test) == 4  # 20 pairs over 5 folds
        for d, n in sizes.items():
            k = sum(pairs[i].dataset == d for i in test)
            assert k in (n // 5, -(-n // 5))  # ~1/k of every set: 7 -> 1 or 2, 10 -> 2, 3 -> 0 or 1
    assert splits == datasets.kfold_splits(pairs, k=5, seed=1)
    assert splits != datasets.kfold_splits(pairs, k=5, seed=2)
    with pytest.raises(ValueError, match="cannot fill 5 folds"):
        datasets.kfold_splits(pairs[:3], k=5)
