"""The leakage guard: how many of the evaluated test images a checkpoint was trained on.

Our checkpoints record the units (reference or image names) of every training split they used
(``info["config"]["splits"]``); the evaluated test split's images are compared with them. The released checkpoint
records none: on the 12 datasets it was trained on, its test figures may include training images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

from ..data import DATASET_KEYS

RELEASE_NOTE = ("the released PromptIQA checkpoint was trained on 80% of each of the 12 datasets by the official "
                "script (seed 2024) and its training splits are not published")


@dataclass(frozen=True)
class LeakageCheck:
    """The guard's verdict for one dataset."""

    dataset: str
    status: str                # "disjoint" | "overlap" | "unknown" | "not_trained"
    overlap: Optional[int]     # test images in the checkpoint's training split; None when it cannot be known
    n_test: int
    message: str

    @property
    def warns(self) -> bool:
        return self.status in ("overlap", "unknown")

    def to_dict(self) -> dict:
        return asdict(self)


def _unit(record, split_by: str) -> Optional[str]:
    return record.reference if split_by == "reference" else record.name


def check_leakage(ds, split, info: Optional[Mapping[str, Any]], trained_key: Optional[str] = None) -> LeakageCheck:
    """Compare ``split``'s test images of ``ds`` with the training split the checkpoint (``info``) records.

    ``trained_key`` names the checkpoint's dataset when it differs from ``ds.key`` (a relabelled copy of a
    dataset shares its images and references).
    """
    key = trained_key or ds.key
    n_test = len(split.test_indices)
    config = (info or {}).get("config")
    if not config:
        if key in DATASET_KEYS:
            return LeakageCheck(ds.key, "unknown", None, n_test,
                                f"{ds.key}: official-format checkpoint without recorded training splits; "
                                f"{RELEASE_NOTE}, so its test figures on '{key}' may include training images")
        return LeakageCheck(ds.key, "not_trained", 0, n_test,
                            f"{ds.key}: not one of the released checkpoint's 12 training datasets")
    splits = config.get("splits")
    if not splits or key not in splits:
        if splits is None or key in (config.get("datasets") or ()):
            return LeakageCheck(ds.key, "unknown", None, n_test,
                                f"{ds.key}: the checkpoint records no training split for '{key}'; its test figures "
                                f"may include training images")
        return LeakageCheck(ds.key, "not_trained", 0, n_test,
                            f"{ds.key}: the checkpoint was not trained on '{key}' (cross-dataset evaluation)")
    entry = splits[key]
    split_by = entry.get("split_by") or ds.split_by
    trained = set(entry.get("train") or ())
    units = {_unit(r, split_by) for r in ds.records}
    if None in units or not (trained & units):
        return LeakageCheck(ds.key, "unknown", None, n_test,
                            f"{ds.key}: none of the checkpoint's {len(trained)} training units of '{key}' (split by "
                            f"{split_by}) name an image of this copy of the dataset; cannot tell which test images "
                            f"it was trained on")
    test_units = [_unit(ds.records[i], split_by) for i in split.test_indices]
    overlap = sum(u in trained for u in test_units)
    if overlap:
        shared = len({u for u in test_units if u in trained})
        return LeakageCheck(ds.key, "overlap", overlap, n_test,
                            f"{ds.key}: {overlap} of {n_test} test images ({shared} {split_by} unit(s)) are in the "
                            f"checkpoint's training split (seed {entry.get('seed')}); these figures are not "
                            f"held-out results. Evaluate with the training run's split (--split_file its "
                            f"splits.json, or --split_file checkpoint)")
    return LeakageCheck(ds.key, "disjoint", 0, n_test,
                        f"{ds.key}: no test image is in the checkpoint's training split")
