"""The published splits: every dataset with public label files, split 80/20 at each of the ten split seeds by the
project's own split code, shipped as ``published_splits.json.gz`` beside this file; and the comparison that
``python -m promptiqa check --splits`` makes between a run's splits and them.

    python -m promptiqa publish-splits --out FILE [--data_root KEY=PATH ...] [--dataset KEY ...] [--source TEXT]

re-makes the file from the datasets' label files (no image is read). The format (version 1, gzip-compressed JSON)::

    {"format": "promptiqa-published-splits", "version": 1, "rule": "...", "train_fraction": 0.8,
     "seeds": [2024, ..., 2033], "source": "...",
     "datasets": {KEY: {"split_by": "reference" | "image", "n_units": N, "n_images": M,
                        "units": [unit names in the order the split enumerates them],
                        "images": {unit: [image names]}          (reference-split datasets only),
                        "test": {"2024": "0110...", ...}}}}      (per seed, one character per unit: 1 test, 0 train)
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from ..entry import command, program
from ..errors import run_command
from ..fileio import atomic_write, check_writable, json_text
from .records import DatasetRecords, image_set
from .registry import DATASET_KEYS, DATASET_SPECS, load_dataset, resolve_roots
from .splits import SPLIT_SEEDS, TRAIN_FRACTION, SplitError, make_split

PUBLISHED_FILE = Path(__file__).resolve().with_name("published_splits.json.gz")
FORMAT = "promptiqa-published-splits"
VERSION = 1
TEST, TRAIN = "1", "0"
RULE = ("units listed in 'units' order; random.Random(seed).shuffle(list(range(N))) (Python's random); the first "
        "int(round(train_fraction * N)) shuffled positions are train, the rest test")
# Datasets the file cannot hold, and why (every other registry key is published).
UNPUBLISHED = {"uwiqa": "its label file (IQA_Value.xlsx) is not public"}
PUBLISHED_KEYS = tuple(key for key in DATASET_KEYS if key not in UNPUBLISHED)
# Three of the public lists the shipped file was made from are third-party re-exports whose row order may not be
# the authors' (docs/datasets.md, "Published splits"); a by-image split follows label-file order, so a run on the
# authors' file can split these datasets differently.
ORDER_CAVEATS = {
    "livec": "made from a re-ordered public list (clive_all.txt): the authors' AllImages_release.mat order is not "
             "public, so a run on the authors' files splits LIVEC differently at the same seed",
    "gfiqa_20k": "made from a public re-export (GFIQA.txt) whose row order may differ from the authors' label CSV",
    "spaq": "made from a public re-export (SPAQ.txt, file-number order); the authors' workbook was not available",
}
DEFAULT_SOURCE = "the datasets' label files, read by promptiqa's loaders (labels only)"


def _unit_images(ds: DatasetRecords) -> Dict[str, List[str]]:
    """Each reference's images in label-file order."""
    images: Dict[str, List[str]] = {unit: [] for unit in ds.units}
    for record in ds.records:
        images[record.reference].append(record.name)
    return images


def publish_splits(datasets: Sequence[DatasetRecords], seeds: Sequence[int] = SPLIT_SEEDS,
                   source: str = DEFAULT_SOURCE) -> dict:
    """The published-splits document of `datasets` at `seeds`: each dataset's units and, per seed, its test mask."""
    entries = {}
    for ds in datasets:
        entry = {"split_by": ds.split_by, "n_units": len(ds.units), "n_images": len(ds.records),
                 "units": list(ds.units)}
        if ds.split_by == "reference":
            entry["images"] = _unit_images(ds)
        else:
            _match_index(ds.key, ds.units, ds.split_by)   # by-image units are matched by file name: refuse clashes
        entry["test"] = {}
        for seed in seeds:
            test = set(make_split(ds, seed).test_units)
            entry["test"][str(seed)] = "".join(TEST if unit in test else TRAIN for unit in ds.units)
        entries[ds.key] = entry
    return {"format": FORMAT, "version": VERSION, "rule": RULE, "train_fraction": TRAIN_FRACTION,
            "seeds": [int(s) for s in seeds], "source": source, "datasets": entries}


def encode(document: Mapping) -> bytes:
    """The document as gzip bytes that depend on its content only (no time or file name in the gzip header)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as fh:
        fh.write(json_text(document, compact=True).encode("utf-8") + b"\n")
    return buffer.getvalue()


def read_published(path: Union[str, Path] = PUBLISHED_FILE) -> dict:
    """Read and validate a published-splits file (default: the one shipped with the package)."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            document = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"published splits file not found: {path}") from None
    except (OSError, EOFError, ValueError) as err:
        raise SplitError(f"{path} is not a readable published-splits file (gzip-compressed JSON): {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SplitError(f"{path} is not a published-splits file (expected \"format\": \"{FORMAT}\")")
    if document.get("version") != VERSION:
        raise SplitError(f"{path} has version {document.get('version')!r}; this code reads version {VERSION}")
    seeds = [str(s) for s in document.get("seeds", [])]
    for key, entry in document.get("datasets", {}).items():
        units = entry.get("units") if isinstance(entry, dict) else None
        masks = entry.get("test") if isinstance(entry, dict) else None
        if not isinstance(units, list) or not isinstance(masks, dict) or sorted(masks) != sorted(seeds) or any(
                not isinstance(m, str) or len(m) != len(units) or set(m) - {TEST, TRAIN} for m in masks.values()):
            raise SplitError(f"{path}: dataset '{key}' needs 'units' and, for each of the seeds {', '.join(seeds)}, "
                             f"a 'test' string of 0s and 1s, one per unit")
    return document


def _match_name(unit: str, split_by: str) -> str:
    # A by-image unit is the image's path under the dataset root, whose folder depends on the layout (SPAQ's
    # TestImage/ or img_resize/): the file name identifies the image. References have no folder.
    return unit.rsplit("/", 1)[-1] if split_by == "image" else unit


def _match_index(key: str, units: Sequence[str], split_by: str) -> Dict[str, int]:
    index: Dict[str, int] = {}
    for i, unit in enumerate(units):
        if index.setdefault(_match_name(unit, split_by), i) != i:
            raise SplitError(f"dataset '{key}': two units share the file name {_match_name(unit, split_by)!r}, so "
                             f"the published splits cannot name images by file name")
    return index


@dataclass
class Comparison:
    """One dataset of a run compared with the published splits."""

    key: str
    seed: Optional[int]                 # the seed the run recorded (None: none)
    published: bool                     # False: the file holds no split of this dataset
    equal: bool = False
    compared_seed: Optional[int] = None  # the published seed compared with (the recorded one, else the closest)
    split_by: Optional[str] = None
    units: int = 0                      # the published dataset's units and images
    images: int = 0
    other_side_units: int = 0           # units on the other side of the split than published
    other_side_images: int = 0          # their images
    missing: int = 0                    # published units the run has on neither side
    missing_images: int = 0             # their images
    unknown: int = 0                    # the run's units that the published dataset does not have
    unknown_examples: List[str] = field(default_factory=list)   # the first few of them
    notes: List[str] = field(default_factory=list)

    @property
    def differing_images(self) -> int:
        """The published dataset's images that the run puts on the other side, or on neither."""
        return self.other_side_images + self.missing_images


def _difference(mask: str, train: Sequence[int], test: Sequence[int], weights: Sequence[int]):
    wrong = [i for i in test if mask[i] == TRAIN] + [i for i in train if mask[i] == TEST]
    return len(wrong), sum(weights[i] for i in wrong)


def compare_split(key: str, entry: Mapping, document: Mapping) -> Comparison:
    """Compare one recorded split ({"seed", "split_by", "train", "test"[, "val"]}, as in a split file) with the
    published; a validation part ("val", --val_fraction) belongs to the train side it was carved from."""
    seed = entry.get("seed")
    result, key = Comparison(key, seed, False), image_set(key)   # a requirement's split is its dataset's
    published = document["datasets"].get(key)
    result.published = published is not None
    if published is None:
        result.notes.append(f"not published: {UNPUBLISHED[key]}" if key in UNPUBLISHED else
                            "not published (not one of the built-in datasets)" if key not in DATASET_SPECS else
                            "not published: the published splits file has no split of it")
        return result
    split_by, units = published["split_by"], published["units"]
    result.split_by, result.units, result.images = split_by, len(units), published["n_images"]
    if entry.get("split_by") not in (None, split_by):
        result.notes.append(f"split by {entry['split_by']}, the published split is by {split_by}")
        return result
    weights = [len(published["images"][u]) for u in units] if split_by == "reference" else [1] * len(units)
    index = _match_index(key, units, split_by)
    sides, unknown = {}, []
    for side in ("train", "test"):
        # a --val_fraction run's validation part was carved out of the seed's train side: it counts there
        names = list(entry.get(side) or []) + (list(entry.get("val") or []) if side == "train" else [])
        sides[side] = [index[_match_name(n, split_by)] for n in names if _match_name(n, split_by) in index]
        unknown += [n for n in names if _match_name(n, split_by) not in index]
    result.unknown, result.unknown_examples = len(unknown), unknown[:5]
    present = set(sides["train"]) | set(sides["test"])
    missing = [i for i in range(len(units)) if i not in present]
    result.missing, result.missing_images = len(missing), sum(weights[i] for i in missing)

    seeds = [int(s) for s in document["seeds"]]
    candidates = [seed] if seed in seeds else seeds
    scored = [(_difference(published["test"][str(s)], sides["train"], sides["test"], weights), s) for s in candidates]
    (result.other_side_units, result.other_side_images), result.compared_seed = min(scored, key=lambda x: x[0][1])
    result.equal = result.differing_images == 0 and not result.unknown
    if seed not in seeds:
        recorded = "records no seed" if seed is None else f"records seed {seed}, not one of the published seeds"
        result.notes.append(f"the split {recorded}; " + (f"it equals the published seed {result.compared_seed}"
                            if result.equal else f"closest published seed: {result.compared_seed}"))
    if not result.equal and key in ORDER_CAVEATS:
        result.notes.append(f"the published split was {ORDER_CAVEATS[key]}")
    return result


def compare_splits(splits: Mapping[str, Mapping], document: Optional[Mapping] = None) -> List[Comparison]:
    """Compare every dataset's recorded split with the published splits (default: the shipped file)."""
    document = read_published() if document is None else document
    return [compare_split(key, entry, document) for key, entry in splits.items()]


# ---------------------------------------------------------------- the publish-splits command

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog=program(command("publish-splits")),
                                     description="write the published splits (80/20 at each split seed) of datasets "
                                                 "from their label files; no image is read")
    parser.add_argument("--out", required=True, help="the file to write (gzip-compressed JSON, e.g. "
                                                     "promptiqa/data/published_splits.json.gz)")
    parser.add_argument("--dataset", nargs="+", default=list(PUBLISHED_KEYS), choices=DATASET_KEYS, metavar="KEY",
                        help=f"the datasets (default: {' '.join(PUBLISHED_KEYS)})")
    parser.add_argument("--data_root", action="append", default=[], metavar="KEY=PATH",
                        help="a dataset's root (repeatable); else $PROMPTIQA_DATA/KEY, configs/datasets.yaml, "
                             "data/KEY")
    parser.add_argument("--config", default=None, help="a datasets YAML (key: path) instead of configs/datasets.yaml")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="where the label files came from (recorded)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write the published-splits file of the chosen datasets; returns the exit status."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        check_writable(args.out, "--out")
        roots = resolve_roots(args.dataset, config=args.config, overrides=args.data_root)
        datasets = [load_dataset(key, roots[key], check_images=False) for key in args.dataset]
        data = encode(publish_splits(datasets, source=args.source))
        atomic_write(args.out, lambda fh: fh.write(data), binary=True)
        print(f"wrote {args.out}: {len(datasets)} datasets x {len(SPLIT_SEEDS)} seeds "
              f"({', '.join(ds.key for ds in datasets)}), {len(data) / 1024:.0f} KiB")
        return 0

    return run_command(run)


if __name__ == "__main__":   # an alias: the registered command under this module's name (docs/architecture.md)
    from promptiqa.cli import main as registry

    sys.exit(registry(["publish-splits", *sys.argv[1:]], prog="python -m promptiqa.data.published"))
