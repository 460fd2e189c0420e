"""Evaluation beyond the training loop: test.py's checkpoint evaluation with the leakage guard, the 10-split
protocol and its Table 2 summary, ablations (Table 6), ISP experiments (Tables 4-5, Fig. 3) and full-reference
relabelling for new requirements (Table 3).

Modules: ``leakage`` (test images a checkpoint was trained on), ``prompts`` (ISPP selection and perturbations),
``runner`` (test.py), ``features`` (test features computed once, scored under many prompts), ``report`` (tables,
CSV, plots), ``summary`` (medians over seeds), ``protocol`` (10 splits, ablations), ``isp`` (ISP experiments),
``relabel`` (Table 3).
"""
