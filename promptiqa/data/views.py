"""One dataset's train and test views of a split, as training and test.py both build them: records -> split ->
labels -> image source -> IQAImages, and the train split's official sample order."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np

from .cache import open_image_source
from .images import IQAImages
from .labels import normalise_labels
from .records import DatasetRecords
from .registry import load_dataset
from .sampling import sample_isps
from .splits import Split, official_train_order

# chooses a dataset's split: (the split, how it was chosen, said in logs and results.json)
SplitChoice = Callable[[DatasetRecords], Tuple[Split, str]]


@dataclass
class DatasetViews:
    """A dataset's records, its split, and the train and test IQAImages of that split (and the validation part's,
    when the split has one)."""

    key: str
    records: DatasetRecords
    split: Split
    split_source: str
    train: IQAImages
    test: IQAImages
    train_order: List[int]   # train positions in the official sample order: ISP ties and the first epoch follow it
    val: Optional[IQAImages] = None   # --val_fraction's validation part, held out from training

    @property
    def train_names(self) -> List[str]:
        return [self.records.records[i].name for i in self.split.train_indices]

    @property
    def test_names(self) -> List[str]:
        return [self.records.records[i].name for i in self.split.test_indices]

    def isp_positions(self, n: int, strategy: str = "interval", seed: Optional[int] = None) -> np.ndarray:
        """Train positions of an ISPP of ``n`` pairs sampled as the official code samples them."""
        return sample_isps(self.train.labels, n, strategy, seed=seed, order=self.train_order)


def load_views(key: str, root: Union[str, Path], choose_split: SplitChoice, image_size: int,
               label_norm: str = "official", cache_dir: Union[str, Path, None] = None,
               feeds_gpu: bool = False) -> DatasetViews:
    """Read dataset ``key`` at ``root``, split it with ``choose_split`` and open its train and test views
    (``feeds_gpu``: warn when its images are decoded from disk, see ``open_image_source``)."""
    records = load_dataset(key, root, label_norm=label_norm)
    split, source = choose_split(records)
    images = open_image_source(records, image_size, cache_dir, feeds_gpu)
    train = IQAImages(images, normalise_labels(records, split.train_indices), image_size, indices=split.train_indices)
    test = IQAImages(images, normalise_labels(records, split.test_indices), image_size, indices=split.test_indices)
    val = IQAImages(images, normalise_labels(records, split.val_indices), image_size, indices=split.val_indices) \
        if split.val_indices else None
    return DatasetViews(key, records, split, source, train, test, official_train_order(records, split), val)
