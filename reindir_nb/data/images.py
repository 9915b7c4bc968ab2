"""Reading and writing images: any SimpleITK 3D image as a :class:`~reindir_nb.core.volume.Volume`
(header checks before the voxels are read, NIfTI / MetaImage truncation and NaN checks that ITK
skips), atomic single-file writing, the CT-in-HU sanity check and the DIR-LAB raw image reader.

Every reader returns world-mm geometry (see :mod:`reindir_nb.core.geometry`); every writer is
atomic (:func:`reindir_nb.core.files.atomic_path`), and every error names the file and the problem.
Hostile input (truncated files, wrong byte order or HU offset, folders passed as files, unknown
export suffixes) is listed in docs/reliability.md with its test.
"""

from __future__ import annotations

import gzip
import locale
import os
import struct
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..core.files import atomic_path, require_file
from ..core.geometry import Grid
from ..core.volume import Volume

__all__ = [
    "DIRLAB_CASES",
    "DIRLAB_SLICE_MM",
    "DIRLAB_HU_OFFSET",
    "CT_HU_RANGE",
    "IMAGE_WRITE_SUFFIXES",
    "ImageFormatError",
    "read_image",
    "write_image",
    "ct_value_problem",
    "dirlab_grid",
    "read_dirlab_img",
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
    require_file(path, "an image file")
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
    require_file(path)
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
