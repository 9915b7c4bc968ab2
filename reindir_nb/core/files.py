"""Atomic file writes: the one home of "write to a temporary name next to the target, then
rename". Every writer of the kit (images, point files, tables, figures, checkpoints, folders)
goes through :func:`atomic_path` or :func:`atomic_folder`, so a killed process never leaves a
half-written file under the final name. :func:`ensure_writable` checks a folder BEFORE long work,
so a read-only workspace fails in a second, not after minutes of compute."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_folder", "ensure_writable"]


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


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``folder``. If the block succeeds it takes the place
    of ``folder`` (an existing folder is moved aside, then deleted); if it fails, ``folder`` is
    left as it was and the temporary folder is removed. Callers decide whether ``folder`` may be
    replaced (see :func:`reindir_nb.data.io.save_pair`)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        trash = None
        if folder.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, trash / folder.name)
        os.replace(tmp, folder)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
