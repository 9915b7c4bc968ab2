#!/usr/bin/env bash
# Create .venv (when missing) and install the kit with its notebook and test extras.
# On a machine without CUDA (no nvidia-smi), torch==2.13.0 (CPU build) is installed FIRST: an
# unpinned torch would pull a multi-GB CUDA build. Re-running is fast: a stamp file newer than
# pyproject.toml skips the install.
#   PYTHON  interpreter that creates .venv (default: python3.11, else python3; needs >= 3.10)
#   EXTRAS  extras to install (default: notebooks,test)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS:-notebooks,test}
if [ ! -x .venv/bin/python ]; then
  PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
  if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "[setup] error: need Python >= 3.10 (3.11 recommended); set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  echo "[setup] creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.reindir_nb-installed-${EXTRAS//,/-}"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
start=$(date +%s)
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: installing torch with CUDA"
    .venv/bin/python -m pip install --quiet "torch>=2.1"
  else
    echo "[setup] no CUDA: installing the CPU build torch==2.13.0"
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
  fi
fi
echo "[setup] installing reindir_nb[$EXTRAS]"
.venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
touch "$stamp"
echo "[setup] done in $(( $(date +%s) - start )) s"
