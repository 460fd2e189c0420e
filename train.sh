#!/usr/bin/env sh
# The paper's run (configs/paper.yaml): 12 datasets, 66 images per step as 6 groups of 11, 100 epochs.
# Usage: GPUS=0,1,2,3,4,5 SAVE_PATH=runs/paper sh train.sh [extra train.py options]
# CONFIG=configs/paper_fast.yaml runs it on the fast path (bf16, TF32); any train.py config file works.
# With 1, 2, 3 or 6 GPUs each GPU takes 6/N groups of 11 per step (same step as the paper). With another count
# (e.g. 4 or 8) the step cannot be split into 6 groups evenly: it falls back to one group of 11 per GPU (the
# official README's setting, 11*N images per step) unless you set BATCH_SIZE and GROUPS_PER_PROCESS yourself.
# GPUs: a CUDA_VISIBLE_DEVICES set by the scheduler or by you is kept (GPUS=0,1 then picks the first two of those);
# without either, every GPU nvidia-smi lists. The rendezvous port is a free one unless PORT= names it.
set -eu
cd "$(dirname "$0")"
SAVE_PATH="${SAVE_PATH:-runs/paper}"
CONFIG="${CONFIG:-configs/paper.yaml}"
PYTHON="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ "$PYTHON" = python ] && PYTHON=.venv/bin/python
if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    VISIBLE="$CUDA_VISIBLE_DEVICES"
    if [ -n "${GPUS:-}" ]; then   # positions among the visible devices, as torch numbers them
        VISIBLE=$(echo "$VISIBLE" | awk -F, -v want="$GPUS" '{
            n = split(want, w, ","); out = ""
            for (i = 1; i <= n; i++) {
                if (w[i] !~ /^[0-9]+$/ || w[i] + 1 > NF) { print "bad " w[i]; exit }
                out = out (i > 1 ? "," : "") $(w[i] + 1)
            }
            print out }')
        case "$VISIBLE" in
            bad*) echo "train.sh: GPUS=$GPUS: position ${VISIBLE#bad } is not among CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES" \
                       "(GPUS counts from 0 within them)" >&2
                  exit 1 ;;
        esac
    fi
else
    VISIBLE="${GPUS:-$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | paste -sd, -)}"
fi
if [ -z "$VISIBLE" ]; then
    echo "train.sh: no GPU found (set GPUS=0,1,... or CUDA_VISIBLE_DEVICES); for a CPU run use train.py directly" >&2
    exit 1
fi
N=$(echo "$VISIBLE" | tr ',' '\n' | grep -c .)
if [ -z "${BATCH_SIZE:-}" ] || [ -z "${GROUPS_PER_PROCESS:-}" ]; then
    case "$N" in
        1|2|3|6) BATCH_SIZE=66; GROUPS_PER_PROCESS=$((6 / N)) ;;
        *) echo "train.sh: $N GPUs do not divide the paper's 6 groups of 11; falling back to one group of 11" \
                "per GPU ($((11 * N)) images per step, the official README's setting)." \
                "Set BATCH_SIZE and GROUPS_PER_PROCESS to choose otherwise." >&2
           BATCH_SIZE=$((11 * N)); GROUPS_PER_PROCESS=1 ;;
    esac
fi
echo "train.sh: GPUs $VISIBLE ($N), batch_size $BATCH_SIZE, groups_per_process $GROUPS_PER_PROCESS -> $SAVE_PATH" >&2
export CUDA_VISIBLE_DEVICES="$VISIBLE"
if [ -n "${PORT:-}" ]; then
    set -- --dist-url "tcp://127.0.0.1:$PORT" "$@"
fi
exec "$PYTHON" train.py --config "$CONFIG" --multiprocessing-distributed --world-size 1 --rank 0 \
    --batch_size "$BATCH_SIZE" --groups_per_process "$GROUPS_PER_PROCESS" --save_path "$SAVE_PATH" "$@"
