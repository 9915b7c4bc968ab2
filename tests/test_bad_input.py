"""Every kind of bad input is rejected with an error naming the file/pair and the problem."""

import numpy as np
import pytest
import SimpleITK as sitk

from reindir_nb import io
from reindir_nb.pair import Pair
from reindir_nb.volume import Volume


def test_wrong_raw_size(tmp_path):
    path = tmp_path / "case1_T00_s.img"
    np.zeros(100, dtype="<i2").tofile(path)
    with pytest.raises(ValueError, match=r"case1_T00_s\.img.*200 bytes.*12320768"):
        io.read_dirlab_img(path, 1)


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz: cannot read image"):
        io.read_image(path)
    with pytest.raises(FileNotFoundError, match="missing.mha"):
        io.read_image(tmp_path / "missing.mha")


def test_nan_in_image(tmp_path):
    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "nan.mha"))
    with pytest.raises(ValueError, match=r"nan\.mha: contains 1 NaN/inf"):
        io.read_image(tmp_path / "nan.mha")


def test_zero_spacing(tmp_path):
    path = tmp_path / "flat.mha"
    path.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementSpacing = 1 0 1\nElementType = MET_UCHAR\n"
        "ElementDataFile = LOCAL\n" + "\0" * 8
    )
    with pytest.raises(ValueError, match=r"flat\.mha: cannot read image"):
        io.read_image(path)
    with pytest.raises(ValueError, match="spacing must be three positive"):
        Volume.from_array(np.zeros((2, 2, 2)), spacing=(1, 0, 1), name="zero")


def _vol(name="img"):
    return Volume.from_array(np.zeros((4, 5, 6), np.float32), spacing=(1, 1, 1), name=name)


def test_landmark_count_mismatch():
    with pytest.raises(ValueError, match="3 fixed landmarks but 2 moving"):
        Pair(_vol(), _vol(), np.ones((3, 3)), np.ones((2, 3)), name="p")


def test_landmark_outside_image():
    with pytest.raises(ValueError, match=r"p: 1 moving landmarks lie outside the moving image m\.mha"):
        Pair(_vol("f.mha"), _vol("m.mha"), np.ones((2, 3)), np.array([[1, 1, 1], [50, 1, 1.0]]), name="p")


def test_empty_mask():
    empty = Volume.from_array(np.zeros((4, 5, 6), bool), name="mask.nii.gz")
    with pytest.raises(ValueError, match=r"mask\.nii\.gz: the mask is empty"):
        Pair(_vol(), _vol(), fixed_mask=empty)


def test_landmark_file_problems(tmp_path):
    (tmp_path / "short.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match=r"short\.txt: need 3 coordinates"):
        io.read_points(tmp_path / "short.txt", units="mm")
    (tmp_path / "count.txt").write_text("point\n3\n1 2 3\n")
    with pytest.raises(ValueError, match=r"count\.txt: header says 3 points, found 1"):
        io.read_elastix_points(tmp_path / "count.txt")
