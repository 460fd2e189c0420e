#!/usr/bin/env sh
# One acceptance command for a GPU (about 8 minutes on one H100 or RTX 3090): fidelity, training and inference speed,
# memory against a 24 GB card, a stopped and resumed train.sh run, host syncs, recompiles and attention kernels, in
# one Markdown table, also written to runs/gpu_check/gpu_check.md with the figures in gpu_check.json.
# Usage: bash scripts/gpu_check.sh [--cpu] [--out DIR] [--only ROW ...]   (--help: every option and row)
# Exits 1 when a check fails or does not finish. --cpu runs the same checks on the CPU with the micro model (CI).
# Relative paths (--out) are from the checkout, as train.sh's SAVE_PATH; PYTHON= picks the interpreter.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ "$PYTHON" = python ] && PYTHON=.venv/bin/python
exec "$PYTHON" -m promptiqa gpu-check "$@"
