"""Reading and writing images, landmark files and prepared pairs.

Every reader returns world-mm geometry (see :mod:`reindir_nb.geometry`): images as
:class:`~reindir_nb.volume.Volume`, points as ``(N, 3)`` world mm ``(x, y, z)``; every
index -> mm conversion goes through :class:`~reindir_nb.geometry.Grid`. Every writer is
atomic (a temporary name in the same folder, then ``os.replace``), and every error names
the file and the problem.

Landmark file conventions (pinned by ``tests/test_io.py`` with hand-computed mm values):

* DIR-LAB ``Case{i}_300_T00_xyz.txt``: ``x y z`` per line, **1-based** voxel indices.
* Learn2Reg keypoint csv (NLST, lung CBCT): no header, **0-based** voxel indices, columns in the
  NIfTI's axis order ``(i, j, k)`` = ITK index ``(x, y, z)`` (the reverse of SimpleITK's
  ``(z, y, x)`` numpy array).
* Elastix point sets: ``point`` (world mm) or ``index`` (0-based voxel) on line 1, the count on
  line 2, then ``x y z`` per line.
* Generic csv/txt: ``units="mm"`` or ``units="voxel"`` must be given; never guessed (a warning
  says when mm points look like voxel indices). Decimal commas (``12,5;-3,25;40,0``) are read as
  such; header columns named x, y, z are picked by name (``id,x,y,z``).

Hostile input (truncated files, wrong byte order or HU offset, binary text files, folders passed
as files, unknown export suffixes) raises an error naming the file: docs/reliability.md lists
every case and its test. Saved pair folders are only ever replaced when the kit wrote them
(``pair.json`` is the marker), and :func:`save_pairs` is all-or-nothing even when killed.
"""

from __future__ import annotations

import gzip
import json
import locale
import os
import re
import shutil
import struct
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..core.files import atomic_folder, atomic_path, ensure_writable
from ..core.geometry import Grid
from ..core.pair import Pair
from ..core.points import as_points
from ..core.volume import Volume

__all__ = [
    "DIRLAB_CASES",
    "DIRLAB_SLICE_MM",
    "atomic_path",
    "atomic_folder",
    "IMAGE_WRITE_SUFFIXES",
    "ImageFormatError",
    "read_image",
    "write_image",
    "ct_value_problem",
    "dirlab_grid",
    "read_dirlab_img",
    "read_dirlab_landmarks",
    "read_learn2reg_keypoints",
    "read_points",
    "write_points_csv",
    "read_elastix_points",
    "write_elastix_points",
    "save_pair",
    "load_saved_pair",
    "save_pairs",
    "load_manifest",
    "is_pair_folder",
    "clean_leftovers",
]

# DIR-LAB 4DCT (Castillo et al. 2009): voxels (x, y, z) and in-plane spacing in mm; slices are 2.5 mm.
DIRLAB_CASES: dict[int, tuple[tuple[int, int, int], float]] = {
    1: ((256, 256, 94), 0.97),
    2: ((256, 256, 112), 1.16),
    3: ((256, 256, 104), 1.15),
    4: ((256, 256, 99), 1.13),
    5: ((256, 256, 106), 1.10),
    6: ((512, 512, 128), 0.97),
    7: ((512, 512, 136), 0.97),
    8: ((512, 512, 128), 0.97),
    9: ((512, 512, 128), 0.97),
    10: ((512, 512, 120), 0.97),
}
DIRLAB_SLICE_MM = 2.5
DIRLAB_HU_OFFSET = 1024.0  # stored value = HU + 1024

# landmarks may sit up to one voxel outside the voxel-centre box (as Pair.validate allows)
_LANDMARK_MARGIN_VOXELS = 1.0


def _require_file(path: Path, what: str = "a file") -> None:
    """FileNotFoundError / IsADirectoryError naming ``path`` unless it is a file."""
    if path.is_dir():
        raise IsADirectoryError(
            f"{path}: is a folder, not {what} (give the file itself; a DICOM series folder must be "
            f"converted to .nii.gz or .mha first)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")


def _read_text(path: Path, what: str) -> str:
    """The text of ``path``; a binary or non-UTF-8 file raises ValueError naming it (not UnicodeDecodeError)."""
    _require_file(path)
    data = path.read_bytes()
    if b"\0" in data[:4096]:
        raise ValueError(f"{path}: is a binary file, not {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: is not a UTF-8 text file ({what} expected; byte {err.start} cannot be decoded)"
        ) from None


def _check_spacing(spacing: Sequence[float], where: str | Path) -> None:
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        shown = tuple(float(s) for s in spacing)
        raise ValueError(f"{where}: spacing {shown} mm is not positive (every voxel size must be > 0)")


def _sitk_reason(err: RuntimeError) -> str:
    """The informative last line of a SimpleITK exception (the first one is a source location)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    reason = lines[-1] if lines else "unknown reason"
    for prefix in ("sitk::ERROR:", "ITK ERROR:"):
        reason = reason.removeprefix(prefix).strip()
    return reason


# ----------------------------------------------------------------------------------- images
_CHUNK = 1 << 24  # bytes per streamed read (a multiple of every voxel size)


@contextmanager
def _keep_locale() -> Iterator[None]:
    """Restore the process locale after a SimpleITK call: ITK's VTK image IO switches it to "C",
    after which Python decodes every text file as ASCII."""
    saved = locale.setlocale(locale.LC_ALL, None)
    try:
        yield
    finally:
        if locale.setlocale(locale.LC_ALL, None) != saved:
            locale.setlocale(locale.LC_ALL, saved)


class ImageFormatError(ValueError, RuntimeError):
    """An image path whose suffix names no format the kit writes. A ValueError; also a
    RuntimeError, which is what SimpleITK raised for it before the kit checked."""


def _nifti_header(head: bytes) -> tuple[str, int, int, int, int] | None:
    """(endian, datatype, bitpix, voxel count, data offset) of a single-file NIfTI-1/2 header, else None."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] in (348, 540):
            break
    else:
        return None
    if struct.unpack(endian + "i", head[:4])[0] == 348:
        if head[344:347] != b"n+1":
            return None  # .hdr/.img pair: the data is in another file
        dims = struct.unpack(endian + "8h", head[40:56])
        datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
        offset = int(struct.unpack(endian + "f", head[108:112])[0])
    else:
        if len(head) < 540 or head[4:7] != b"n+2":
            return None
        datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
        dims = struct.unpack(endian + "8q", head[16:80])
        offset = int(struct.unpack(endian + "q", head[168:176])[0])
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    count = int(np.prod([max(int(d), 1) for d in dims[1 : dims[0] + 1]]))
    return endian, int(datatype), int(bitpix), count, max(offset, 348)


def _stream_bytes(path: Path, gz: bool):
    """The (decompressed) bytes of ``path`` in chunks; a gzip stream that is cut off just ends
    early (every byte that could be decompressed is yielded). Corrupt data raises ValueError."""
    with open(path, "rb") as fh:
        if not gz:
            while chunk := fh.read(_CHUNK):
                yield chunk
            return
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while raw := fh.read(_CHUNK):
            while raw:
                try:
                    yield inflater.decompress(raw)
                except zlib.error as err:
                    raise ValueError(f"{path}: the compressed data is corrupt ({err})") from None
                raw = inflater.unused_data  # a next gzip member follows
                if raw:
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)


def _nifti_scan(path: Path) -> tuple[int, int, int]:
    """(expected data bytes, data bytes present, NaN/inf voxels) of a single-file NIfTI (.nii, .nii.gz).

    ITK reads a truncated NIfTI without complaint, filling the missing voxels with 0, and turns
    NaN/inf into 0: both are only visible in the file itself. A gzip stream is decompressed in
    chunks; for integer images the gzip trailer is checked first (a complete file is not decompressed).
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as fh:
            info = _nifti_header(fh.read(540))
    except (OSError, EOFError):
        return 0, 0, 0  # not gzip / too short: ITK reports it
    if info is None:
        return 0, 0, 0
    endian, datatype, bitpix, count, offset = info
    expected = count * bitpix // 8
    float_types = {16: "f4", 64: "f8"}  # NIfTI DT_FLOAT32, DT_FLOAT64
    is_float = datatype in float_types
    if not gz and not is_float:
        return expected, max(0, path.stat().st_size - offset), 0
    if gz and not is_float:
        with open(path, "rb") as raw:
            raw.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", raw.read(4))[0]
        if isize == (offset + expected) % (1 << 32):
            return expected, expected, 0
    dtype = np.dtype(endian + float_types[datatype]) if is_float else None
    present = bad = skip = 0
    carry = b""
    for chunk in _stream_bytes(path, gz):
        if skip < offset:  # the header and extensions
            take = min(offset - skip, len(chunk))
            skip, chunk = skip + take, chunk[take:]
        chunk = chunk[: max(0, expected - present)]
        present += len(chunk)
        if dtype is not None and chunk:
            chunk = carry + chunk
            usable = len(chunk) - len(chunk) % dtype.itemsize
            values = np.frombuffer(chunk[:usable], dtype=dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            carry = chunk[usable:]
        if present >= expected:
            break
    return expected, present, bad


_MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _metaimage_problem(path: Path) -> str | None:
    """Why a MetaImage (.mha/.mhd) file cannot hold its voxels (truncated data, missing data file), else None.

    ITK's own message for a truncated .mha is "No such file or directory"."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    fields: dict[str, str] = {}
    data_start = None
    pos = 0
    for line in head.split(b"\n"):
        pos += len(line) + 1
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            continue
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            data_start = pos
            break
    if data_start is None or "DimSize" not in fields or fields.get("ElementType") not in _MET_SIZES:
        return None
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        return None
    expected = int(np.prod(dims)) * channels * _MET_SIZES[fields["ElementType"]]
    compressed = fields.get("CompressedData", "False").lower() == "true"
    data_file = fields["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        present = path.stat().st_size - data_start
        where = "after the header"
    elif data_file.upper() == "LIST" or "%" in data_file:
        return None
    else:
        target = path.parent / data_file
        if not target.is_file():
            return f"its data file {target} (ElementDataFile) is missing"
        present, where = target.stat().st_size, f"in {target.name}"
    if compressed:
        try:
            wanted = int(fields.get("CompressedDataSize", "0"))
        except ValueError:
            wanted = 0
        if wanted and present < wanted:
            return f"truncated: {present} of {wanted} compressed bytes {where} (CompressedDataSize)"
        return None
    if present < expected:
        size = "x".join(map(str, dims))
        return (f"truncated: {present} of {expected} data bytes {where} ({size} voxels of "
                f"{fields['ElementType']} x {channels}), {100 * present / max(expected, 1):.0f} % present")
    return None


def _check_image_file(path: Path) -> None:
    """File-level checks ITK skips: truncated data (NIfTI, MetaImage)."""
    name = path.name.lower()
    if name.endswith((".mha", ".mhd")):
        problem = _metaimage_problem(path)
        if problem:
            raise ValueError(f"{path}: cannot read image ({problem})")


def read_image(path: str | Path) -> Volume:
    """Any SimpleITK-readable 3D image (NIfTI, MetaImage, NRRD, ...) as a Volume in its stored dtype.

    The header is checked before the voxels are read: a ValueError naming the file is raised
    when it cannot be read, is not 3D, has zero/negative spacing (ITK would silently turn a
    negative spacing into a flipped direction and refuse a zero one with a cryptic message) or a
    non-orthonormal direction, or when its data is truncated (ITK fills a cut NIfTI with zeros and
    reports a cut MetaImage as "No such file or directory"). Floating-point images are checked for
    NaN/inf (for NIfTI in the file's raw data: ITK's NIfTI reader silently turns NaN/inf into 0).
    A missing file raises FileNotFoundError, a folder IsADirectoryError. Vector images are
    returned as ``(z, y, x, c)`` arrays (a :class:`~reindir_nb.core.pair.Pair` refuses them as CT).
    """
    import SimpleITK as sitk

    path = Path(path)
    _require_file(path, "an image file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _keep_locale():
            reader.ReadImageInformation()
    except RuntimeError as err:
        raise ValueError(f"{path}: cannot read image ({_sitk_reason(err)})") from None
    if reader.GetDimension() != 3:
        raise ValueError(f"{path}: expected a 3D image, found {reader.GetDimension()}D")
    _check_spacing(reader.GetSpacing(), path)
    _check_image_file(path)
    is_nifti = path.name.lower().endswith((".nii", ".nii.gz"))
    expected, present, hidden = _nifti_scan(path) if is_nifti else (0, 0, 0)
    if present < expected:
        raise ValueError(
            f"{path}: truncated image data: {present} of {expected} bytes present "
            f"({100 * present / expected:.0f} %; ITK would read the rest as 0). Copy or download the file again"
        )
    try:
        with _keep_locale():
            image = reader.Execute()
    except RuntimeError as err:
        raise ValueError(f"{path}: cannot read image ({_sitk_reason(err)})") from None
    try:
        vol = Volume.from_sitk(image, name=str(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if np.issubdtype(vol.array.dtype, np.floating):
        vol.check_finite()
        if hidden:
            raise ValueError(f"{path}: contains {hidden} NaN/inf voxel values (in the file; ITK reads them as 0)")
    return vol


# single-file formats only: a header + data pair (.mhd/.raw, .hdr/.img, .nhdr) written under a
# temporary name would keep pointing at the temporary data file after the atomic rename
IMAGE_WRITE_SUFFIXES = (".mha", ".nii", ".nii.gz", ".nrrd", ".vtk", ".gipl", ".gipl.gz", ".h5", ".hdf5")


def _write_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(IMAGE_WRITE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    if name.endswith((".mhd", ".hdr", ".img", ".nhdr")):
        raise ImageFormatError(
            f"{path}: {Path(name).suffix} writes a header and a separate data file, which cannot be written "
            f"atomically; use a single-file format ({', '.join(IMAGE_WRITE_SUFFIXES)})"
        )
    raise ImageFormatError(
        f"{path}: unknown image format {''.join(path.suffixes) or '(no suffix)'!r}; "
        f"write_image knows {', '.join(IMAGE_WRITE_SUFFIXES)}"
    )


def write_image(volume: Volume, path: str | Path, compress: bool = True) -> Path:
    """Write a Volume with SimpleITK (format from the suffix, one of :data:`IMAGE_WRITE_SUFFIXES`,
    e.g. ``.mha``, ``.nii.gz``), atomically. Boolean arrays (masks) are written as uint8. An
    unknown suffix raises :class:`ImageFormatError` (a ValueError) naming the path before
    anything is written."""
    import SimpleITK as sitk

    path = Path(path)
    _write_suffix(path)
    if not isinstance(volume, Volume):
        raise TypeError(f"{path}: write_image needs a Volume, got {type(volume).__name__}")
    if volume.array.dtype == bool:
        volume = volume.with_array(volume.array.astype(np.uint8))
    with atomic_path(path) as tmp:
        try:
            with _keep_locale():
                sitk.WriteImage(volume.to_sitk(), str(tmp), compress)
        except RuntimeError as err:
            raise RuntimeError(f"{path}: cannot write image ({_sitk_reason(err)})") from None
    return path


# ------------------------------------------------------------------------- CT intensities
CT_HU_RANGE = (-3100.0, 4100.0)  # what a CT in HU holds (air -1000, padding -1024/-2048/-3024, metal ~3000)


def ct_value_problem(array: np.ndarray) -> str | None:
    """Why ``array`` does not look like a CT in HU, or None: more than 1 % of voxels outside
    :data:`CT_HU_RANGE` (wrong byte order: a misread int16 reaches +-32767); no air at all (fewer
    than 0.1 % of voxels below -500 HU while some are above 500: an unsigned export storing
    HU + 1024); or most voxels (over 60 %) below -1100 HU (an offset subtracted twice; scanner
    padding of -1024/-2048 HU outside the field of view covers about 21 % of a slice)."""
    values = np.asarray(array).ravel()
    if values.size > 2_000_000:
        values = values[:: values.size // 1_000_000]
    values = values.astype(np.float32, copy=False)
    lo, hi = CT_HU_RANGE
    outside = float(np.mean((values < lo) | (values > hi)))
    vmin, vmax = float(values.min()), float(values.max())
    if outside > 0.01:
        return f"{100 * outside:.0f} % of the voxels lie outside {lo:g}..{hi:g} HU (values {vmin:g}..{vmax:g})"
    if float(np.mean(values < -500.0)) < 0.001 and vmax > 500.0:
        return f"no air: no voxel below -500 HU (values {vmin:g}..{vmax:g})"
    below = float(np.mean(values < -1100.0))
    if below > 0.6:
        return f"{100 * below:.0f} % of the voxels lie below -1100 HU, air is -1000 (values {vmin:g}..{vmax:g})"
    return None


def dirlab_grid(case: int) -> Grid:
    """Geometry of DIR-LAB case ``case`` (1-10): size and spacing from :data:`DIRLAB_CASES`,
    2.5 mm slices, origin 0, identity direction (the raw files carry no geometry)."""
    if case not in DIRLAB_CASES:
        raise ValueError(f"unknown DIR-LAB case {case!r} (cases are 1-10)")
    (nx, ny, nz), inplane = DIRLAB_CASES[case]
    return Grid((nz, ny, nx), spacing=(inplane, inplane, DIRLAB_SLICE_MM))


def read_dirlab_img(path: str | Path, case: int, byte_order: str = "little",
                    hu_offset: float = DIRLAB_HU_OFFSET) -> Volume:
    """A DIR-LAB raw image: int16 without header (``byte_order`` "little", as distributed, or
    "big"), stored values HU + ``hu_offset`` (1024) -> float32 HU.

    Size and spacing come from :func:`dirlab_grid`. A file of the wrong size raises ValueError
    naming the file with the expected and actual byte counts. Values that are not CT HU raise a
    ValueError naming the file and the fix: more than 1 % of voxels outside -1200..4000 HU (the
    other byte order or offset is tried and suggested when it fits), or a warning when no voxel is
    below -500 HU (``hu_offset`` probably wrong).
    """
    path = Path(path)
    _require_file(path)
    if case not in DIRLAB_CASES:
        raise ValueError(f"{path}: unknown DIR-LAB case {case!r} (cases are 1-10)")
    if byte_order not in ("little", "big"):
        raise ValueError(f"{path}: byte_order must be 'little' or 'big', got {byte_order!r}")
    grid = dirlab_grid(case)
    nz, ny, nx = grid.shape
    expected = nx * ny * nz * 2
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(
            f"{path}: {actual} bytes, but DIR-LAB case {case} ({nx}x{ny}x{nz} int16) needs {expected} bytes"
        )
    raw = np.fromfile(path, dtype="<i2" if byte_order == "little" else ">i2").reshape(nz, ny, nx)
    hu = raw.astype(np.float32) - np.float32(hu_offset)
    problem = ct_value_problem(hu)
    if problem and problem.startswith("no air"):
        warnings.warn(f"{path}: {problem} after subtracting hu_offset={hu_offset:g}; if the file stores HU + 1024 "
                      f"pass hu_offset=1024, if it stores HU pass hu_offset=0", stacklevel=2)
    elif problem:
        other = "big" if byte_order == "little" else "little"
        fixes = [(f"byte_order={other!r}", raw.byteswap().astype(np.float32) - np.float32(hu_offset))]
        fixes += [(f"hu_offset={alt:g}", raw.astype(np.float32) - np.float32(alt))
                  for alt in (0.0, DIRLAB_HU_OFFSET) if alt != hu_offset]
        fits = [label for label, values in fixes if ct_value_problem(values) is None]
        hint = f"; read with {fits[0]} it looks like a CT: pass {fits[0]}" if fits else \
            "; neither the other byte order nor another offset fixes it: is this a DIR-LAB image?"
        raise ValueError(f"{path}: read as {byte_order}-endian int16 with hu_offset={hu_offset:g}, {problem}{hint}")
    return Volume(hu, grid, name=str(path))


# -------------------------------------------------------------------------------- landmarks
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+([eE][+-]?\d+)?$")


def _split_fields(text: str, decimal_comma: bool) -> list[str]:
    if decimal_comma:
        return [p.replace(",", ".") for p in re.split(r"[;\s]+", text) if p]
    return [p for p in re.split(r"[,;\s]+", text) if p]


def _header_fields(header: str) -> list[str]:
    """Column names of a header line: split on commas/semicolons/tabs when it has any (names may
    hold spaces, ``X [mm]``), else on spaces."""
    if re.search(r"[,;\t]", header):
        return [f.strip() for f in re.split(r"[,;\t]", header) if f.strip()]
    return header.split()


def _uses_decimal_comma(lines: list[str]) -> bool:
    """True for ``12,5;-3,25;40,0`` (semicolon-separated, decimal commas) and ``12,5 -3,25 40,0``."""
    if any(";" in ln for ln in lines) and any("," in ln for ln in lines):
        return True
    tokens = [t for ln in lines for t in ln.split()]
    return bool(tokens) and all(_DECIMAL_COMMA.match(t) for t in tokens)


def _axis_name(field: str) -> str:
    """``"X [mm]"``, ``"x_mm"``, ``'"x"'`` -> ``"x"``; other names lower-cased."""
    name = re.sub(r"[\[(].*?[\])]", "", field.strip().strip("\"'").lower()).strip()
    return re.sub(r"[_ -]?(mm|vox|voxel|voxels|index|idx|world|coord)$", "", name)


def _read_point_table(path: Path) -> tuple[np.ndarray, str | None]:
    """(N, 3) numbers of a point file and its header line (None without one).

    Fields are separated by commas, semicolons, tabs or spaces; ``#`` comments are skipped. A file
    with semicolons AND commas (``12,5;-3,25;40,0``), or whose every field is ``digits,digits``, uses
    decimal commas. ONE leading non-numeric line is a header: columns named x, y, z (``x_mm``,
    ``X [mm]``, ...) are picked by name, so ``id,x,y,z`` gives the x y z columns; without names
    the first three columns are used (a warning says when the first column looks like point ids).
    """
    text = _read_text(path, "a point file")
    entries = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1)]
    entries = [(n, t) for n, t in entries if t and not t.startswith("#")]
    header: str | None = None
    if entries:
        try:
            [float(p) for p in _split_fields(entries[0][1], False)]
        except ValueError:
            if not _DECIMAL_COMMA.match(entries[0][1].split()[0].split(";")[0]):
                header = entries.pop(0)[1]
    decimal_comma = _uses_decimal_comma([t for _, t in entries])
    if decimal_comma and not any(";" in t for _, t in entries):
        warnings.warn(f"{path}: every value has the form 12,5: read as decimal commas (12.5), fields "
                      f"separated by spaces", stacklevel=3)
    fields = [(lineno, line, _split_fields(line, decimal_comma)) for lineno, line in entries]
    if not fields:
        raise ValueError(f"{path}: no points found")
    lengths = sorted({len(f) for _, _, f in fields})
    if len(lengths) != 1:
        raise ValueError(f"{path}: rows have different numbers of values {lengths}")
    width = lengths[0]
    names = [_axis_name(f) for f in _header_fields(header)] if header is not None else []
    named = bool(names) and all(a in names for a in "xyz")
    if named and len(names) != width:
        raise ValueError(f"{path}: the header {header!r} names {len(names)} columns but rows hold {width}")
    if names and not named and width > 3:
        raise ValueError(f"{path}: cannot tell which of the {width} columns hold x y z from the header "
                         f"{header!r}; name them x, y, z")
    columns = [names.index(a) for a in "xyz"] if named else list(range(width))
    rows: list[list[float]] = []
    for lineno, line, parts in fields:
        try:
            rows.append([float(parts[c]) for c in columns])
        except ValueError:
            raise ValueError(f"{path}: line {lineno} is not numeric: {line[:60]!r}") from None
    arr = np.asarray(rows, dtype=np.float64)
    if arr.shape[1] < 3:
        raise ValueError(f"{path}: need 3 coordinates per line, found {arr.shape[1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: contains NaN/inf coordinates")
    if not named and arr.shape[1] > 3 and len(arr) >= 3:
        first = arr[:, 0]
        if np.all(first == np.round(first)) and np.all(np.diff(first) == 1) and first[0] in (0, 1):
            warnings.warn(f"{path}: the first of {arr.shape[1]} columns counts {first[0]:g}, {first[0] + 1:g}, ...: "
                          f"if it is a point id, the x y z are columns 2-4; add a header 'id,x,y,z'", stacklevel=3)
    if named:
        return arr, header
    return arr[:, :3], header


def _load_numeric_rows(path: Path) -> np.ndarray:
    """The (N, 3) coordinates of a point file (see :func:`_read_point_table`)."""
    return _read_point_table(path)[0]


def _check_index_inside(path: Path, index: np.ndarray, grid: Grid, convention: str) -> None:
    """Raise a ValueError naming the landmark file if 0-based indices (x, y, z) leave the grid."""
    upper = grid.size_xyz - 1 + _LANDMARK_MARGIN_VOXELS
    inside = np.all((index >= -_LANDMARK_MARGIN_VOXELS) & (index <= upper), axis=1)
    if inside.all():
        return
    first = int(np.flatnonzero(~inside)[0])
    size = "x".join(str(int(s)) for s in grid.size_xyz)
    raise ValueError(
        f"{path}: {int((~inside).sum())} of {len(index)} points lie outside the {size} (x, y, z) image "
        f"(first: point #{first}, 0-based index {np.round(index[first], 2).tolist()}; {convention})"
    )


def read_dirlab_landmarks(path: str | Path, grid: Grid, one_based: bool = True) -> np.ndarray:
    """DIR-LAB ``Case{i}_300_T00_xyz.txt``: **1-based** voxel ``x y z`` per line -> world mm
    on ``grid`` (``index_0 = index_1 - 1``). Points outside the image raise ValueError.

    A 0 coordinate cannot occur in a 1-based file: when one is present a warning says the file
    was probably written 0-based (every point would shift by one voxel); read such a file with
    ``one_based=False``."""
    path = Path(path)
    rows = _load_numeric_rows(path)
    if one_based and np.any(rows == 0):
        n = int(np.any(rows == 0, axis=1).sum())
        warnings.warn(
            f"{path}: {n} points have a 0 coordinate, impossible in a 1-based DIR-LAB file: if it was written "
            f"0-based, read it with one_based=False (otherwise every point is one voxel off)", stacklevel=2)
    index = rows - (1.0 if one_based else 0.0)
    basis = "1-based" if one_based else "0-based (one_based=False)"
    _check_index_inside(path, index, grid, f"DIR-LAB files hold {basis} x y z voxel indices")
    return grid.index_to_world(index)


def _fraction_in_mask(index_xyz: np.ndarray, mask: Volume) -> float:
    """Fraction of 0-based (x, y, z) indices whose nearest voxel is inside ``mask`` (outside the grid: no)."""
    idx = np.round(index_xyz).astype(int)
    size = mask.grid.size_xyz.astype(int)
    ok = np.all((idx >= 0) & (idx < size), axis=1)
    hits = np.zeros(len(idx), bool)
    hits[ok] = mask.array[idx[ok, 2], idx[ok, 1], idx[ok, 0]] > 0
    return float(hits.mean())


def read_learn2reg_keypoints(path: str | Path, grid: Grid, mask: Volume | None = None) -> np.ndarray:
    """Learn2Reg keypoint csv (NLST, lung CBCT): no header, **0-based** voxel indices -> world mm.

    Column order is the NIfTI's array order ``(i, j, k)``, which is ITK's index order
    ``(x, y, z)`` — the REVERSE of SimpleITK's ``(z, y, x)`` numpy array. Evidence: the challenge
    evaluates with nibabel arrays ``disp[i, j, k]`` sampled at these columns, and the ThoraxCBCT
    keypoints (images 390 x 280 x 300 voxels) reach ~378 in the FIRST column, which only the
    390-voxel axis i allows. Points outside the image raise ValueError (with a hint when the
    reversed order would fit, the classic 10 mm mistake). With the image's lung ``mask`` (same
    grid) the order is also checked where the extent cannot tell (NLST's 224 x 192 x 224 voxels
    fit both orders): a ValueError when the keypoints lie in the lungs only in (z, y, x) order.
    """
    path = Path(path)
    index = _load_numeric_rows(path)
    convention = "Learn2Reg columns are 0-based (i, j, k) = (x, y, z) voxel indices"
    upper = grid.size_xyz - 1 + _LANDMARK_MARGIN_VOXELS
    reversed_fits = np.all((index[:, ::-1] >= -_LANDMARK_MARGIN_VOXELS) & (index[:, ::-1] <= upper))
    if reversed_fits:
        convention += "; they would fit in (z, y, x) order: was the file written from a SimpleITK array?"
    _check_index_inside(path, index, grid, convention)
    if mask is not None and reversed_fits and mask.grid.shape == grid.shape:
        as_given, swapped = _fraction_in_mask(index, mask), _fraction_in_mask(index[:, ::-1], mask)
        if swapped >= 0.9 and as_given < 0.5:
            raise ValueError(
                f"{path}: only {100 * as_given:.0f} % of the keypoints lie in the lung mask {mask.name or ''} in the "
                f"Learn2Reg (i, j, k) = (x, y, z) column order, but {100 * swapped:.0f} % in (z, y, x) order: the "
                f"file was written in SimpleITK array order; reverse its columns")
    return grid.index_to_world(index)


def _plausibility_warning(path: Path, pts: np.ndarray, grid: Grid) -> None:
    """Warn when points given as mm look like voxel indices on ``grid``."""
    index_fits = bool(np.all((pts >= -0.5) & (pts <= grid.size_xyz - 0.5)))
    if not index_fits or np.allclose(grid.index_to_world(pts), pts, atol=1e-6):
        return  # not indices, or the two readings agree (unit spacing, zero origin)
    mm_fits = bool(np.all(grid.contains(pts, margin_voxels=1.0)))
    integral = bool(np.all(pts == np.round(pts)))
    if not mm_fits:
        warnings.warn(f"{path}: read with units='mm', the points lie outside the image, but they fit inside it "
                      f"as voxel indices: is this a voxel file? pass units='voxel'", stacklevel=3)
    elif integral and len(pts) >= 3:
        warnings.warn(f"{path}: read with units='mm', every coordinate is a whole number and they all fit inside "
                      f"the image as voxel indices: is this a voxel file? pass units='voxel'", stacklevel=3)


def read_points(path: str | Path, units: str, grid: Grid | None = None, one_based: bool = False) -> np.ndarray:
    """Generic point file -> (N, 3) world mm. One point per line, ``x y z`` (comma/semicolon/space
    separated, decimal commas understood; one header line allowed, columns named x, y, z picked by
    name; extra columns ignored).

    ``units`` must be stated: ``"mm"`` (world mm, returned as is) or ``"voxel"`` (continuous
    index (x, y, z) on ``grid``, 0-based unless ``one_based``). With ``units="mm"`` and a ``grid``,
    a warning says when the points look like voxel indices. Elastix point-set files
    (``point``/``index`` on the first line) are read by :func:`read_elastix_points`; their header
    must agree with ``units`` (``point`` = mm, ``index`` = voxel).
    """
    path = Path(path)
    if units not in ("mm", "voxel"):
        raise ValueError(f"{path}: units must be 'mm' or 'voxel', got {units!r}")
    text = _read_text(path, "a point file")
    first = text.strip().splitlines()[0].strip().lower() if text.strip() else ""
    if first in ("point", "index"):
        stated = "mm" if first == "point" else "voxel"
        if stated != units:
            raise ValueError(
                f"{path}: elastix '{first}' file holds {stated} coordinates, but units={units!r} was given"
            )
        return read_elastix_points(path, grid)
    pts, header = _read_point_table(path)
    said = header.lower() if header else ""
    if units == "voxel" and "mm" in said:
        warnings.warn(f"{path}: the header {header!r} says mm but units='voxel' was given", stacklevel=2)
    if units == "mm" and re.search(r"vox|index|idx", said):
        warnings.warn(f"{path}: the header {header!r} says voxel indices but units='mm' was given", stacklevel=2)
    if units == "mm":
        if grid is not None:
            _plausibility_warning(path, pts, grid)
        return pts
    if grid is None:
        raise ValueError(f"{path}: voxel units need the image grid")
    return grid.index_to_world(pts - (1.0 if one_based else 0.0))


def write_points_csv(points: np.ndarray, path: str | Path) -> Path:
    """Write (N, 3) world-mm points as csv with the header ``x_mm,y_mm,z_mm``, atomically
    (read back with ``read_points(path, units="mm")``)."""
    path = Path(path)
    pts = as_points(points, f"{path}: points")
    with atomic_path(path) as tmp:
        np.savetxt(tmp, pts, delimiter=",", header="x_mm,y_mm,z_mm", comments="", fmt="%.6f")
    return path


def read_elastix_points(path: str | Path, grid: Grid | None = None) -> np.ndarray:
    """Elastix/transformix point-set file -> (N, 3) world mm. Line 1: ``point`` (world mm) or
    ``index`` (0-based voxel, needs ``grid``); line 2: the number of points; then ``x y z``."""
    path = Path(path)
    lines = [ln.strip() for ln in _read_text(path, "an elastix point-set file").splitlines() if ln.strip()]
    if len(lines) < 2 or lines[0].lower() not in ("point", "index"):
        raise ValueError(f"{path}: not an elastix point-set file (first line must be 'point' or 'index')")
    try:
        count = int(lines[1])
    except ValueError:
        raise ValueError(f"{path}: second line must be the number of points, got {lines[1]!r}") from None
    try:
        rows = [[float(v) for v in ln.split()] for ln in lines[2:]]
    except ValueError:
        raise ValueError(f"{path}: coordinates are not numeric") from None
    if any(len(r) != 3 for r in rows):
        raise ValueError(f"{path}: every point line must hold 3 coordinates")
    pts = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    if len(pts) != count:
        raise ValueError(f"{path}: header says {count} points, found {len(pts)} lines of coordinates")
    if lines[0].lower() == "index":
        if grid is None:
            raise ValueError(f"{path}: 'index' point sets need the image grid")
        return grid.index_to_world(pts)
    return pts


def write_elastix_points(points: np.ndarray, path: str | Path) -> Path:
    """Write world-mm points as an elastix ``point`` file, atomically."""
    path = Path(path)
    pts = as_points(points, f"{path}: points")
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(f"point\n{len(pts)}\n")
            for p in pts:
                fh.write(f"{p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n")
    return path


# ---------------------------------------------------------------------------- saved pairs
# MetaImage keeps spacing/origin/direction in double precision (NIfTI stores float32).
_PAIR_VOLUMES = ("fixed", "moving", "fixed_mask", "moving_mask", "ground_truth")
_PAIR_LANDMARKS = {"fixed_landmarks": "fixed_landmarks.csv", "moving_landmarks": "moving_landmarks.csv"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


PAIR_FORMAT = "reindir_nb pair folder 1"  # pair.json["format"]: marks a folder the kit wrote
_JOURNAL = ".reindir-save-pairs.json"  # save_pairs' commit record, present only while it commits
# the kit's temporary names next to a pair folder: staging (new) and moved-aside (old) copies
_LEFTOVER = re.compile(r"^\.reindir-(?P<kind>new|old)\.(?P<target>.+)\.(?P<token>[0-9a-f]{8})$")
# atomic_path's temporary names of the manifest and the journal
_ROOT_TEMP = re.compile(r"^\.(manifest\.csv|\.reindir-save-pairs\.json)\.[a-z0-9_]+\.tmp\.(csv|json)$")


def _pair_info(folder: Path) -> dict | None:
    """The parsed ``pair.json`` of a folder the kit wrote, else None."""
    path = folder / "pair.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("files"), dict) or "name" not in info:
        return None
    return info


def is_pair_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds a ``pair.json`` written by :func:`save_pair` (the kit's marker)."""
    return _pair_info(Path(folder)) is not None


def _check_replaceable(folder: Path) -> None:
    """Raise FileExistsError naming ``folder`` unless the kit may replace it: absent, empty, or a
    pair folder the kit wrote that holds nothing else."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder; the kit will not replace it with a pair")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return
    info = _pair_info(folder)
    if info is None:
        raise FileExistsError(
            f"{folder}: not empty and not a pair folder written by reindir_nb (no valid pair.json); the kit "
            f"never deletes files it did not write: choose a new or empty folder "
            f"(it holds {', '.join(entries[:5])}{' ...' if len(entries) > 5 else ''})"
        )
    own = {"pair.json", *map(str, info["files"].values())}
    foreign = [e for e in entries if e not in own]
    if foreign:
        raise FileExistsError(
            f"{folder}: a saved pair folder that also holds files the kit did not write "
            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); move them out first, the kit "
            f"never deletes them"
        )


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".reindir-{kind}.{target.name}.{os.urandom(4).hex()}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _write_pair_files(pair: Pair, folder: Path) -> None:
    """All files of a saved pair into the existing ``folder``; ``pair.json`` last."""
    if not isinstance(pair, Pair):
        raise TypeError(f"{folder}: save_pair needs a Pair, got {type(pair).__name__}")
    files: dict[str, str] = {}
    for attr in _PAIR_VOLUMES:
        vol = getattr(pair, attr)
        if vol is not None:
            files[attr] = f"{attr}.mha"
            write_image(vol, folder / files[attr])
    if pair.has_landmarks:
        for attr, fname in _PAIR_LANDMARKS.items():
            write_points_csv(getattr(pair, attr), folder / fname)
            files[attr] = fname
    info = {"format": PAIR_FORMAT, "name": pair.name, "dataset": pair.dataset, "meta": _jsonable(pair.meta),
            "files": files}
    with atomic_path(folder / "pair.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")


def clean_leftovers(parent: str | Path, only: str | None = None) -> list[str]:
    """Tidy what a killed :func:`save_pair` left in ``parent``: the kit's staging copies
    (``.reindir-new.<name>.<hex>``) are removed; a moved-aside old copy (``.reindir-old.<name>.<hex>``)
    is put back when ``<name>`` is missing (the kill came between the two renames), else removed.
    ``only`` limits this to one pair folder name. Nothing else is touched. Returns what was done."""
    parent = Path(parent)
    done: list[str] = []
    if not parent.is_dir():
        return done
    for entry in sorted(parent.iterdir()):
        m = _LEFTOVER.match(entry.name)
        if not m or (only is not None and m["target"] != only):
            continue
        target = parent / m["target"]
        if m["kind"] == "old" and not target.exists() and is_pair_folder(entry):
            os.replace(entry, target)
            done.append(f"restored {target}")
        else:
            _remove(entry)
            done.append(f"removed {entry}")
    return done


def save_pair(pair: Pair, folder: str | Path) -> Path:
    """Write a pair into ``folder`` (created), atomically: ``fixed.mha``, ``moving.mha``, masks and
    ground truth (if any) as MetaImage in their own dtype, landmarks as ``fixed_landmarks.csv`` /
    ``moving_landmarks.csv`` (world mm) and ``pair.json`` (format marker, name, dataset, meta, file
    list).

    The files are written into a temporary sibling that is then renamed onto ``folder``, so the
    folder holds either the old pair or the new one. An older pair folder the kit wrote is
    replaced (no stale file remains); a non-empty folder the kit did not write, or a pair folder
    holding other files too, raises FileExistsError naming it: the kit never deletes what it did
    not write. Leftovers of an earlier killed save of the same folder are tidied first
    (:func:`clean_leftovers`)."""
    folder = Path(folder)
    if folder.name in ("", ".", ".."):
        raise ValueError(f"{folder}: give a folder name for the pair")
    if pair.coarse is not None:  # saved without it, it would come back in another INR frame
        raise ValueError(f"{pair.name}: a fine view (prepare_fine) is not saved; save the raw pair "
                         f"or its coarse view (pair.coarse) and call prepare_fine again")
    clean_leftovers(folder.parent, only=folder.name)
    _check_replaceable(folder)
    ensure_writable(folder.parent, f"the pair folder {folder.name}")
    stage = _sibling(folder, "new")
    stage.mkdir()
    try:
        _write_pair_files(pair, stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    trash = _sibling(folder, "old")
    if folder.exists():
        os.replace(folder, trash)
    os.replace(stage, folder)
    if trash.exists():
        shutil.rmtree(trash)
    return folder


def load_saved_pair(folder: str | Path) -> Pair:
    """Read a pair written by :func:`save_pair` (masks come back as bool arrays)."""
    folder = Path(folder)
    info_path = folder / "pair.json"
    _require_file(info_path)
    try:
        info = json.loads(_read_text(info_path, "a saved-pair description (json)"))
        files: dict[str, str] = info["files"]
        name = info["name"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{info_path}: not a saved-pair description ({err})") from None
    vols: dict[str, Volume] = {}
    for attr in _PAIR_VOLUMES:
        if attr in files:
            vol = read_image(folder / files[attr])
            vols[attr] = vol.with_array(vol.array > 0) if attr.endswith("mask") else vol
    if "fixed" not in vols or "moving" not in vols:
        raise ValueError(f"{info_path}: lists no fixed/moving image")
    points = {attr: read_points(folder / files[attr], units="mm") for attr in _PAIR_LANDMARKS if attr in files}
    return Pair(**vols, **points, name=name, dataset=info.get("dataset", ""), meta=info.get("meta", {}))


def _safe_part(text: str, what: str) -> str:
    if not text or text in (".", "..") or any(c in text for c in "/\\"):
        raise ValueError(f"{what} {text!r} cannot be used as a folder name")
    return text


_MANIFEST_COLUMNS = ["name", "dataset", "label", "path", "fixed_shape", "moving_shape", "spacing_mm",
                     "landmarks", "initial_mean_mm", "initial_max_mm"]


def _manifest_row(pair: Pair, rel: Path) -> dict[str, Any]:
    row = pair.summary()
    row["label"] = pair.meta.get("label", "")
    row["path"] = rel.as_posix()
    row["fixed_shape"] = "x".join(map(str, row["fixed_shape"]))
    row["moving_shape"] = "x".join(map(str, row["moving_shape"]))
    row["spacing_mm"] = "x".join(f"{s:g}" for s in row["spacing_mm"])
    return row


def _read_manifest_table(manifest: Path):
    """The manifest as a DataFrame; ValueError naming the file when it is not a readable pair manifest."""
    import pandas as pd
    from io import StringIO

    text = _read_text(manifest, "a pair manifest (csv)")
    try:
        table = pd.read_csv(StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{manifest}: not a pair manifest ({str(err).strip().splitlines()[0]})") from None
    if "path" not in table.columns or "dataset" not in table.columns:
        raise ValueError(f"{manifest}: not a pair manifest (needs 'path' and 'dataset' columns)")
    return table


def _commit(root: Path, journal: dict) -> None:
    """Finish a save_pairs commit from its journal (idempotent: safe to repeat after a kill): swap
    every staged pair folder in, write the manifest, delete the old copies, then the journal."""
    for entry in journal["entries"]:
        stage, target, trash = (root / entry[k] for k in ("stage", "target", "trash"))
        if stage.exists():
            if target.exists():
                os.replace(target, trash)
            os.replace(stage, target)
    with atomic_path(root / "manifest.csv") as tmp:
        tmp.write_text(journal["manifest"], encoding="utf-8")
    for entry in journal["entries"]:
        if (root / entry["trash"]).exists():
            shutil.rmtree(root / entry["trash"])
    (root / _JOURNAL).unlink()


def _recover(root: Path) -> list[str]:
    """Bring ``root`` back to a consistent state after a killed save_pairs: a journal present means
    every new pair was staged, so the commit is finished (the new state); otherwise the kit's
    staging copies and temporary files are removed (the old state). Only the kit's own
    temporary names are touched. Returns what was done."""
    done: list[str] = []
    if not root.is_dir():
        return done
    journal_path = root / _JOURNAL
    if journal_path.is_file():
        try:
            journal = json.loads(journal_path.read_text(encoding="utf-8"))
            entries = journal["entries"]
            if not isinstance(journal["manifest"], str) or not all(
                    {"stage", "target", "trash"} <= set(e) for e in entries):
                raise KeyError("entries")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{journal_path}: unreadable save_pairs journal ({err}); it was written by an "
                             f"interrupted save_pairs: save the pairs again after removing it") from None
        _commit(root, journal)
        done.append(f"finished the interrupted save_pairs of {len(entries)} pairs")
    for entry in sorted(root.iterdir()):
        if _ROOT_TEMP.match(entry.name):
            entry.unlink()
            done.append(f"removed {entry}")
        elif entry.is_dir() and not entry.name.startswith("."):
            done += clean_leftovers(entry)
    return done


def save_pairs(pairs: Sequence[Pair], root: str | Path, progress: bool = False):
    """Save pairs under ``root/<dataset>/<name>/`` (as :func:`save_pair`) and write
    ``root/manifest.csv``; returns the manifest as a pandas DataFrame.

    Columns: ``name, dataset, label, path`` (relative to ``root``), ``fixed_shape``,
    ``moving_shape`` (``z x y x x`` voxels), ``spacing_mm`` (fixed, ``x x y x z``),
    ``landmarks`` (count), ``initial_mean_mm``, ``initial_max_mm`` (landmark distances before
    registration; empty without landmarks).

    All or nothing, even when the process is killed: ``root`` is checked writable
    (:func:`~reindir_nb.core.files.ensure_writable`) and every target folder replaceable (see
    :func:`save_pair`) before anything is written; every pair is written to a temporary sibling of
    its folder; then a journal is written, the folders are swapped in and the manifest written
    LAST. A kill before the journal leaves the old state (the next :func:`save_pairs` or
    :func:`load_manifest` removes the temporary copies); a kill after it is completed to the new
    state by the next call. Files the kit did not write are never touched. One writer per ``root``
    at a time.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    root = Path(root)
    pairs = list(pairs)
    seen: set[tuple[str, str]] = set()
    for pair in pairs:
        if not isinstance(pair, Pair):
            raise TypeError(f"{root}: save_pairs needs Pair objects, got {type(pair).__name__}")
        key = (pair.dataset or "pairs", pair.name)
        if key in seen:
            raise ValueError(f"{root}: two pairs named {pair.name!r} in data set {key[0]!r}; names must be unique")
        seen.add(key)
    rels = [Path(_safe_part(p.dataset or "pairs", "data set name")) / _safe_part(p.name, "pair name") for p in pairs]
    ensure_writable(root, "the saved pairs and their manifest")
    _recover(root)
    manifest = root / "manifest.csv"
    if manifest.exists():
        try:
            _read_manifest_table(manifest)
        except (ValueError, IsADirectoryError) as err:
            raise FileExistsError(f"{manifest}: exists and is not a pair manifest the kit wrote, so it is not "
                                  f"overwritten ({err})") from None
    for rel in rels:
        if (root / rel.parent).exists() and not (root / rel.parent).is_dir():
            raise FileExistsError(f"{root / rel.parent}: exists and is not a folder")
        _check_replaceable(root / rel)
    entries: list[dict[str, str]] = []
    rows = []
    try:
        for pair, rel in tqdm(list(zip(pairs, rels)), desc="saving pairs", disable=not progress):
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            stage = _sibling(target, "new")
            stage.mkdir()
            entries.append({"target": rel.as_posix(), "stage": stage.relative_to(root).as_posix(),
                            "trash": _sibling(target, "old").relative_to(root).as_posix()})
            _write_pair_files(pair, stage)
            rows.append(_manifest_row(pair, rel))
        table = pd.DataFrame(rows).reindex(columns=_MANIFEST_COLUMNS)
        journal = {"format": PAIR_FORMAT, "entries": entries, "manifest": table.to_csv(index=False)}
        with atomic_path(root / _JOURNAL) as tmp:
            tmp.write_text(json.dumps(journal), encoding="utf-8")
    except BaseException:
        for entry in entries:
            shutil.rmtree(root / entry["stage"], ignore_errors=True)
        raise
    _commit(root, journal)
    return table


def load_manifest(root: str | Path, dataset: str | Sequence[str] | None = None) -> list[Pair]:
    """The pairs listed in ``root/manifest.csv``, in its order (optionally only the given data set(s)).

    An interrupted :func:`save_pairs` is first brought to its old or new state (see there). A
    manifest that is binary, not UTF-8 or not csv raises ValueError naming it."""
    root = Path(root)
    manifest = root / "manifest.csv"
    if (root / _JOURNAL).is_file() or (root.is_dir() and any(
            _ROOT_TEMP.match(p.name) or (p.is_dir() and any(_LEFTOVER.match(q.name) for q in p.iterdir()))
            for p in root.iterdir() if not p.name.startswith(".") or _ROOT_TEMP.match(p.name))):
        try:
            _recover(root)
        except PermissionError as err:
            raise PermissionError(f"{root}: an interrupted save_pairs left temporary copies here that cannot be "
                                  f"tidied ({err.strerror or err})") from None
    _require_file(manifest)
    table = _read_manifest_table(manifest)
    table["dataset"] = table["dataset"].fillna("")
    if dataset is not None:
        wanted = [dataset] if isinstance(dataset, str) else list(dataset)
        table = table[table["dataset"].isin(wanted)]
    missing = [p for p in table["path"] if not (root / p / "pair.json").is_file()]
    if missing:
        raise ValueError(
            f"{manifest}: {len(missing)} listed pair folder(s) are missing or incomplete, e.g. {root / missing[0]}"
        )
    return [load_saved_pair(root / p) for p in table["path"]]
