# Source this file: creates (once) or reuses the project's virtual environment and activates it.
# The venv lives outside the clone, keyed by the hash of requirements.txt and the Python version,
# so fresh clones and repeated CI runs share it. Override the location with UDASEG_VENV.
set -euo pipefail
_udaseg_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_udaseg_py="${PYTHON:-python3}"
_udaseg_key="$( (cat "$_udaseg_root/requirements.txt"; "$_udaseg_py" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
UDASEG_VENV="${UDASEG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/udaseg/venv-$_udaseg_key}"
mkdir -p "$(dirname "$UDASEG_VENV")"
# One builder at a time: a second shell sourcing this while the first builds waits for it
# (without the lock it would delete the half-built environment and start again).
exec {_udaseg_lock}>"$UDASEG_VENV.lock"
flock "$_udaseg_lock"
if [[ ! -f "$UDASEG_VENV/.complete" ]]; then
    echo "[udaseg] creating the environment in $UDASEG_VENV (first run only; torch is large)" >&2
    rm -rf "$UDASEG_VENV"
    mkdir -p "$(dirname "$UDASEG_VENV")"
    "$_udaseg_py" -m venv "$UDASEG_VENV"
    "$UDASEG_VENV/bin/python" -m pip install -q --upgrade pip
    "$UDASEG_VENV/bin/python" -m pip install -q -r "$_udaseg_root/requirements.txt"
    touch "$UDASEG_VENV/.complete"
fi
flock -u "$_udaseg_lock"
exec {_udaseg_lock}>&-
# The package itself is installed editable from this clone (skipped when the venv already points here).
_udaseg_at="$(cd / && "$UDASEG_VENV/bin/python" -c 'import udaseg, os; print(os.path.dirname(os.path.dirname(os.path.realpath(udaseg.__file__))))' 2>/dev/null || true)"
if [[ "$_udaseg_at" != "$(realpath "$_udaseg_root")" || ! -x "$UDASEG_VENV/bin/udaseg" ]]; then
    if ! _udaseg_log="$("$UDASEG_VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$_udaseg_root" 2>&1)"; then
        echo "$_udaseg_log" >&2
        echo "[udaseg] installing the package from $_udaseg_root failed" >&2
        return 1 2>/dev/null || exit 1
    fi
fi
export PATH="$UDASEG_VENV/bin:$PATH"
export VIRTUAL_ENV="$UDASEG_VENV"
set +euo pipefail
