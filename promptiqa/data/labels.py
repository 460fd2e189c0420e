"""Raw scores -> training labels in [0, 1]: the official code's fixed mapping or the paper's per-split min-max."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from promptiqa.data.formats.common import DatasetError
from promptiqa.data.records import DatasetRecords


def official_rule(dataset: DatasetRecords) -> str:
    """The official mapping of a dataset as text, e.g. '(score - 1) / 100'."""
    offset, divisor = dataset.official_offset, dataset.official_divisor
    shifted = f"(score - {offset:g})" if offset else "score"
    return f"{shifted} / {divisor:g}"


def normalise_labels(dataset: DatasetRecords, indices: Optional[Sequence[int]] = None) -> np.ndarray:
    """float32 labels of the records at `indices` (all when None); refuses any label outside [0, 1].

    official: (score - offset) / divisor with the dataset's fixed constants (for a csv dataset, min-max over the
    whole file); minmax: min-max over exactly these records, i.e. the split (the paper, §4.1).
    """
    scores = np.array([r.score for r in dataset.records], dtype=np.float64)
    if indices is not None:
        scores = scores[np.asarray(indices, dtype=np.int64)]
    if scores.size == 0:
        return scores.astype(np.float32)
    if dataset.label_norm == "official":
        labels = (scores - dataset.official_offset) / dataset.official_divisor
        rule = f"label_norm='official', {official_rule(dataset)}"
    elif dataset.label_norm == "minmax":
        low, high = scores.min(), scores.max()
        if not high > low:
            raise DatasetError(dataset.key, f"all {scores.size} scores of this subset equal {low:g}, so min-max "
                                            "normalisation is undefined", dataset.root,
                               expected="a split with at least two different scores")
        labels = (scores - low) / (high - low)
        rule = "label_norm='minmax'"
    else:
        raise DatasetError(dataset.key, f"unknown label_norm {dataset.label_norm!r}", expected="'official' or 'minmax'")
    outside = ~((labels >= 0.0) & (labels <= 1.0))
    if outside.any():
        # The official training loop asserts labels in [0, 1]; refuse here, before a batch would crash it.
        raise DatasetError(dataset.key, f"{int(outside.sum())} of {labels.size} labels fall outside [0, 1] (labels "
                                        f"{np.nanmin(labels):.4g} to {np.nanmax(labels):.4g}, scores "
                                        f"{np.nanmin(scores):.4g} to {np.nanmax(scores):.4g}) under {rule}",
                           dataset.root, expected="every training label in [0, 1]")
    return labels.astype(np.float32)


def label_scale(dataset: DatasetRecords, indices: Optional[Sequence[int]] = None) -> Tuple[float, float]:
    """The raw scores (low, high) that label 0 and 1: (score - low) / (high - low) gives exactly the labels
    `normalise_labels(dataset, indices)` gives (the linear map a prompt CSV's --score_range states)."""
    scores = np.array([r.score for r in dataset.records], dtype=np.float64)
    if dataset.label_norm == "minmax":
        chosen = scores if indices is None else scores[np.asarray(indices, dtype=np.int64)]
        return float(chosen.min()), float(chosen.max())
    low, high = dataset.official_offset, dataset.official_offset + dataset.official_divisor
    if high - low != dataset.official_divisor:
        # offset + divisor rounded (a csv dataset's whole-file min-max): its maximum gives the divisor exactly
        high = float(scores.max())
    return float(low), float(high)
