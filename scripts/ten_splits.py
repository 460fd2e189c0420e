"""Train and test PromptIQA on the 10 split seeds (Table 2), skipping seeds already done, then summarise.

    python scripts/ten_splits.py --config configs/paper.yaml --save_path runs/ten_splits           # all 10, in turn
    python scripts/ten_splits.py --config configs/paper.yaml --seed_index $SLURM_ARRAY_TASK_ID      # one per job
Every other option is train.py's and is passed through (see promptiqa/evaluation/protocol.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptiqa.evaluation.protocol import protocol_entry, ten_splits_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(protocol_entry(ten_splits_main))
