#!/usr/bin/env bash
# Quick start 1: set up the environment (first time only) and run the MiniCity demo.
# Extra arguments go to `udaseg demo` (e.g. --out DIR).
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec udaseg demo "$@"
