"""The paper's experiments that train models: the 10-split protocol (Table 2) and the ablations (Table 6) in
``protocol``, full-reference relabelling with few-shot fine-tuning for new requirements (Table 3) in ``relabel``,
and the medians over split seeds in ``summary``. Evaluating one checkpoint is promptiqa.evaluation's.
"""
