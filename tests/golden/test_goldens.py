"""Output regression: re-execute the papermill-made goldens in this folder with nbval and compare
their outputs (widget, plotly and timing cells are tagged ``nbval-ignore-output``; paths, progress
bars and addresses are sanitised by ``tests/nbval_sanitize.cfg``). Regenerate them with
``bash scripts/regenerate_goldens.sh`` after a deliberate change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]
SANITIZE = HERE.parent / "nbval_sanitize.cfg"


def test_golden_notebooks_reproduce_their_outputs(request):
    if request.config.getoption("nbval", default=False) or request.config.getoption("nbval_lax", default=False):
        pytest.skip("this pytest run collects the golden notebooks itself (--nbval)")
    goldens = sorted(HERE.glob("*.ipynb"))
    assert goldens, f"no golden notebooks in {HERE} (bash scripts/regenerate_goldens.sh)"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
           f"--nbval-sanitize-with={SANITIZE}", "--nbval-cell-timeout=900", *map(str, goldens)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert result.returncode == 0, (
        "golden notebook outputs changed (if intended: bash scripts/regenerate_goldens.sh and review git diff "
        f"tests/golden):\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}")
