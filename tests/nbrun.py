"""Run a notebook from ``notebooks/`` with papermill into a workspace (used by the notebook tests)."""

from __future__ import annotations

from pathlib import Path

import nbformat

from reindir_nb.pipeline import run_notebook as _run


def run_notebook(name: str, workspace: Path, profile: str = "smoke", **parameters) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>`` with ``PROFILE``/``WORKSPACE`` set; the executed copy goes to
    ``workspace/executed/<name>``. Returns the executed notebook."""
    return nbformat.read(_run(name, workspace, profile, **parameters), as_version=4)
