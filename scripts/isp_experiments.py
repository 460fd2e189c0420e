"""ISP experiments on a checkpoint: selection (Table 4), perturb (Table 5), size (Fig. 3). Takes test.py's options.

    python scripts/isp_experiments.py selection --checkpoint runs/paper/best_model.pth.tar --dataset koniq10k \
        --split_file checkpoint --draws 10
    python scripts/isp_experiments.py size --checkpoint ... --dataset ... --sizes 3 5 7 8 10
    python scripts/isp_experiments.py perturb --checkpoint ... --dataset ... --conditions none random_images \
        random_scores inverted_scores
"""
from promptiqa.cli import script

if __name__ == "__main__":
    script("isp-experiments")
