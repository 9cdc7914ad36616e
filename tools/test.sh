#!/usr/bin/env bash
# Quick start 2: set up the environment (first time only) and run the test suite.
# Extra arguments go to pytest (e.g. -k minicity, or -m slow for the long checks).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
exec python -m pytest -q -n 2 "$@"
