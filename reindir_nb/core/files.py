"""Files: the one home of "write to a temporary name next to the target, then rename", of "only
replace what the kit wrote" and of the kit's JSON.

Every writer of the kit (images, point files, tables, figures, checkpoints, folders) goes through
:func:`atomic_path` or :func:`atomic_folder`, so a killed process never leaves a half-written file
under the final name. A folder is replaced only when the kit wrote it (:func:`check_replaceable`:
a marker file such as ``pair.json`` or ``report.json`` lists its files). :func:`ensure_writable`
checks a folder BEFORE long work, so a read-only workspace fails in a second, not after minutes of
compute. :func:`require_file` / :func:`read_text` are the readers' checks that a path is a (text)
file; :func:`jsonable` / :func:`write_json` write the kit's JSON (NaN -> null)."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["atomic_path", "atomic_folder", "swap_folder", "temporary_sibling", "kit_temporary",
           "read_marker", "check_replaceable", "ensure_writable", "require_file", "read_text",
           "jsonable", "write_json"]

# the kit's temporary names next to a folder it replaces: the staged new copy and the old copy
# moved aside (``.reindir-new.<name>.<hex>`` / ``.reindir-old.<name>.<hex>``)
_KIT_TEMPORARY = re.compile(r"^\.reindir-(?P<kind>new|old)\.(?P<target>.+)\.(?P<token>[0-9a-f]{8})$")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffixes, so format detection by extension
    works); rename it onto ``path`` only if the block succeeds, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # what open(path, 'w') gives; mkstemp makes 0600
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# ------------------------------------------------------------------------------ folders
def temporary_sibling(folder: Path, kind: str) -> Path:
    """A fresh kit temporary name next to ``folder``: ``kind`` "new" (a staged copy) or "old" (the
    replaced copy moved aside). :func:`kit_temporary` recognises these names."""
    return folder.parent / f".reindir-{kind}.{folder.name}.{os.urandom(4).hex()}"


def kit_temporary(name: str) -> tuple[str, str] | None:
    """``(kind, folder name)`` when ``name`` is one of :func:`temporary_sibling`'s names, else None."""
    m = _KIT_TEMPORARY.match(name)
    return (m["kind"], m["target"]) if m else None


def swap_folder(stage: Path, folder: Path, trash: Path) -> None:
    """Put the finished folder ``stage`` in the place of ``folder``; an existing ``folder`` is first
    renamed to ``trash`` (the caller deletes it). Safe to repeat after a kill: once ``stage`` has
    been renamed, nothing is done."""
    if stage.exists():
        if folder.exists():
            os.replace(folder, trash)
        os.replace(stage, folder)


@contextmanager
def atomic_folder(folder: str | Path, marker: str | None = None, what: str = "folder",
                  format: str | None = None, shown: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``folder`` (:func:`temporary_sibling`). If the block
    succeeds it takes the place of ``folder`` (an existing folder is moved aside, then deleted:
    :func:`swap_folder`); if it fails, ``folder`` is left as it was and the temporary folder is
    removed.

    With a ``marker`` (the file that marks a folder the kit wrote, e.g. ``"report.json"``) an
    existing ``folder`` is first checked with :func:`check_replaceable` (``what``, ``format`` and
    ``shown`` are passed on); without one, callers decide whether ``folder`` may be replaced."""
    folder = Path(folder)
    if marker is not None:
        check_replaceable(folder, marker, what, format=format, shown=shown)
    elif folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = temporary_sibling(folder, "new")
    stage.mkdir()
    try:
        yield stage
        trash = temporary_sibling(folder, "old")
        swap_folder(stage, folder, trash)
        if trash.exists():
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def read_marker(folder: str | Path, marker: str, format: str | None = None) -> dict | None:
    """The parsed marker file ``folder/marker`` of a folder the kit wrote: a JSON object listing the
    folder's files under ``"files"`` (and with ``"format" == format`` when ``format`` is given); None
    when there is no such file or it is not such an object."""
    try:
        info = json.loads((Path(folder) / marker).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("files"), dict):
        return None
    if format is not None and info.get("format") != format:
        return None
    return info


def _listing(names: list[str]) -> str:
    return f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"


def check_replaceable(folder: str | Path, marker: str, what: str, *, format: str | None = None,
                      shown: str | None = None) -> None:
    """Raise FileExistsError unless the kit may replace ``folder``: absent, empty, or a folder the kit
    wrote (its ``marker`` file, see :func:`read_marker`) that holds nothing but the files the marker
    lists. ``what`` names such a folder in the errors (``"pair folder"``), ``shown`` how the folder
    is named there (default: its path). The kit never deletes files it did not write."""
    folder = Path(folder)
    name = str(folder) if shown is None else shown
    a_what = f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FileExistsError(f"{name}: exists and is not a folder; the kit will not replace it with {a_what}")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return
    info = read_marker(folder, marker, format)
    if info is None:
        raise FileExistsError(
            f"{name}: not empty and not {a_what} written by reindir_nb (no valid {marker}); the kit never "
            f"deletes files it did not write: choose a new or empty folder (it holds {_listing(entries)})"
        )
    own = {marker, *map(str, info["files"].values())}
    foreign = [e for e in entries if e not in own]
    if foreign:
        raise FileExistsError(
            f"{name}: a saved {what} that also holds files the kit did not write ({_listing(foreign)}); "
            f"move them out first, the kit never deletes them"
        )


def ensure_writable(folder: str | Path, what: str) -> Path:
    """Create ``folder`` (and its parents) if needed and probe that a file can be written in it.

    ``what`` says what will be written there (e.g. ``"the prepared pairs"``) and appears in the
    error. Raises PermissionError naming the folder and ``what`` when the folder (or a parent)
    cannot be created or written (no permission, read-only file system), NotADirectoryError when
    ``folder`` or a parent is a file. Returns ``folder`` as a Path. Probing leaves nothing behind.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"{folder}: exists and is not a folder; cannot write {what} there") from None
    except NotADirectoryError:
        raise NotADirectoryError(f"{folder}: a parent of this path is a file; cannot write {what} there") from None
    except PermissionError as err:
        raise PermissionError(f"{folder}: cannot create the folder for {what} ({err.strerror})") from None
    except OSError as err:
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise PermissionError(f"{folder}: cannot create the folder for {what} ({err.strerror})") from None
        raise
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=folder)
    except OSError as err:
        if isinstance(err, PermissionError) or err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise PermissionError(
                f"{folder}: not writable, cannot write {what} there ({err.strerror}); choose another folder "
                f"or fix its permissions"
            ) from None
        raise
    os.close(fd)
    os.unlink(probe)
    return folder


# ------------------------------------------------------------------------------ reading
def require_file(path: Path, what: str = "a file") -> None:
    """FileNotFoundError / IsADirectoryError naming ``path`` unless it is a file."""
    if path.is_dir():
        raise IsADirectoryError(
            f"{path}: is a folder, not {what} (give the file itself; a DICOM series folder must be "
            f"converted to .nii.gz or .mha first)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")


def read_text(path: Path, what: str) -> str:
    """The text of ``path``; a binary or non-UTF-8 file raises ValueError naming it (not UnicodeDecodeError)."""
    require_file(path)
    data = path.read_bytes()
    if b"\0" in data[:4096]:
        raise ValueError(f"{path}: is a binary file, not {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: is not a UTF-8 text file ({what} expected; byte {err.start} cannot be decoded)"
        ) from None


# --------------------------------------------------------------------------------- JSON
def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dataclasses as dicts, numpy arrays as lists, numpy scalars as
    numbers, NaN and +-inf as None (``null``: strict JSON has no NaN, and JSON readers other than
    Python's refuse it), anything else (paths, devices ...) as its ``str``."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def write_json(path: str | Path, value: Any, indent: int | None = 1) -> Path:
    """Write :func:`jsonable` ``value`` to ``path`` as strict JSON (UTF-8), atomically."""
    path = Path(path)
    text = json.dumps(jsonable(value), indent=indent, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
