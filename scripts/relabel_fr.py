"""New requirements (Table 3): relabel TID2013/KADID-10k with SSIM, FSIM and LPIPS (piq), then evaluate on them.

    python scripts/relabel_fr.py relabel --dataset tid2013 kadid --out_dir data/relabelled
    python scripts/relabel_fr.py table3 --checkpoint runs/paper/best_model.pth.tar \
        --baseline runs/ablation/wo_prompt/seed_2024/best_model.pth.tar --labels_dir data/relabelled --seed 2024
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptiqa.evaluation.protocol import protocol_entry  # noqa: E402
from promptiqa.evaluation.relabel import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(protocol_entry(main))
