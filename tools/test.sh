#!/usr/bin/env bash
# Quick start 2: set up the environment (first time only), lint (ruff), type-check (mypy) and run the test suite.
# Extra arguments go to pytest (e.g. -k minicity, or -m slow for the long checks).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
# Lint and types first (about 1 s each; mypy's first run in a fresh clone about 35 s, then cached).
ruff check udaseg tests
mypy
exec python -m pytest -q -n 2 "$@"
