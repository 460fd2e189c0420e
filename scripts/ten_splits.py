"""Train and test PromptIQA on the 10 split seeds (Table 2), skipping seeds already done, then summarise.

    python scripts/ten_splits.py --config configs/paper.yaml --save_path runs/ten_splits           # all 10, in turn
    python scripts/ten_splits.py --config configs/paper.yaml --seed_index $SLURM_ARRAY_TASK_ID      # one per job
Every other option is train.py's and is passed through (see promptiqa/experiments/protocol.py).
"""
from promptiqa.cli import script

if __name__ == "__main__":
    script("ten-splits")
