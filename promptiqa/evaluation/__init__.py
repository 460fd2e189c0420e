"""Evaluating a checkpoint: test.py with the leakage guard, and the ISP experiments (Tables 4-5, Fig. 3).

Modules: ``runner`` (test.py), ``isp`` (ISP experiments), ``prompts`` (ISPP selection and perturbations),
``leakage`` (test images a checkpoint was trained on), ``features`` (test features computed once, scored under many
prompts), ``report`` (tables, CSV, plots). The experiments that train models are in promptiqa.experiments.
"""
