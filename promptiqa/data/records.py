"""The loaded form of an IQA dataset: what every loader returns and every consumer (splits, sampling, cache) reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

# `key:requirement` names one label column of a dataset (docs/datasets.md#requirements): `agiqa_3k:align`.
REQUIREMENT_SEPARATOR = ":"


def image_set(key: str) -> str:
    """The dataset whose images a key names: 'agiqa_3k:align' -> 'agiqa_3k' (a requirement's images, units and split
    are its dataset's)."""
    return key.partition(REQUIREMENT_SEPARATOR)[0]


@dataclass(frozen=True)
class Record:
    """One labelled image."""

    name: str                 # the image's path relative to the dataset root, '/'-separated (stable id in split files)
    path: str                 # absolute path of the image file
    score: float              # raw score exactly as the dataset publishes it (MOS or DMOS, its own scale)
    reference: Optional[str]  # reference (pristine source) name for synthetic datasets, None otherwise


@dataclass
class DatasetRecords:
    """All records of one dataset, in the official enumeration order, plus what the protocol needs to know of it."""

    key: str                  # registry key, or the user's name for a `csv` dataset; `key:requirement` for a
    #                           requirement other than the default (image_set(key) is the dataset's own key)
    root: str                 # the dataset root (or the label file, for the `csv` kind)
    records: List[Record]
    split_by: str             # "reference" or "image": the unit of the 80/20 split
    units: List[str]          # the split units in the official enumeration order (reference names or image names)
    label_type: str           # "MOS" or "DMOS"
    higher_is_better: bool    # polarity of the raw score (metadata only: labels are never flipped)
    label_norm: str           # "official" or "minmax"
    official_offset: float = 0.0   # official mapping: label = (score - offset) / divisor
    official_divisor: float = 1.0
    notes: List[str] = field(default_factory=list)  # loader remarks worth showing to a user (e.g. excluded entries)
