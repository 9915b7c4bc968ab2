#!/usr/bin/env bash
# The main job: set up .venv, then run every notebook (01 ... 06) in order with papermill on the
# bundled data into a workspace. PROFILE (smoke | demo | paper, default demo) and WORKSPACE
# (default ./workspace) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PROFILE=${PROFILE:-demo}
WORKSPACE=${WORKSPACE:-$PWD/workspace}
.venv/bin/python -m reindir_nb.pipeline --profile "$PROFILE" --workspace "$WORKSPACE"
