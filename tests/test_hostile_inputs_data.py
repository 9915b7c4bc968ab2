"""Hostile inputs at the data layer (core + data): each case is refused with an error (or a warning)
whose message names the file or the argument, or read correctly. One test per case; the table in
docs/reliability.md points here."""

from __future__ import annotations

import gzip
import json
import locale
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from reindir_nb import io
from reindir_nb.core import files
from reindir_nb.core.files import ensure_writable
from reindir_nb.core.geometry import Grid
from reindir_nb.core.pair import Pair
from reindir_nb.core.points import as_points
from reindir_nb.core.volume import Volume
from reindir_nb.data import datasets, preprocess, store

REPO = Path(__file__).resolve().parents[1]


def _img(path, arr, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None, compress=False, vector=False):
    image = sitk.GetImageFromArray(arr, isVector=vector)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), compress)
    return path


def _ct(shape=(8, 9, 10), seed=0):
    """A small CT-like array in HU: air -1000 outside, tissue 40 inside, lungs -850."""
    arr = np.full(shape, -1000.0, np.float32)
    arr[1:-1, 1:-1, 1:-1] = 40.0
    arr[2:-2, 2:4, 2:-2] = -850.0
    return arr + np.random.default_rng(seed).normal(0, 5, shape).astype(np.float32)


def _vol(name="img", shape=(4, 5, 6), value=None):
    arr = np.zeros(shape, np.float32) if value is None else np.full(shape, value, np.float32)
    return Volume.from_array(arr, name=name)


def _pair(name, dataset="toy", gen="old", value=0.0):
    vol = Volume.from_array(np.full((4, 5, 6), value, np.float32), name=name)
    return Pair(vol, vol, name=name, dataset=dataset, meta={"gen": gen})


def _kit_temporaries(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.startswith(".reindir-") or ".tmp" in p.name]


# =============================================================================== save_pair(s)
def test_save_pair_refuses_a_folder_with_user_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.docx").write_text("years of work")
    with pytest.raises(FileExistsError, match=r"mine: not empty and not a pair folder written by reindir_nb"):
        io.save_pair(_pair("p"), folder)
    assert (folder / "thesis.docx").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_save_pair_refuses_a_kit_folder_holding_user_files(tmp_path):
    io.save_pair(_pair("p"), tmp_path / "p")
    assert json.loads((tmp_path / "p" / "pair.json").read_text())["format"] == io.PAIR_FORMAT
    (tmp_path / "p" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"p: a saved pair folder that also holds files the kit did not write \(notes\.txt\)"):
        io.save_pair(_pair("p", gen="new"), tmp_path / "p")
    assert (tmp_path / "p" / "notes.txt").read_text() == "mine"
    assert io.load_saved_pair(tmp_path / "p").meta["gen"] == "old"


def test_save_pair_onto_a_file(tmp_path):
    (tmp_path / "p").write_text("a file")
    with pytest.raises(FileExistsError, match=r"p: exists and is not a folder"):
        io.save_pair(_pair("p"), tmp_path / "p")
    assert (tmp_path / "p").read_text() == "a file"


def test_save_pair_killed_between_the_renames_is_restored(tmp_path):
    io.save_pair(_pair("p"), tmp_path / "p")
    # what a kill between "old folder aside" and "new folder in" leaves: no p, an old and a new copy
    os.replace(tmp_path / "p", tmp_path / ".reindir-old.p.0123abcd")
    (tmp_path / ".reindir-new.p.89abcdef").mkdir()
    (tmp_path / "keep.txt").write_text("user")
    assert io.clean_leftovers(tmp_path) == [f"removed {tmp_path / '.reindir-new.p.89abcdef'}", f"restored {tmp_path / 'p'}"]
    assert io.load_saved_pair(tmp_path / "p").meta["gen"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "p"]


def test_save_pairs_writer_failing_part_way_keeps_the_old_state(tmp_path, monkeypatch):
    io.save_pairs([_pair("a0"), _pair("a1")], tmp_path)
    (tmp_path / "notes.txt").write_text("user")
    calls = {"n": 0}
    real = store.write_image

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "write_image", failing)  # the name the pair store writes with
    with pytest.raises(OSError, match="disk full"):
        io.save_pairs([_pair("a0", gen="new"), _pair("a1", gen="new"), _pair("a2", gen="new")], tmp_path)
    assert [(p.name, p.meta["gen"]) for p in io.load_manifest(tmp_path)] == [("a0", "old"), ("a1", "old")]
    assert not (tmp_path / "toy" / "a2").exists() and not _kit_temporaries(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "user"


_KILLER = textwrap.dedent("""
    import os, shutil, signal, sys
    import numpy as np
    from reindir_nb import io
    from reindir_nb.core.pair import Pair
    from reindir_nb.core.volume import Volume

    root, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    calls = {"n": 0}

    def killing(real):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == count:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapper

    if mode == "replace":
        os.replace = killing(os.replace)
    else:
        shutil.rmtree = killing(shutil.rmtree)
    pairs = []
    for i in range(4):
        vol = Volume.from_array(np.full((4, 5, 6), 7.0, np.float32), name=f"a{i}")
        pairs.append(Pair(vol, vol, name=f"a{i}", dataset="toy", meta={"gen": "new"}))
    io.save_pairs(pairs, root)
    print("FINISHED")
""")


# os.replace calls of a 4-pair save_pairs: 3 per staged pair (2 images, pair.json) = 12, the journal
# (13), the swaps (14-20: a3 is new, so 7), the manifest (21); then the old copies are deleted (rmtree).
# The kill comes just BEFORE the counted call: killed at 13, the journal is not there (old state).
@pytest.mark.parametrize("mode,count", [("replace", 5), ("replace", 13), ("replace", 14), ("replace", 17),
                                        ("replace", 21), ("rmtree", 1)])
def test_save_pairs_killed_mid_way_leaves_old_or_new_state(tmp_path, mode, count):
    io.save_pairs([_pair("a0"), _pair("a1"), _pair("a2")], tmp_path)
    (tmp_path / "notes.txt").write_text("user file")
    (tmp_path / "toy" / "README.txt").write_text("user file in the data set folder")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(tmp_path), mode, str(count)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "FINISHED" not in proc.stdout
    pairs = io.load_manifest(tmp_path)  # finishes or undoes the interrupted save
    state = [(p.name, p.meta["gen"]) for p in pairs]
    old = [("a0", "old"), ("a1", "old"), ("a2", "old")]
    new = [("a0", "new"), ("a1", "new"), ("a2", "new"), ("a3", "new")]
    assert state in (old, new), state
    assert state == (old if count <= 13 and mode == "replace" else new)  # the journal (13th rename) commits
    assert all(float(p.fixed.array.max()) == (7.0 if p.meta["gen"] == "new" else 0.0) for p in pairs)
    assert (tmp_path / "notes.txt").read_text() == "user file"
    assert (tmp_path / "toy" / "README.txt").read_text() == "user file in the data set folder"
    assert not _kit_temporaries(tmp_path)
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["README.txt"] + [n for n, _ in state]
    # and the next save_pairs works from there
    io.save_pairs([_pair("b0", gen="newer")], tmp_path)
    assert [p.name for p in io.load_manifest(tmp_path)] == ["b0"]


def test_save_pairs_refuses_a_foreign_manifest_and_a_foreign_pair_folder(tmp_path):
    (tmp_path / "manifest.csv").write_text("patient;weight\nA;70\n")
    with pytest.raises(FileExistsError, match=r"manifest\.csv: exists and is not a pair manifest the kit wrote"):
        io.save_pairs([_pair("a0")], tmp_path)
    assert (tmp_path / "manifest.csv").read_text() == "patient;weight\nA;70\n"
    (tmp_path / "manifest.csv").unlink()
    (tmp_path / "toy" / "a1").mkdir(parents=True)
    (tmp_path / "toy" / "a1" / "scan.dcm").write_bytes(b"DICM")
    with pytest.raises(FileExistsError, match=r"toy/a1: not empty and not a pair folder"):
        io.save_pairs([_pair("a0"), _pair("a1")], tmp_path)
    assert not (tmp_path / "toy" / "a0").exists()  # refused before anything was written
    assert (tmp_path / "toy" / "a1" / "scan.dcm").read_bytes() == b"DICM"


def test_read_only_workspace_is_refused_before_work(tmp_path, monkeypatch):
    def no_write(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", no_write)  # simulated: root ignores chmod
    with pytest.raises(PermissionError, match=r"ws: not writable, cannot write the saved pairs and their manifest"):
        io.save_pairs([_pair("a0")], tmp_path / "ws")
    with pytest.raises(PermissionError, match=r"ws: not writable, cannot write checkpoints there"):
        ensure_writable(tmp_path / "ws", "checkpoints")
    assert list((tmp_path / "ws").iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod")
def test_read_only_workspace_really_read_only(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    ws.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"ws: not writable, cannot write the saved pairs"):
            io.save_pairs([_pair("a0")], ws)
    finally:
        ws.chmod(0o755)


def test_ensure_writable_creates_and_refuses_files(tmp_path):
    assert ensure_writable(tmp_path / "a" / "b", "figures") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"f: exists and is not a folder; cannot write figures there"):
        ensure_writable(tmp_path / "f", "figures")


# ============================================================================ unreadable text
def test_binary_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ValueError, match=r"manifest\.csv: is a binary file, not a pair manifest"):
        io.load_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_bytes("name,dataset,path\nk\xe4se,toy,toy/a\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"manifest\.csv: is not a UTF-8 text file"):
        io.load_manifest(tmp_path)


def test_binary_pair_json_and_landmark_file(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pair.json").write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(ValueError, match=r"pair\.json: is a binary file"):
        io.load_saved_pair(tmp_path / "p")
    (tmp_path / "NLST_dataset.json").write_bytes('{"name": "NLST \u00e4"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"NLST_dataset\.json: not a UTF-8 text file"):
        datasets.dataset_json(tmp_path)
    (tmp_path / "lm.csv").write_bytes(b"\x1f\x8b\x08\x00\x00\x00")
    with pytest.raises(ValueError, match=r"lm\.csv: is a binary file, not a point file"):
        io.read_points(tmp_path / "lm.csv", units="mm")


def test_write_image_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match=r"v\.png3d: unknown image format '\.png3d'; write_image knows \.mha"):
        io.write_image(_vol(), tmp_path / "v.png3d")
    with pytest.raises(io.ImageFormatError, match=r"v\.mhd: \.mhd writes a header and a separate data file"):
        io.write_image(_vol(), tmp_path / "v.mhd")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", io.IMAGE_WRITE_SUFFIXES)
def test_write_image_known_formats_round_trip(tmp_path, suffix):
    encoding = locale.getpreferredencoding(False)
    vol = Volume.from_array(np.arange(60, dtype=np.float32).reshape(3, 4, 5), spacing=(1.5, 2, 2.5))
    back = io.read_image(io.write_image(vol, tmp_path / f"v{suffix}"))
    np.testing.assert_array_equal(back.array, vol.array)
    assert locale.getpreferredencoding(False) == encoding  # ITK's VTK reader switches the locale to "C"
    assert [p.name for p in tmp_path.iterdir()] == [f"v{suffix}"]


# ===================================================================================== images
@pytest.mark.parametrize("suffix,compress,dtype", [(".nii.gz", True, np.int16), (".nii", False, np.int16),
                                                   (".nii.gz", True, np.float32)])
def test_truncated_nifti(tmp_path, suffix, compress, dtype):
    arr = np.random.default_rng(0).integers(-1000, 1000, (20, 30, 40)).astype(dtype)
    path = _img(tmp_path / f"ct{suffix}", arr, compress=compress)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])  # ITK reads this with 40 % zero voxels
    with pytest.raises(ValueError, match=rf"ct{suffix.replace('.', '[.]')}: truncated image data: \d+ of (48000|96000) bytes present \((5\d|6\d) %"):
        io.read_image(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_metaimage(tmp_path, compress):
    arr = np.random.default_rng(0).integers(-1000, 1000, (20, 30, 40)).astype(np.int16)
    path = _img(tmp_path / "ct.mha", arr, compress=compress)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])  # ITK says "No such file or directory"
    with pytest.raises(ValueError, match=r"ct\.mha: cannot read image \(truncated: \d+ of \d+ (compressed|data) bytes"):
        io.read_image(path)


def test_directory_passed_as_image(tmp_path):
    (tmp_path / "series").mkdir()
    with pytest.raises(IsADirectoryError, match=r"series: is a folder, not an image file"):
        io.read_image(tmp_path / "series")


def test_vector_image_passed_as_ct(tmp_path):
    _img(tmp_path / "f.mha", _ct())
    _img(tmp_path / "disp.mha", np.zeros((8, 9, 10, 3), np.float32), vector=True)
    with pytest.raises(ValueError, match=r"disp\.mha: a CT image must be a scalar 3D image, but it holds 3 values per voxel"):
        datasets.load_generic_pair(tmp_path / "f.mha", tmp_path / "disp.mha")
    vec = Volume.from_array(np.zeros((4, 5, 6, 3), np.float32), name="field")
    with pytest.raises(ValueError, match=r"field: the moving image must be a scalar 3D image"):
        Pair(_vol(), vec)


def _dirlab_raw(path, hu, dtype="<i2", offset=1024):
    (hu + offset).astype(dtype).tofile(path)
    return path


def _dirlab_hu():
    hu = np.full((94, 256, 256), -1000, np.int16)
    hu[10:80, 40:220, 40:220] = 40
    hu[20:70, 60:120, 60:200] = -850
    return hu


def test_big_endian_dirlab_raw(tmp_path):
    path = _dirlab_raw(tmp_path / "case1_T00.img", _dirlab_hu(), dtype=">i2")
    with pytest.raises(ValueError, match=r"case1_T00\.img: read as little-endian .* pass byte_order='big'"):
        io.read_dirlab_img(path, 1)
    vol = io.read_dirlab_img(path, 1, byte_order="big")
    np.testing.assert_array_equal(vol.array, _dirlab_hu())


def test_dirlab_raw_storing_plain_hu(tmp_path):
    path = _dirlab_raw(tmp_path / "case1_T00.img", _dirlab_hu(), offset=0)
    with pytest.raises(ValueError, match=r"case1_T00\.img: .*% of the voxels lie below -1100 HU.* pass hu_offset=0"):
        io.read_dirlab_img(path, 1)
    np.testing.assert_array_equal(io.read_dirlab_img(path, 1, hu_offset=0).array, _dirlab_hu())


def test_uint16_export_with_hu_offset(tmp_path):
    stored = (_ct() + 1024).clip(0).astype(np.uint16)
    _img(tmp_path / "f.nii.gz", stored, compress=True)
    with pytest.warns(UserWarning, match=r"f\.nii\.gz: does not look like a CT in HU: no air.*pass hu_offset=1024"):
        datasets.load_generic_pair(tmp_path / "f.nii.gz", tmp_path / "f.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pair = datasets.load_generic_pair(tmp_path / "f.nii.gz", tmp_path / "f.nii.gz", hu_offset=1024)
    assert pair.fixed.array.min() < -900 and pair.fixed.array.dtype == np.float32


def test_constant_image_in_lung_mask_and_prepare():
    flat = _vol("blank.mha", shape=(8, 9, 10), value=-900.0)  # all "air": would become one huge lung
    with pytest.raises(ValueError, match=r"blank\.mha: every voxel has the value -900; lung_mask needs"):
        preprocess.lung_mask(flat, use_lungmask=False)
    mask = flat.with_array(np.ones(flat.shape, bool))
    with pytest.raises(ValueError, match=r"blank\.mha: every voxel has the value -900; prepare \(p\)"):
        preprocess.prepare(Pair(flat, flat, fixed_mask=mask, moving_mask=mask, name="p"), profile="smoke")


def test_lung_mask_filling_the_image_is_refused():
    arr = np.full((12, 12, 12), -800.0, np.float32)  # lung-like everywhere, no body, no outside air
    arr[6, 6, 6] = 0.0
    with pytest.raises(ValueError, match=r"soup: the lung mask would cover 100 % of the image"):
        preprocess.lung_mask(Volume.from_array(arr, name="soup"), use_lungmask=False)


def test_non_orthonormal_direction():
    sheared = np.array([[1.16, 0, 0], [0, 1 / 1.16, 0], [0, 0, 1.0]])  # det 1: passed the old check
    with pytest.raises(ValueError, match=r"direction must be orthonormal .* column lengths \[1\.16, 0\.8621, 1\.0\]"):
        Grid((4, 4, 4), spacing=(8, 8, 8), direction=sheared)
    with pytest.raises(ValueError, match=r"angles \[80\.0"):
        a = np.radians(80)
        Grid((4, 4, 4), direction=np.array([[1, np.cos(a), 0], [0, np.sin(a), 0], [0, 0, 1.0]]))
    Grid((4, 4, 4), direction=np.diag([-1.0, -1.0, 1.0]))  # a reflection is fine


def test_non_orthonormal_direction_in_a_file(tmp_path):
    path = _img(tmp_path / "shear.mha", np.zeros((4, 4, 4), np.uint8), direction=(1.16, 0, 0, 0, 1 / 1.16, 0, 0, 0, 1))
    with pytest.raises(ValueError, match=r"shear\.mha: direction must be orthonormal"):
        io.read_image(path)


# ============================================================================= masks on grids
def test_mask_with_the_image_shape_but_another_origin(tmp_path):
    img = Volume.from_array(_ct(), spacing=(1.0, 1.0, 2.0), name="ct.mha")
    mask_arr = np.zeros(img.shape, bool)
    mask_arr[2:6, 3:6, 3:7] = True
    shifted = Volume.from_array(mask_arr, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 4.0), name="lungs.mha")
    with pytest.raises(ValueError, match=r"lungs\.mha: the fixed mask has the image's shape but not its grid \(origin"):
        Pair(img, img, fixed_mask=shifted)
    io.write_image(img, tmp_path / "ct.mha")
    io.write_image(shifted, tmp_path / "lungs.mha")
    with pytest.raises(ValueError, match=r"lungs\.mha: the fixed mask has the image's shape but not its grid"):
        datasets.load_generic_pair(tmp_path / "ct.mha", tmp_path / "ct.mha", fixed_mask=tmp_path / "lungs.mha")
    with pytest.warns(UserWarning, match=r"lungs\.mha: mask grid differs .* resampled onto the image grid"):
        pair = datasets.load_generic_pair(tmp_path / "ct.mha", tmp_path / "ct.mha",
                                          fixed_mask=tmp_path / "lungs.mha", resample_masks=True)
    assert pair.fixed_mask.grid.same_as(pair.fixed.grid)
    # world placement kept: the mask's slice z=2 (world z = 4 + 4 = 8 mm) is image slice 4
    np.testing.assert_array_equal(pair.fixed_mask.array[4:8], mask_arr[2:6])


# ================================================================================== landmarks
def test_decimal_commas_with_semicolons(tmp_path):
    (tmp_path / "lm.csv").write_text("12,5;-3,25;40,0\n1,0;2,0;3,5\n")
    np.testing.assert_allclose(io.read_points(tmp_path / "lm.csv", units="mm"), [[12.5, -3.25, 40.0], [1, 2, 3.5]])
    (tmp_path / "hdr.csv").write_text("x;y;z\n12,5;-3,25;40\n")
    np.testing.assert_allclose(io.read_points(tmp_path / "hdr.csv", units="mm"), [[12.5, -3.25, 40.0]])


def test_decimal_commas_with_spaces(tmp_path):
    (tmp_path / "lm.txt").write_text("12,5 -3,25 40,0\n")
    with pytest.warns(UserWarning, match=r"lm\.txt: every value has the form 12,5: read as decimal commas"):
        pts = io.read_points(tmp_path / "lm.txt", units="mm")
    np.testing.assert_allclose(pts, [[12.5, -3.25, 40.0]])


def test_id_x_y_z_header(tmp_path):
    (tmp_path / "lm.csv").write_text("id,x,y,z\n1,10.5,20,30\n2,11,21,31\n")
    np.testing.assert_allclose(io.read_points(tmp_path / "lm.csv", units="mm"), [[10.5, 20, 30], [11, 21, 31]])
    (tmp_path / "units.csv").write_text("label, Z [mm], Y [mm], X [mm]\nA,3,2,1\n")  # names, not positions
    np.testing.assert_allclose(io.read_points(tmp_path / "units.csv", units="mm"), [[1, 2, 3]])
    (tmp_path / "odd.csv").write_text("a,b,c,d\n1,2,3,4\n")
    with pytest.raises(ValueError, match=r"odd\.csv: cannot tell which of the 4 columns hold x y z"):
        io.read_points(tmp_path / "odd.csv", units="mm")


def test_id_column_without_header(tmp_path):
    (tmp_path / "lm.txt").write_text("1 10 20 30\n2 11 21 31\n3 12 22 32\n")
    with pytest.warns(UserWarning, match=r"lm\.txt: the first of 4 columns counts 1, 2, \.\.\.: if it is a point id"):
        io.read_points(tmp_path / "lm.txt", units="mm")


def test_dirlab_landmarks_written_zero_based(tmp_path):
    grid = io.dirlab_grid(1)
    (tmp_path / "Case1_300_T00_xyz.txt").write_text("0 10 5\n30 20 10\n")
    with pytest.warns(UserWarning, match=r"Case1_300_T00_xyz\.txt: 1 points have a 0 coordinate.*one_based=False"):
        io.read_dirlab_landmarks(tmp_path / "Case1_300_T00_xyz.txt", grid)
    pts = io.read_dirlab_landmarks(tmp_path / "Case1_300_T00_xyz.txt", grid, one_based=False)
    np.testing.assert_allclose(pts[1], [30 * 0.97, 20 * 0.97, 25.0])


def test_nlst_keypoints_in_zyx_order(tmp_path):
    arr = _ct((12, 12, 12))
    mask = np.zeros(arr.shape, np.uint8)
    mask[2:10, 1:4, 8:11] = 1  # lungs: z 2-9, y 1-3, x 8-10 (not symmetric under x <-> z)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "masksTr").mkdir()
    (tmp_path / "keypointsTr").mkdir()
    for k in ("0000", "0001"):
        _img(tmp_path / "imagesTr" / f"NLST_0001_{k}.nii.gz", arr, compress=True)
        _img(tmp_path / "masksTr" / f"NLST_0001_{k}.nii.gz", mask, compress=True)
    zyx = np.array([[3, 2, 9], [5, 1, 10], [6, 3, 8], [2, 2, 9]])  # (z, y, x): inside the lungs
    for k in ("0000", "0001"):
        np.savetxt(tmp_path / "keypointsTr" / f"NLST_0001_{k}.csv", zyx, delimiter=",", fmt="%d")
    with pytest.raises(ValueError, match=r"NLST_0001_0000\.csv: only 0 % of the keypoints lie in the lung mask .* "
                                         r"but 100 % in \(z, y, x\) order"):
        datasets.load_nlst_pair(tmp_path, 1)
    for k in ("0000", "0001"):  # the right order loads
        np.savetxt(tmp_path / "keypointsTr" / f"NLST_0001_{k}.csv", zyx[:, ::-1], delimiter=",", fmt="%d")
    assert len(datasets.load_nlst_pair(tmp_path, 1).fixed_landmarks) == 4


def test_voxel_file_read_as_mm(tmp_path):
    grid = Grid((100, 256, 256), spacing=(0.97, 0.97, 2.5))
    (tmp_path / "vox.txt").write_text("120 80 40\n130 90 50\n100 100 60\n")
    with pytest.warns(UserWarning, match=r"vox\.txt: read with units='mm', every coordinate is a whole number .* units='voxel'"):
        io.read_points(tmp_path / "vox.txt", units="mm", grid=grid)
    shifted = Grid((100, 256, 256), spacing=(0.97, 0.97, 2.5), origin=(-150.0, -150.0, -300.0))
    with pytest.warns(UserWarning, match=r"vox\.txt: read with units='mm', the points lie outside the image, but they fit"):
        io.read_points(tmp_path / "vox.txt", units="mm", grid=shifted)
    (tmp_path / "mm.txt").write_text("120.31 80.2 40.5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io.read_points(tmp_path / "mm.txt", units="mm", grid=grid)  # plausible mm: silent


def test_header_units_contradict_units(tmp_path):
    (tmp_path / "lm.csv").write_text("x_vox,y_vox,z_vox\n1,2,3\n")
    with pytest.warns(UserWarning, match=r"lm\.csv: the header 'x_vox,y_vox,z_vox' says voxel indices but units='mm'"):
        io.read_points(tmp_path / "lm.csv", units="mm")


# ===================================================================================== points
@pytest.mark.parametrize("shape,hint", [((3, 5), "looks transposed"), ((5, 4), "homogeneous"),
                                        ((3,), r"reshape\(1, 3\)"), ((2, 3, 1), r"got shape \(2, 3, 1\)")])
def test_as_points_wrong_shapes(shape, hint):
    with pytest.raises(ValueError, match=rf"landmarks: points must be an \(N, 3\) array .*{hint}"):
        as_points(np.zeros(shape), "landmarks")


def test_as_points_empty_nonfinite_and_types():
    with pytest.raises(ValueError, match=r"kp: no points \(shape \(0, 3\)\)"):
        as_points(np.zeros((0, 3)), "kp")
    assert as_points(np.zeros((0, 3)), "kp", allow_empty=True).shape == (0, 3)
    with pytest.raises(ValueError, match=r"kp: 1 of 2 points hold NaN/inf \(first: #1"):
        as_points([[0, 0, 0], [1, np.nan, 2]], "kp")
    for bad in (None, "1 2 3", [["a", "b", "c"]], np.ones((2, 3), complex)):
        with pytest.raises(TypeError, match=r"^kp: "):
            as_points(bad, "kp")
    out = as_points([[1, 2, 3]], "kp")
    assert out.dtype == np.float64 and out.shape == (1, 3)


def test_point_writers_refuse_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"lm\.csv: points: .*got shape \(3, 4\); it looks transposed"):
        io.write_points_csv(np.zeros((3, 4)), tmp_path / "lm.csv")
    with pytest.raises(ValueError, match=r"p\.txt: points: .*got shape \(4, 4\)"):
        io.write_elastix_points(np.zeros((4, 4)), tmp_path / "p.txt")
    with pytest.raises(ValueError, match=r"e\.csv: points: no points"):
        io.write_points_csv(np.zeros((0, 3)), tmp_path / "e.csv")
    assert list(tmp_path.iterdir()) == []


def test_pair_refuses_transposed_landmarks():
    with pytest.raises(ValueError, match=r"p: fixed_landmarks: points must be an \(N, 3\) .*\(3, 2\); it looks transposed"):
        Pair(_vol(), _vol(), np.ones((3, 2)), np.ones((3, 2)), name="p")


def test_gzip_trailer_mismatch_still_reads_complete_files(tmp_path):
    # a complete NIfTI whose gzip stream has two members (ISIZE covers only the last): streamed, accepted
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = _img(tmp_path / "two.nii", arr)
    data = path.read_bytes()
    with open(tmp_path / "two.nii.gz", "wb") as fh:
        fh.write(gzip.compress(data[:200]) + gzip.compress(data[200:]))
    np.testing.assert_array_equal(io.read_image(tmp_path / "two.nii.gz").array, arr)
