#!/usr/bin/env bash
# Regenerate the nbval goldens in tests/golden/: each notebook listed below is executed by papermill
# in the smoke profile into a fresh temporary workspace, and its parameters cell is rewritten so that
# a re-execution (pytest --nbval) also gets a fresh workspace. Run after a deliberate change of a
# golden notebook's output; review the diff (git diff tests/golden) before committing.
#   bash scripts/regenerate_goldens.sh            # all goldens
#   bash scripts/regenerate_goldens.sh 06         # only those whose names start with 06
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - "$@" <<'PY'
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill as pm

GOLDENS = ["01_data_preparation.ipynb", "06_failure_explorer.ipynb"]
SOURCE, TARGET = Path("notebooks").resolve(), Path("tests/golden").resolve()
PARAMETERS = 'PROFILE = "smoke"\nimport tempfile\nWORKSPACE = tempfile.mkdtemp(prefix="rn_golden_")'
CLEANUP = "import shutil\nshutil.rmtree(WORKSPACE, ignore_errors=True)  # golden only: remove the temporary workspace"

only = sys.argv[1:]
TARGET.mkdir(parents=True, exist_ok=True)
for name in GOLDENS:
    if only and not any(name.startswith(o) for o in only):
        continue
    workspace = tempfile.mkdtemp(prefix="rn_golden_")
    executed = Path(workspace) / name
    print(f"[goldens] {name} (smoke, workspace {workspace})", flush=True)
    pm.execute_notebook(str(SOURCE / name), str(executed), parameters={"PROFILE": "smoke", "WORKSPACE": workspace},
                        kernel_name="python3", cwd=str(SOURCE), progress_bar=False)
    nb = nbformat.read(executed, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    if len(injected) != 1:
        raise SystemExit(f"{name}: expected one papermill injected-parameters cell, found {len(injected)}")
    injected[0].source = PARAMETERS
    for cell in nb.cells:  # timing metadata churns on every run
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)  # widget state (PNG bytes, the plotly bundle) is never compared
    cleanup = nbformat.v4.new_code_cell(CLEANUP, metadata={"tags": ["nbval-ignore-output"]})
    cleanup.execution_count = max((c.get("execution_count") or 0) for c in nb.cells if c.cell_type == "code") + 1
    nb.cells.append(cleanup)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=TARGET)
    os.close(fd)
    nbformat.write(nb, tmp)
    os.replace(tmp, TARGET / name)
    os.chmod(TARGET / name, 0o644)
    shutil.rmtree(workspace, ignore_errors=True)
    print(f"[goldens] wrote {TARGET / name}", flush=True)
PY
