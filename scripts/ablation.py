"""The ablations of Table 6, one variant per call (or --variant all), over split seeds; then a summary across variants.

    python scripts/ablation.py --variant wo_prompt --config configs/paper.yaml --save_path runs/ablation
    python scripts/ablation.py --summarise --save_path runs/ablation
Variants: full, wo_mixed (one model per dataset), wo_prompt, wo_scaling, wo_flipping, wo_both.
"""
from promptiqa.cli import script

if __name__ == "__main__":
    script("ablation")
