"""The saved-pair store: one pair per folder (:func:`save_pair` / :func:`load_saved_pair`), and a
whole data set under a root with its ``manifest.csv`` (:func:`save_pairs` / :func:`load_manifest`),
written through a journal so that it is all-or-nothing even when the process is killed.

Pair folders are only ever replaced when the kit wrote them (``pair.json`` is the marker:
:func:`reindir_nb.core.files.check_replaceable`); folders are swapped in atomically
(:func:`reindir_nb.core.files.atomic_folder` / :func:`~reindir_nb.core.files.swap_folder`), and what a
killed save leaves behind is tidied by the next call (:func:`clean_leftovers`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..core.files import (
    atomic_folder,
    atomic_path,
    check_replaceable,
    ensure_writable,
    kit_temporary,
    read_marker,
    read_text,
    require_file,
    swap_folder,
    temporary_sibling,
    write_json,
)
from ..core.pair import Pair
from ..core.volume import Volume
from .images import read_image, write_image
from .points import read_points, write_points_csv

__all__ = [
    "PAIR_FORMAT",
    "save_pair",
    "load_saved_pair",
    "save_pairs",
    "load_manifest",
    "is_pair_folder",
    "clean_leftovers",
]

# MetaImage keeps spacing/origin/direction in double precision (NIfTI stores float32).
_PAIR_VOLUMES = ("fixed", "moving", "fixed_mask", "moving_mask", "ground_truth")
_PAIR_LANDMARKS = {"fixed_landmarks": "fixed_landmarks.csv", "moving_landmarks": "moving_landmarks.csv"}
PAIR_FORMAT = "reindir_nb pair folder 1"  # pair.json["format"]: marks a folder the kit wrote
_MARKER = "pair.json"
_JOURNAL = ".reindir-save-pairs.json"  # save_pairs' commit record, present only while it commits
# atomic_path's temporary names of the manifest and the journal
_ROOT_TEMP = re.compile(r"^\.(manifest\.csv|\.reindir-save-pairs\.json)\.[a-z0-9_]+\.tmp\.(csv|json)$")


def is_pair_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds a ``pair.json`` written by :func:`save_pair` (the kit's marker)."""
    info = read_marker(folder, _MARKER)
    return info is not None and "name" in info


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
    write_json(folder / _MARKER, {"format": PAIR_FORMAT, "name": pair.name, "dataset": pair.dataset,
                                  "meta": pair.meta, "files": files})


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
        temporary = kit_temporary(entry.name)
        if temporary is None or (only is not None and temporary[1] != only):
            continue
        kind, name = temporary
        target = parent / name
        if kind == "old" and not target.exists() and is_pair_folder(entry):
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
    check_replaceable(folder, _MARKER, "pair folder")
    ensure_writable(folder.parent, f"the pair folder {folder.name}")
    with atomic_folder(folder) as stage:
        _write_pair_files(pair, stage)
    return folder


def load_saved_pair(folder: str | Path) -> Pair:
    """Read a pair written by :func:`save_pair` (masks come back as bool arrays)."""
    folder = Path(folder)
    info_path = folder / _MARKER
    require_file(info_path)
    try:
        info = json.loads(read_text(info_path, "a saved-pair description (json)"))
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

    text = read_text(manifest, "a pair manifest (csv)")
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
        swap_folder(*(root / entry[k] for k in ("stage", "target", "trash")))
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
        check_replaceable(root / rel, _MARKER, "pair folder")
    entries: list[dict[str, str]] = []
    rows = []
    try:
        for pair, rel in tqdm(list(zip(pairs, rels)), desc="saving pairs", disable=not progress):
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            stage = temporary_sibling(target, "new")
            stage.mkdir()
            entries.append({"target": rel.as_posix(), "stage": stage.relative_to(root).as_posix(),
                            "trash": temporary_sibling(target, "old").relative_to(root).as_posix()})
            _write_pair_files(pair, stage)
            rows.append(_manifest_row(pair, rel))
        table = pd.DataFrame(rows).reindex(columns=_MANIFEST_COLUMNS)
        journal = {"format": PAIR_FORMAT, "entries": entries, "manifest": table.to_csv(index=False)}
        write_json(root / _JOURNAL, journal, indent=None)
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
            _ROOT_TEMP.match(p.name) or (p.is_dir() and any(kit_temporary(q.name) for q in p.iterdir()))
            for p in root.iterdir() if not p.name.startswith(".") or _ROOT_TEMP.match(p.name))):
        try:
            _recover(root)
        except PermissionError as err:
            raise PermissionError(f"{root}: an interrupted save_pairs left temporary copies here that cannot be "
                                  f"tidied ({err.strerror or err})") from None
    require_file(manifest)
    table = _read_manifest_table(manifest)
    table["dataset"] = table["dataset"].fillna("")
    if dataset is not None:
        wanted = [dataset] if isinstance(dataset, str) else list(dataset)
        table = table[table["dataset"].isin(wanted)]
    missing = [p for p in table["path"] if not (root / p / _MARKER).is_file()]
    if missing:
        raise ValueError(
            f"{manifest}: {len(missing)} listed pair folder(s) are missing or incomplete, e.g. {root / missing[0]}"
        )
    return [load_saved_pair(root / p) for p in table["path"]]
