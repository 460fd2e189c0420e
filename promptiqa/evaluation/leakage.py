"""The leakage guard: how many of the evaluated test images a checkpoint was trained on.

Our checkpoints record the units (reference or image names) of every training split they used, and a content
fingerprint of each training image (``info["config"]["splits"]``); the evaluated test split's images are compared
with both, so the same files under another dataset name or path are recognised too. The released checkpoint records
none: on the 12 datasets it was trained on, its test figures may include training images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional

from ..data import DATASET_KEYS, image_fingerprint, image_set, recorded_split

# The verdicts, one word each, the same in results.csv's and results.json's "leakage" and in test.py's printed table
# (docs/reproducing.md "Leakage guard": the word for test images a checkpoint was trained on is leakage, everywhere).
FOUND, NONE, UNKNOWN, NOT_TRAINED = "found", "none", "unknown", "not_trained"

RELEASE_NOTE = ("the released PromptIQA checkpoint was trained on 80% of each of the 12 datasets by the official "
                "script (seed 2024) and its training splits are not published")


@dataclass(frozen=True)
class LeakageCheck:
    """The guard's verdict for one dataset."""

    dataset: str
    status: str                # FOUND | NONE | UNKNOWN | NOT_TRAINED
    leaked: Optional[int]      # test images the checkpoint was trained on; None when it cannot be known
    n_test: int
    message: str

    @property
    def warns(self) -> bool:
        return self.status in (FOUND, UNKNOWN)

    @property
    def cell(self) -> str:
        """The verdict as test.py's table prints it: the status, with the count when leakage was found."""
        return f"{FOUND} {self.leaked}/{self.n_test}" if self.status == FOUND else self.status

    @property
    def warning(self) -> str:
        """The warning line's text: the verdict in the table's words, then why."""
        return f"leakage {self.status}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


def _unit(record, split_by: str) -> Optional[str]:
    return record.reference if split_by == "reference" else record.name


def _content_matches(ds, split, splits: Mapping[str, Any]) -> Optional[Dict[int, str]]:
    """{test position: a dataset whose recorded training images include a file with the same content}, or None
    when the checkpoint records no fingerprints (saved by an older version)."""
    recorded = {key: set(entry.get("train_fingerprints") or ()) for key, entry in splits.items()}
    if not any(recorded.values()):
        return None
    matches = {}
    for position, i in enumerate(split.test_indices):
        fingerprint = image_fingerprint(ds.records[i].path)
        found = next((key for key, prints in recorded.items() if fingerprint in prints), None)
        if found is not None:
            matches[position] = found
    return matches


def check_leakage(ds, split, info: Optional[Mapping[str, Any]], trained_key: Optional[str] = None) -> LeakageCheck:
    """Compare ``split``'s test images of ``ds`` with the training images the checkpoint (``info``) records.

    A test image counts as trained on when its unit (reference or image name) is in the training split recorded
    under ``ds``'s name (or ``trained_key``: a relabelled copy of a dataset shares its images and references), or
    under another requirement of its dataset (``agiqa_3k`` for ``agiqa_3k:align``: the same images), or when its
    content matches a training image of any dataset the checkpoint records fingerprints for (the same files under
    another dataset name or path). Leakage is a matter of images, whichever requirement labelled them.
    """
    key = trained_key or ds.key
    n_test = len(split.test_indices)
    config = (info or {}).get("config")
    if not config:
        if image_set(key) in DATASET_KEYS:
            return LeakageCheck(ds.key, UNKNOWN, None, n_test,
                                f"{ds.key}: official-format checkpoint without recorded training splits; "
                                f"{RELEASE_NOTE}, so its test figures on '{key}' may include training images")
        return LeakageCheck(ds.key, NOT_TRAINED, 0, n_test,
                            f"{ds.key}: not one of the released checkpoint's 12 training datasets")
    splits = config.get("splits")
    content = _content_matches(ds, split, splits or {})
    by_content = set(content or {})
    by_unit, unit_verdict, entry, split_by = set(), None, {}, ds.split_by
    found = recorded_split(splits or {}, key)
    if found is not None:
        key, entry = found
        split_by = entry.get("split_by") or ds.split_by
        trained = set(entry.get("train") or ())
        units = {_unit(r, split_by) for r in ds.records}
        if None in units or not (trained & units):
            unit_verdict = (f"none of the checkpoint's {len(trained)} training units of '{key}' (split by "
                            f"{split_by}) name an image of this copy of the dataset")
        else:
            by_unit = {j for j, i in enumerate(split.test_indices) if _unit(ds.records[i], split_by) in trained}
    leaked = by_unit | by_content
    if leaked:
        how = []
        if by_unit:
            shared = len({_unit(ds.records[split.test_indices[j]], split_by) for j in by_unit})
            of = f" of '{key}' (the same images)" if key != ds.key else ""
            how.append(f"{len(by_unit)} ({shared} {split_by} unit(s)) are in the checkpoint's training split{of} "
                       f"(seed {entry.get('seed')})")
        others = sorted({content[j] for j in by_content - by_unit})
        if others:
            how.append(f"{len(by_content - by_unit)} are, by content, files it trained on as "
                       + ", ".join(f"'{k}'" for k in others))
        advice = (" Evaluate with the training run's split (--split_file its splits.json, or --split_file "
                  "checkpoint)" if by_unit else "")
        return LeakageCheck(ds.key, FOUND, len(leaked), n_test,
                            f"{ds.key}: {len(leaked)} of {n_test} test images were trained on: {'; '.join(how)}; "
                            f"these figures are not held-out results.{advice}")
    also = "; no test image matches its training images by content either" if content is not None else ""
    if found is not None and unit_verdict is None:
        return LeakageCheck(ds.key, NONE, 0, n_test,
                            f"{ds.key}: no test image is in the checkpoint's training split{also}")
    if content is not None and found is not None and (entry.get("train_fingerprints") or ()):
        # the names do not match this copy, but the content of every training image of 'key' is known
        return LeakageCheck(ds.key, NONE, 0, n_test,
                            f"{ds.key}: {unit_verdict}, and no test image matches its training images by content")
    if unit_verdict is not None:
        return LeakageCheck(ds.key, UNKNOWN, None, n_test,
                            f"{ds.key}: {unit_verdict}; cannot tell which test images it was trained on")
    if splits is None or any(image_set(k) == image_set(key) for k in config.get("datasets") or ()):
        return LeakageCheck(ds.key, UNKNOWN, None, n_test,
                            f"{ds.key}: the checkpoint records no training split for '{key}'; its test figures "
                            f"may include training images")
    return LeakageCheck(ds.key, NOT_TRAINED, 0, n_test,
                        f"{ds.key}: the checkpoint was not trained on '{key}' (cross-dataset evaluation){also}")
