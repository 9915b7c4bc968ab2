"""Run the notebooks in order with papermill (the README's main job): ``python -m reindir_nb.pipeline``.

Notebooks hand results to each other through files in ``WORKSPACE``; executed copies go to
``WORKSPACE/executed/`` (never over the sources).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

__all__ = ["NOTEBOOKS", "notebook_paths", "run_notebook", "run_all", "describe_workspace", "format_timings",
           "TIMINGS_FILE"]

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TIMINGS_FILE = "timings.csv"  # WORKSPACE/executed/timings.csv: one row per notebook of the last main job


def notebook_paths(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks ``0*.ipynb`` in order."""
    return sorted(folder.glob("0*.ipynb"))


def run_notebook(notebook: str | Path, workspace: str | Path, profile: str = "demo", **parameters) -> Path:
    """Execute one notebook (papermill, kernel ``python3``, cwd = the notebook's folder) with
    ``PROFILE``/``WORKSPACE`` (+ ``parameters``); returns the executed copy's path."""
    import papermill as pm

    notebook = Path(notebook)
    if not notebook.is_absolute() and not notebook.exists():
        notebook = NOTEBOOKS / notebook
    workspace = Path(workspace).resolve()
    out = workspace / "executed" / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(notebook), str(out),
        parameters={"PROFILE": profile, "WORKSPACE": str(workspace), **parameters},
        kernel_name="python3", cwd=str(notebook.parent), progress_bar=False,
    )
    return out


def run_all(workspace: str | Path, profile: str = "demo", only: Sequence[str] = ()) -> dict[str, float]:
    """Run every numbered notebook (or those whose names start with one of ``only``) in order;
    returns ``{notebook name: wall seconds}``, also written to ``WORKSPACE/executed/timings.csv``
    (a failed notebook is recorded with its seconds up to the failure, marked ``FAILED``).

    A failing notebook stops the run; its executed copy (with the traceback) is in
    ``WORKSPACE/executed/``."""
    from tqdm.auto import tqdm

    from .core.files import atomic_path

    paths = [p for p in notebook_paths() if not only or any(p.name.startswith(o) for o in only)]
    if not paths:
        raise ValueError(f"no notebook in {NOTEBOOKS} matches {list(only)}")
    workspace = Path(workspace).resolve()
    seconds: dict[str, float] = {}
    status: dict[str, str] = {}

    def save() -> None:
        (workspace / "executed").mkdir(parents=True, exist_ok=True)
        lines = ["notebook,seconds,status,profile"] + [f"{k},{v:.1f},{status[k]},{profile}" for k, v in seconds.items()]
        with atomic_path(workspace / "executed" / TIMINGS_FILE) as tmp:
            Path(tmp).write_text("\n".join(lines) + "\n")

    bar = tqdm(paths, desc=f"notebooks ({profile})", unit="nb")
    for nb in bar:
        bar.set_postfix_str(nb.name)
        t0 = time.perf_counter()
        try:
            run_notebook(nb, workspace, profile)
        except Exception:
            seconds[nb.name], status[nb.name] = time.perf_counter() - t0, "FAILED"
            save()
            tqdm.write(f"  {nb.name} FAILED after {seconds[nb.name]:.0f} s; see {workspace / 'executed' / nb.name}")
            raise
        seconds[nb.name], status[nb.name] = time.perf_counter() - t0, "ok"
        save()
        tqdm.write(f"  {nb.name}: {seconds[nb.name]:.0f} s")
    return seconds


def format_timings(seconds: dict[str, float]) -> str:
    """The per-notebook wall times of a main job as a small table (s and min), with the total."""
    width = max([len(k) for k in seconds] + [5])
    lines = [f"  {name:{width}s} {s:7.0f} s {s / 60:6.1f} min" for name, s in seconds.items()]
    total = sum(seconds.values())
    return "\n".join(["Time per notebook:", *lines, f"  {'total':{width}s} {total:7.0f} s {total / 60:6.1f} min"])


_KINDS = {"figures": (".png", ".pdf", ".html"), "tables": (".csv", ".json")}


def describe_workspace(workspace: str | Path) -> str:
    """One line per folder of the workspace: number of files, of figures and of tables, path."""
    workspace = Path(workspace).resolve()
    lines = [f"Workspace: {workspace}"]
    for sub in sorted(p for p in workspace.iterdir() if p.is_dir()):
        files = [f for f in sub.rglob("*") if f.is_file()]
        counts = {kind: sum(f.suffix in ext for f in files) for kind, ext in _KINDS.items()}
        extra = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        lines.append(f"  {sub.name + '/':18s} {len(files):4d} files{f' ({extra})' if extra else ''}  {sub}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="demo", choices=["smoke", "demo", "paper"])
    parser.add_argument("--workspace", default="workspace")
    parser.add_argument("--only", nargs="*", default=(), help="notebook name prefixes, e.g. 01 02")
    args = parser.parse_args(argv)
    workspace = Path(args.workspace).resolve()
    seconds = run_all(workspace, args.profile, args.only)
    print("\n" + format_timings(seconds) + f"\n(also in {workspace / 'executed' / TIMINGS_FILE})")
    print("\nDone. " + describe_workspace(workspace))


if __name__ == "__main__":
    main()
