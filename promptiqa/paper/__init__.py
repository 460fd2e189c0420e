"""The PromptIQA paper's published figures (ECCV 2024, Tables 2-6) as package data, and ours compared with them.

``paper_tables.csv`` is the data (README.md beside it says where each figure comes from); ``figures`` reads it,
maps this project's names to its rows, and sets each figure of ours beside the paper's with Δ and the flag rule.
"""
from .figures import (FIELDS, PAPER_FILE, TOLERANCE, Comparison, PaperFigure, field_names, figure, paper_table,
                      paper_value, rule, spread_of, summary_column, summary_row, table3_figure, table3_training,
                      table4_figure, table5_figure)

__all__ = ["FIELDS", "PAPER_FILE", "TOLERANCE", "Comparison", "PaperFigure", "field_names", "figure", "paper_table",
           "paper_value", "rule", "spread_of", "summary_column", "summary_row", "table3_figure", "table3_training",
           "table4_figure", "table5_figure"]
