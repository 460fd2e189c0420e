#!/usr/bin/env bash
# The web app from a checkout: creates .venv when missing, then serves the page on 127.0.0.1:7860 (Ctrl-C stops it).
# Without --checkpoint it uses the demo's model (bash scripts/demo.sh) or the released weights in the Hugging Face
# cache. Extra arguments go to the app (--checkpoint FILE|hf:REPO, --port, --host, --device, --share, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv
exec "$PY" -m promptiqa app "$@"
