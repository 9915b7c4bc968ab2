"""Every kind of bad input is rejected with an error naming the file (or pair) and the problem.

One test per case of issue 2 item 8: wrong raw size, unreadable file, NaN/inf in an image,
zero/negative spacing, landmark count mismatch, landmarks outside the image, empty mask.
"""

import numpy as np
import pytest
import SimpleITK as sitk

from reindir_nb import datasets, io
from reindir_nb.core.pair import Pair
from reindir_nb.core.volume import Volume


def write_image(path, arr, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return path


def write_mha_header(path, spacing: str):
    path.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementSpacing = " + spacing
        + "\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n" + "\0" * 8
    )
    return path


# -------------------------------------------------------------------- wrong raw file size
def test_wrong_raw_size(tmp_path):
    path = tmp_path / "case1_T00_s.img"
    np.zeros(100, dtype="<i2").tofile(path)
    # case 1 is 256 x 256 x 94 int16 = 12,320,768 bytes
    with pytest.raises(ValueError, match=r"case1_T00_s\.img: 200 bytes, but DIR-LAB case 1 \(256x256x94 int16\) needs 12320768 bytes"):
        io.read_dirlab_img(path, 1)
    with pytest.raises(ValueError, match=r"case1_T00_s\.img: unknown DIR-LAB case 11"):
        io.read_dirlab_img(path, 11)


def test_wrong_raw_size_through_the_loader(tmp_path):
    (tmp_path / "Case3Pack").mkdir()
    np.zeros(10, dtype="<i2").tofile(tmp_path / "Case3Pack" / "case3_T00.img")
    with pytest.raises(ValueError, match=r"case3_T00\.img: 20 bytes, but DIR-LAB case 3"):
        datasets.load_dirlab_case(tmp_path, 3)


# ------------------------------------------------------------------------ unreadable file
def test_unreadable_file(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz: cannot read image \(.+\)"):
        io.read_image(tmp_path / "broken.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt: cannot read image \(Unable to determine ImageIO reader"):
        io.read_image(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match=r"missing\.mha: file not found"):
        io.read_image(tmp_path / "missing.mha")
    img2d = sitk.GetImageFromArray(np.zeros((3, 4), np.float32))
    sitk.WriteImage(img2d, str(tmp_path / "flat2d.mha"))
    with pytest.raises(ValueError, match=r"flat2d\.mha: expected a 3D image, found 2D"):
        io.read_image(tmp_path / "flat2d.mha")
    (tmp_path / "pair").mkdir()
    (tmp_path / "pair" / "pair.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"pair\.json: not a saved-pair description"):
        io.load_saved_pair(tmp_path / "pair")


# ------------------------------------------------------------------------- NaN/inf voxels
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_image(tmp_path, bad, suffix):
    # ITK's NIfTI reader silently turns NaN/inf into 0: the check must look at the file itself
    for dtype in (np.float32, np.float64):
        arr = np.zeros((4, 5, 6), dtype)
        arr[1, 2, 3] = bad
        arr[0, 0, 0] = bad
        path = write_image(tmp_path / f"scan{suffix}", arr)
        with pytest.raises(ValueError, match=rf"scan{suffix.replace('.', '[.]')}: contains 2 NaN/inf voxel values"):
            io.read_image(path)


# ------------------------------------------------------------------ zero/negative spacing
@pytest.mark.parametrize("spacing", ["1 0 1", "1 -2 1"])
def test_zero_or_negative_spacing_mha(tmp_path, spacing):
    path = write_mha_header(tmp_path / "flat.mha", spacing)
    with pytest.raises(ValueError, match=r"flat\.mha: spacing \(1\.0, -?[02]\.0, 1\.0\) mm is not positive"):
        io.read_image(path)


def test_negative_spacing_nrrd(tmp_path):
    path = tmp_path / "neg.nrrd"
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nspacings: 1 1 -0.5\nencoding: raw\n\n" + b"\0" * 8)
    with pytest.raises(ValueError, match=r"neg\.nrrd: spacing \(1\.0, 1\.0, -0\.5\) mm is not positive"):
        io.read_image(path)


def test_zero_spacing_in_memory():
    with pytest.raises(ValueError, match="spacing must be three positive"):
        Volume.from_array(np.zeros((2, 2, 2)), spacing=(1, 0, 1), name="zero")


# ----------------------------------------------------------------- landmark count mismatch
def test_landmark_count_mismatch_names_both_files(tmp_path):
    write_image(tmp_path / "f.mha", np.zeros((4, 5, 6), np.float32))
    write_image(tmp_path / "m.mha", np.zeros((4, 5, 6), np.float32))
    (tmp_path / "f.csv").write_text("1,1,1\n2,2,2\n3,3,3\n")
    (tmp_path / "m.csv").write_text("1,1,1\n2,2,2\n")
    with pytest.raises(ValueError, match=r"f: 3 fixed landmarks in .*f\.csv but 2 moving landmarks in .*m\.csv"):
        datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "m.mha", tmp_path / "f.csv", tmp_path / "m.csv", units="mm")
    with pytest.raises(ValueError, match="p: 3 fixed landmarks but 2 moving landmarks"):
        Pair(_vol(), _vol(), np.ones((3, 3)), np.ones((2, 3)), name="p")
    with pytest.raises(ValueError, match=r"f\.csv: landmarks need both a fixed and a moving file"):
        datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "m.mha", tmp_path / "f.csv", units="mm")


def test_missing_keypoint_partner(tmp_path):
    arr = np.zeros((4, 5, 6), np.float32)
    (tmp_path / "imagesTr").mkdir()
    write_image(tmp_path / "imagesTr" / "NLST_0001_0000.nii.gz", arr)
    write_image(tmp_path / "imagesTr" / "NLST_0001_0001.nii.gz", arr)
    (tmp_path / "keypointsTr").mkdir()
    (tmp_path / "keypointsTr" / "NLST_0001_0000.csv").write_text("1,1,1\n")
    with pytest.raises(FileNotFoundError, match=r"NLST_0001_0001\.csv: keypoint file not found \(its partner"):
        datasets.load_nlst_pair(tmp_path, 1)


# ------------------------------------------------------------ landmarks outside the image
def _vol(name="img"):
    return Volume.from_array(np.zeros((4, 5, 6), np.float32), spacing=(1, 1, 1), name=name)


def test_landmarks_outside_the_image(tmp_path):
    with pytest.raises(ValueError, match=r"p: 1 moving landmarks lie outside the moving image m\.mha \(first: #1"):
        Pair(_vol("f.mha"), _vol("m.mha"), np.ones((2, 3)), np.array([[1, 1, 1], [50, 1, 1.0]]), name="p")
    # DIR-LAB: 1-based 257 is beyond the 256 columns of case 1 -> the landmark file is named
    (tmp_path / "Case1_300_T00_xyz.txt").write_text("10 10 10\n300 10 10\n")
    with pytest.raises(ValueError, match=r"Case1_300_T00_xyz\.txt: 1 of 2 points lie outside the 256x256x94 .* 1-based"):
        io.read_dirlab_landmarks(tmp_path / "Case1_300_T00_xyz.txt", io.dirlab_grid(1))
    # Learn2Reg: grid x=6, y=5, z=4; (i, j, k) = (2, 3, 5) leaves z but fits reversed -> axis-order hint
    (tmp_path / "kp.csv").write_text("2,3,5\n")
    with pytest.raises(ValueError, match=r"kp\.csv: 1 of 1 points lie outside the 6x5x4 .*would fit in \(z, y, x\) order"):
        io.read_learn2reg_keypoints(tmp_path / "kp.csv", _vol().grid)
    # generic mm landmarks through the loader: the pair and the image file are named
    write_image(tmp_path / "f.mha", np.zeros((4, 5, 6), np.float32), origin=(100.0, 0.0, 0.0))
    (tmp_path / "f.csv").write_text("1,1,1\n")
    with pytest.raises(ValueError, match=r"f: 1 fixed landmarks lie outside the fixed image .*f\.mha"):
        datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "f.mha", tmp_path / "f.csv", tmp_path / "f.csv", units="mm")


# ------------------------------------------------------------------------------ empty mask
def test_empty_mask(tmp_path):
    empty = Volume.from_array(np.zeros((4, 5, 6), bool), name="mask.nii.gz")
    with pytest.raises(ValueError, match=r"mask\.nii\.gz: the mask is empty"):
        Pair(_vol(), _vol(), fixed_mask=empty)
    write_image(tmp_path / "f.mha", np.zeros((4, 5, 6), np.float32))
    write_image(tmp_path / "lungs.nii.gz", np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(ValueError, match=r"lungs\.nii\.gz: the mask is empty"):
        datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "f.mha", moving_mask=tmp_path / "lungs.nii.gz")
    write_image(tmp_path / "small.nii.gz", np.ones((2, 5, 6), np.uint8))
    with pytest.raises(ValueError, match=r"small\.nii\.gz: shape \(2, 5, 6\) differs from its image"):
        datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "f.mha", fixed_mask=tmp_path / "small.nii.gz")


# ------------------------------------------------------------------- landmark file format
def test_landmark_file_problems(tmp_path):
    (tmp_path / "short.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match=r"short\.txt: need 3 coordinates"):
        io.read_points(tmp_path / "short.txt", units="mm")
    (tmp_path / "words.csv").write_text("x,y,z\n1,2,3\n4,five,6\n")
    with pytest.raises(ValueError, match=r"words\.csv: line 3 is not numeric"):
        io.read_points(tmp_path / "words.csv", units="mm")
    (tmp_path / "ragged.txt").write_text("1 2 3\n4 5 6 7\n")
    with pytest.raises(ValueError, match=r"ragged\.txt: rows have different numbers of values \[3, 4\]"):
        io.read_points(tmp_path / "ragged.txt", units="mm")
    (tmp_path / "nan.txt").write_text("1 2 nan\n")
    with pytest.raises(ValueError, match=r"nan\.txt: contains NaN/inf coordinates"):
        io.read_points(tmp_path / "nan.txt", units="mm")
    (tmp_path / "empty.csv").write_text("x,y,z\n")
    with pytest.raises(ValueError, match=r"empty\.csv: no points found"):
        io.read_points(tmp_path / "empty.csv", units="mm")
    (tmp_path / "count.txt").write_text("point\n3\n1 2 3\n")
    with pytest.raises(ValueError, match=r"count\.txt: header says 3 points, found 1"):
        io.read_elastix_points(tmp_path / "count.txt")
    (tmp_path / "nohead.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"nohead\.txt: not an elastix point-set file"):
        io.read_elastix_points(tmp_path / "nohead.txt")


def test_manifest_problems(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest\.csv: file not found"):
        io.load_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("name,dataset,path\na,toy,toy/a\n")
    with pytest.raises(ValueError, match=r"manifest\.csv: 1 listed pair folder\(s\) are missing"):
        io.load_manifest(tmp_path)
    vol = _vol()
    with pytest.raises(ValueError, match="two pairs named 'x' in data set 'toy'"):
        io.save_pairs([Pair(vol, vol, name="x", dataset="toy"), Pair(vol, vol, name="x", dataset="toy")], tmp_path / "out")
    with pytest.raises(ValueError, match="pair name '../x' cannot be used as a folder name"):
        io.save_pairs([Pair(vol, vol, name="../x", dataset="toy")], tmp_path / "out")
