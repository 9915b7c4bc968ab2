#!/usr/bin/env bash
# The test suite: set up .venv (with the browser extra), install Debian chromium for the
# browser test when missing (root + apt-get only; the test skips itself without it), check that
# the source notebooks are stripped, then run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=notebooks,test,browser bash scripts/setup_env.sh
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing Debian chromium for the browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[test] chromium could not be installed; the browser test will be skipped"
fi
.venv/bin/nbstripout --verify notebooks/*.ipynb
.venv/bin/python -m pytest -q "$@"
