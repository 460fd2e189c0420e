"""Evaluate a PromptIQA checkpoint (the official release file or ours) on datasets' test splits (see --help).

    python test.py --checkpoint runs/paper/best_model.pth.tar --dataset koniq10k livec --split_file checkpoint
    torchrun --nproc_per_node 4 test.py --checkpoint checkpoints/best_model.pth.tar --dataset koniq10k
"""
from promptiqa.cli import script

if __name__ == "__main__":
    script("test")
