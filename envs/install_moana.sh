#!/usr/bin/env bash
# Best-effort install of Moana (moana==0.1.1, PyPI) into its own legacy venv: moana needs
# numpy < 2, the project's venv has numpy 2. Never fails the setup: without it the competitor
# `moana` is reported as not_installed. Usage: bash envs/install_moana.sh [VENV] [PYTHON]
# (defaults .venv-moana, python3.11); the adapter finds <repo>/.venv-moana/bin/python, or the
# interpreter named by the environment variable MOANA_PYTHON.
VENV=${1:-.venv-moana}
PYTHON=${2:-python3.11}
HERE=$(cd "$(dirname "$0")" && pwd)
warn() { echo "WARNING: $*; the competitor moana will be reported as not_installed." >&2; exit 0; }
command -v "$PYTHON" >/dev/null 2>&1 || warn "$PYTHON not found"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $PYTHON for moana"
  "$PYTHON" -m venv "$VENV" || warn "$PYTHON -m venv $VENV failed"
fi
"$VENV/bin/python" -m pip install --quiet -r "$HERE/moana-requirements.txt" || warn "pip install -r envs/moana-requirements.txt failed"
# moana's declared pins (pandas<1, scikit-learn<1) have no builds for this Python: installed
# without them, on the pins above
"$VENV/bin/python" -m pip install --quiet --no-deps "moana==0.1.1" || warn "pip install moana==0.1.1 failed"
"$VENV/bin/python" "$HERE/../scripts/concerto_workflow/methods/moana_legacy_runner.py" --check \
  || warn "moana does not import in $VENV"
echo "Moana available ($VENV)."
