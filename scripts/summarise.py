"""Median (and mean ± std) SROCC/PLCC over split seeds in the paper's Table 2 layout, as Markdown, CSV and XLSX.

    python scripts/summarise.py runs/ten_splits                       # -> runs/ten_splits/summary.{md,csv,xlsx}
    python scripts/summarise.py full=runs/ablation/full wo_prompt=runs/ablation/wo_prompt --out runs/table6
"""
from promptiqa.cli import script

if __name__ == "__main__":
    script("summarise")
