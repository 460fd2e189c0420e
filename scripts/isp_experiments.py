"""ISP experiments on a checkpoint: selection (Table 4), perturb (Table 5), size (Fig. 3). Takes test.py's options.

    python scripts/isp_experiments.py selection --checkpoint runs/paper/best_model.pth.tar --dataset koniq10k \
        --split_file checkpoint --draws 10
    python scripts/isp_experiments.py size --checkpoint ... --dataset ... --sizes 3 5 7 8 10
    python scripts/isp_experiments.py perturb --checkpoint ... --dataset ... --conditions none random_images \
        random_scores inverted_scores
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptiqa.evaluation.isp import isp_main  # noqa: E402
from promptiqa.evaluation.protocol import protocol_entry  # noqa: E402

if __name__ == "__main__":
    sys.exit(protocol_entry(isp_main))
