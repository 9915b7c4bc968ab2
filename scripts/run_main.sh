#!/usr/bin/env bash
# The main job: set up .venv, then run every notebook (01 ... 06) in order with papermill on the
# bundled data into a workspace; executed copies go to WORKSPACE/executed/, and the last lines
# say where the prepared data, checkpoints, tables and figures are.
#   PROFILE    smoke | demo | paper (default demo)
#   WORKSPACE  output folder (default ./workspace)
#   ONLY       optional notebook prefixes, e.g. ONLY="01 02"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PROFILE=${PROFILE:-demo}
WORKSPACE=${WORKSPACE:-$PWD/workspace}
# shellcheck disable=SC2086  # ONLY is a space-separated list of prefixes
.venv/bin/python -m reindir_nb.pipeline --profile "$PROFILE" --workspace "$WORKSPACE" --only ${ONLY:-}
