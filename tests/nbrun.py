"""Run a notebook from ``notebooks/`` with papermill into a workspace (used by the notebook tests)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill as pm

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, workspace: Path, profile: str = "smoke", **parameters) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>`` (papermill, kernel python3, cwd = notebooks/) with ``PROFILE`` and
    ``WORKSPACE`` set; the executed copy is written to ``workspace/executed/<name>`` (never over the
    source). Returns the executed notebook."""
    workspace = Path(workspace)
    out_dir = workspace / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / name
    pm.execute_notebook(
        str(NOTEBOOKS / name),
        str(out),
        parameters={"PROFILE": profile, "WORKSPACE": str(workspace), **parameters},
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
    )
    return nbformat.read(out, as_version=4)
