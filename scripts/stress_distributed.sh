#!/usr/bin/env bash
# The distributed tests N times in a row (default 20) while a CPU-bound process competes for the cores: the check
# behind "no rank aborts at exit" (issue 29). Stops at the first failure and keeps its output.
# Usage: bash scripts/stress_distributed.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv
N="${1:-20}"
TESTS=(tests/test_train.py::test_torchrun_two_processes_hold_identical_weights
       tests/test_train.py::test_killing_one_node_ends_the_job_and_leaves_a_resumable_checkpoint
       tests/test_train.py::test_multiprocessing_distributed_on_cpu
       tests/test_train.py::test_groups_per_process_equal_processes
       tests/test_cluster.py::test_slow_fingerprinting_on_every_rank_outlasts_the_collective_timeout
       tests/test_cluster.py::test_every_rank_tears_down_its_process_group_on_every_exit
       tests/test_cluster.py::test_a_stop_signal_to_one_rank_stops_every_rank_within_a_step
       tests/test_cluster.py::test_the_backbone_is_fetched_by_one_process_per_node_first)
"$PY" -c "while True: pass" &   # the competing CPU-heavy process
HOG=$!
trap 'kill $HOG 2>/dev/null || true' EXIT
LOG="$(mktemp -d)/stress.log"
for i in $(seq 1 "$N"); do
    start=$(date +%s)
    if ! "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" > "$LOG" 2>&1; then
        echo "round $i of $N FAILED after $(( $(date +%s) - start )) s; output: $LOG" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
    if grep -q "terminate called" "$LOG"; then
        echo "round $i of $N: 'terminate called' in the output: $LOG" >&2
        exit 1
    fi
    echo "round $i of $N passed ($(tail -n 1 "$LOG" | sed 's/=//g' | xargs), $(( $(date +%s) - start )) s)"
done
echo "all $N rounds passed"
