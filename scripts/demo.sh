#!/usr/bin/env bash
# The README's demo command: creates .venv when missing, then runs the embedded demo end to end
# (synthetic dataset -> training -> prompted evaluation -> scoring). Extra arguments go to the demo (--full, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv
exec "$PY" -m promptiqa.demo "$@"
