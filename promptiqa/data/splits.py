"""80/20 train/test splits: a pure function of (dataset, seed), recorded by unit name in a JSON split file.

The rule is the official one: shuffle ``range(N)`` with Python's ``random`` seeded by the run seed and take the
first ``int(round(0.8 * N))`` as train. It runs over ``ds.units`` (reference names for LIVE, CSIQ, TID2013 and
KADID, image names otherwise), so every distorted image of a reference lands on its reference's side.

With --val_fraction F (ours; the official code has no validation part) the last ``int(round(F * n))`` of the
seed's n shuffled train units become a validation part, held out from training: by the same unit, a pure function
of (dataset, seed, F), no random stream of its own.
"""
from __future__ import annotations

import json
import numbers
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import PromptIQAError
from ..fileio import write_json
from .records import DatasetRecords, image_set
from .registry import spec_of

# The official code's seed comes first; the other nine are our choice (the paper does not publish its seeds).
OFFICIAL_SEED = 2024
SPLIT_SEEDS: Tuple[int, ...] = (OFFICIAL_SEED,) + tuple(range(2025, 2034))

TRAIN_FRACTION = 0.8
SPLIT_FILE_FORMAT = "promptiqa-splits"
SPLIT_FILE_VERSION = 1


class SplitError(PromptIQAError, ValueError):
    """A split (or split file) that does not fit the dataset, or cannot be read."""


@dataclass(frozen=True)
class Split:
    """One dataset's split: the unit names on each side and the matching record indices (in record order)."""

    key: str
    seed: Optional[int]          # None when the split came from a file that did not record a seed
    train_units: List[str]       # in the order the split enumerates them (the shuffle order)
    test_units: List[str]
    train_indices: List[int]     # indices into ds.records, ascending
    test_indices: List[int]
    split_by: str                # "reference" or "image", copied from the dataset
    # the validation part carved out of the train side (--val_fraction): not trained on; empty without it
    val_units: List[str] = field(default_factory=list)
    val_indices: List[int] = field(default_factory=list)


def _n_train(n: int) -> int:
    # Python's round() rounds halves to even and 0.8 * n is a float; int(round(...)) matches the official code.
    return int(round(TRAIN_FRACTION * n))


def split_units(units: Sequence[str], seed: int) -> Tuple[List[str], List[str]]:
    """Split units 80/20 exactly as the official code does for this seed; returns (train_units, test_units)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"split seed must be an integer, got {seed!r}")
    order = list(range(len(units)))
    # A private Random seeded like random.seed(seed) gives the same shuffle without touching the global state.
    random.Random(int(seed)).shuffle(order)
    cut = _n_train(len(units))
    return [units[i] for i in order[:cut]], [units[i] for i in order[cut:]]


def _record_unit(ds: DatasetRecords, i: int) -> str:
    record = ds.records[i]
    if ds.split_by == "reference":
        if record.reference is None:
            raise SplitError(f"dataset '{ds.key}' splits by reference but record {record.name!r} has no reference")
        return record.reference
    if ds.split_by == "image":
        return record.name
    raise SplitError(f"dataset '{ds.key}': split_by must be 'reference' or 'image', got {ds.split_by!r}")


def _examples(names) -> str:
    names = sorted(names)
    shown = ", ".join(repr(n) for n in names[:5])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def split_from_units(ds: DatasetRecords, train_units: Sequence[str], test_units: Sequence[str],
                     seed: Optional[int] = None, val_units: Sequence[str] = ()) -> Split:
    """Build a Split from unit names (e.g. read from a split file), checking they are exactly the dataset's units;
    ``val_units``, a validation part held out from training, come out of the train side."""
    known = set(ds.units)
    if len(known) != len(ds.units):
        raise SplitError(f"dataset '{ds.key}' lists some split units more than once")
    train, test, val = list(train_units), list(test_units), list(val_units)
    for side, names in (("train", train), ("test", test), ("validation", val)):
        if len(set(names)) != len(names):
            raise SplitError(f"split for '{ds.key}': the {side} list names some units more than once")
        unknown = set(names) - known
        if unknown:
            raise SplitError(f"split for '{ds.key}': {side} units not in the dataset (split_by={ds.split_by}): "
                             f"{_examples(unknown)}; was the split file made for another copy or version of it?")
    both = set(train) & set(test)
    if both:
        raise SplitError(f"split for '{ds.key}': units on both the train and the test side: {_examples(both)}")
    for side, names in (("train", train), ("test", test)):
        both = set(names) & set(val)
        if both:
            raise SplitError(f"split for '{ds.key}': units on both the {side} and the validation side: "
                             f"{_examples(both)}")
    missing = known - set(train) - set(test) - set(val)
    if missing:
        raise SplitError(f"split for '{ds.key}': dataset units on neither side: {_examples(missing)}")

    train_set, val_set = set(train), set(val)
    train_idx, test_idx, val_idx = [], [], []
    for i in range(len(ds.records)):
        unit = _record_unit(ds, i)
        if unit not in known:
            raise SplitError(f"dataset '{ds.key}': record {ds.records[i].name!r} has unit {unit!r}, "
                             f"which is not in ds.units")
        (train_idx if unit in train_set else val_idx if unit in val_set else test_idx).append(i)
    return Split(ds.key, seed, train, test, train_idx, test_idx, ds.split_by, val, val_idx)


def make_split(ds: DatasetRecords, seed: int) -> Split:
    """The official 80/20 split of `ds` for `seed`."""
    train, test = split_units(ds.units, seed)
    return split_from_units(ds, train, test, seed=int(seed))


def carve_validation(ds: DatasetRecords, split: Split, fraction: float) -> Split:
    """``split`` with the last ``int(round(fraction * n))`` of its n train units (in split order, which for a seed
    is its shuffle) moved to a validation part; refuses a fraction that leaves no unit on either side, or fewer than
    two validation images (a correlation needs two)."""
    if not fraction:
        return split
    if split.val_units:
        raise SplitError(f"split for '{ds.key}' already holds a validation part of {len(split.val_units)} units")
    if not 0 < fraction < 1:
        raise SplitError(f"--val_fraction must be above 0 and below 1, got {fraction}")
    n = len(split.train_units)
    n_val = int(round(fraction * n))
    if not 1 <= n_val <= n - 1:
        raise SplitError(f"--val_fraction {fraction} leaves {n - n_val} training and {n_val} validation units of the "
                         f"{n} training units of {ds.key} (split by {ds.split_by}); each side needs at least one, so "
                         f"{n} x F must round to between 1 and {n - 1}")
    train, val = split.train_units[:n - n_val], split.train_units[n - n_val:]
    carved = split_from_units(ds, train, split.test_units, seed=split.seed, val_units=val)
    if len(carved.val_indices) < 2:
        raise SplitError(f"--val_fraction {fraction} gives {ds.key} a validation part of a single image; it needs at "
                         f"least 2 (a correlation needs two): give a larger fraction")
    return carved


def official_train_order(ds: DatasetRecords, split: Split) -> List[int]:
    """Positions into ``split.train_indices`` (the train set) in the order the official code lists the train split.

    Interval sampling breaks label ties in this order and the official first epoch's groups are consecutive runs of
    it. Per the dataset's kind (``DatasetSpec.train_order``): KADID, SPAQ and UWIQA keep label-file order (their
    classes filter the label file's rows); every other dataset, the ``csv`` kind included, lists the split's units in
    their shuffled order, each unit's images in label-file order (one image per unit for by-image datasets; for
    LIVE, CSIQ and TID2013 the reference order, with our sorted reference names standing in for ``os.listdir``).
    """
    spec = spec_of(ds.key)
    if spec is not None and spec.train_order == "label_file":
        return list(range(len(split.train_indices)))
    by_unit: Dict[str, List[int]] = {}
    for position, i in enumerate(split.train_indices):
        by_unit.setdefault(_record_unit(ds, i), []).append(position)
    return [position for unit in split.train_units for position in by_unit.get(unit, [])]


RUN_SPLITS_FILE = "splits.json"   # the file a training run records its splits in (engine.run_folder.SPLITS)


def save_splits(path: Union[str, Path], splits: Dict[str, Split]) -> None:
    """Write the splits of a run as JSON, naming units (not indices) so the file survives re-ordering."""
    payload = {
        "format": SPLIT_FILE_FORMAT,
        "version": SPLIT_FILE_VERSION,
        # "val" only where there is a validation part: a run without one writes the file it always wrote
        "splits": {key: {"seed": s.seed, "split_by": s.split_by, "train": list(s.train_units),
                         "test": list(s.test_units), **({"val": list(s.val_units)} if s.val_units else {})}
                   for key, s in splits.items()},
    }
    write_json(path, payload)


def load_splits(path: Union[str, Path]) -> Dict[str, dict]:
    """Read a split file: {key: {"seed", "split_by", "train", "test", "val"}} ("val" empty without a validation
    part)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"split file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise SplitError(f"split file {path} is not valid JSON: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != SPLIT_FILE_FORMAT:
        raise SplitError(f"{path} is not a PromptIQA split file (expected \"format\": \"{SPLIT_FILE_FORMAT}\")")
    if payload.get("version") != SPLIT_FILE_VERSION:
        raise SplitError(f"split file {path} has version {payload.get('version')!r}; "
                         f"this code reads version {SPLIT_FILE_VERSION}")
    splits = payload.get("splits", {})
    if not isinstance(splits, dict):
        raise SplitError(f"split file {path}: 'splits' must map dataset keys to splits, got {type(splits).__name__}")
    out = {}
    for key, entry in splits.items():
        if not isinstance(entry, dict) or not all(isinstance(entry.get(side), list) and
                                                  all(isinstance(u, str) for u in entry[side])
                                                  for side in ("train", "test")):
            raise SplitError(f"split file {path}: entry '{key}' needs 'train' and 'test' lists of unit names")
        val = entry.get("val", [])
        if not isinstance(val, list) or not all(isinstance(u, str) for u in val):
            raise SplitError(f"split file {path}: entry '{key}': 'val' must be a list of unit names")
        out[key] = {"seed": entry.get("seed"), "split_by": entry.get("split_by"),
                    "train": entry["train"], "test": entry["test"], "val": val}
    return out


def recorded_split(splits: Mapping[str, Any], key: str) -> Optional[Tuple[str, Any]]:
    """(the recorded key, its entry) of ``splits`` (a split file's or a checkpoint's) that holds ``key``'s split: its
    own, else one of another requirement of its dataset (the same images and units), the dataset's own first; None."""
    base = image_set(key)
    for other in [key, base] + sorted(k for k in splits if image_set(k) == base):
        if other in splits:
            return other, splits[other]
    return None


def resolve_split(ds: DatasetRecords, seed: Optional[int] = None,
                  split_file: Union[str, Path, None] = None, val_fraction: float = 0.0) -> Split:
    """The split a run uses: from `split_file` when given (with its validation part, if it has one), else the
    official rule with `seed` (default 2024); `val_fraction` carves a validation part out of the train side."""
    if split_file is None:
        return carve_validation(ds, make_split(ds, OFFICIAL_SEED if seed is None else seed), val_fraction)
    if seed is not None:
        raise SplitError("give either a split seed or a split file, not both")
    splits = load_splits(split_file)
    found = recorded_split(splits, ds.key)
    if found is None:
        raise SplitError(f"split file {split_file} has no split for dataset '{ds.key}' "
                         f"(it has: {', '.join(sorted(splits)) or 'none'})")
    entry = found[1]
    if entry["split_by"] not in (None, ds.split_by):
        raise SplitError(f"split file {split_file}: '{ds.key}' was split by {entry['split_by']}, "
                         f"but the dataset splits by {ds.split_by}")
    split = split_from_units(ds, entry["train"], entry["test"], seed=entry["seed"], val_units=entry["val"])
    if val_fraction and split.val_units:
        # the file's own validation part stands; a fraction that would not have made it is a contradiction
        n, n_val = len(split.train_units) + len(split.val_units), len(split.val_units)
        if int(round(val_fraction * n)) != n_val:
            raise SplitError(f"split file {split_file} holds a validation part of {n_val} of the {n} training units "
                             f"of {ds.key}, not what --val_fraction {val_fraction} gives "
                             f"({int(round(val_fraction * n))}); drop --val_fraction to use the file's")
        return split
    return carve_validation(ds, split, val_fraction)
