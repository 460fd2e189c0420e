"""The ablations of Table 6, one variant per call (or --variant all), over split seeds; then a summary across variants.

    python scripts/ablation.py --variant wo_prompt --config configs/paper.yaml --save_path runs/ablation
    python scripts/ablation.py --summarise --save_path runs/ablation
Variants: full, wo_mixed (one model per dataset), wo_prompt, wo_scaling, wo_flipping, wo_both.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptiqa.evaluation.protocol import ablation_main, protocol_entry  # noqa: E402

if __name__ == "__main__":
    sys.exit(protocol_entry(ablation_main))
