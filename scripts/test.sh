#!/usr/bin/env bash
# The README's test command: creates .venv when missing, then runs the test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv
exec "$PY" -m pytest "$@"
