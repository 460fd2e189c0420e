"""New requirements (Table 3): relabel TID2013/KADID-10k with SSIM, FSIM and LPIPS (piq), then evaluate on them.

    python scripts/relabel_fr.py relabel --dataset tid2013 kadid --out_dir data/relabelled
    python scripts/relabel_fr.py table3 --checkpoint runs/paper/best_model.pth.tar \
        --baseline runs/ablation/wo_prompt/seed_2024/best_model.pth.tar --labels_dir data/relabelled --seed 2024
"""
import sys

from promptiqa.cli import script

# this script's two words -> the registry's commands
COMMANDS = {"relabel": "relabel", "table3": "relabel-eval"}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print("usage: relabel_fr.py {relabel,table3} [options]   (--help after a word for its options)\n"
              "  relabel  write <dataset>_<ssim|fsim|lpips>.csv label files (python -m promptiqa relabel)\n"
              "  table3   evaluate PromptIQA and the w/o-prompt baselines on them (python -m promptiqa relabel-eval)",
              file=sys.stderr)
        sys.exit(2)  # a usage error, as argparse's
    script(COMMANDS[sys.argv.pop(1)])
