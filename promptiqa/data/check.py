"""Validate a dataset root before training: counts, score range, label type, and every problem found; or whether
a run's splits equal the published ones (promptiqa.data.published).

    python -m promptiqa.data.check --dataset live --root /datasets/databaserelease2 [--no-images] [--json]
    python -m promptiqa.data.check --splits RUN_FOLDER | SPLIT_FILE.json | CHECKPOINT [--json]

(an alias of ``promptiqa check``: promptiqa/commands/check.py registers this module's options and run).

Exit status 0 when the dataset is complete (the splits equal the published ones), 1 when a problem was found (a
split differs), 2 for a usage error. With --json the last line of output is one JSON object (dataset, images,
references, score_min, score_max, ..., problems, ok; for --splits: splits, published, datasets, ok).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from promptiqa.data.formats.common import DatasetError, image_file_problem
from promptiqa.data.labels import normalise_labels, official_rule
from promptiqa.data.published import PUBLISHED_FILE, compare_splits, read_published
from promptiqa.data.registry import DATASET_KEYS, LABEL_NORMS, load_dataset, locate_images, spec_of
from promptiqa.data.splits import RUN_SPLITS_FILE, SplitError, load_splits
from promptiqa.entry import command, program
from promptiqa.errors import UsageError
from promptiqa.fileio import json_text



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``promptiqa check``."""
    parser.add_argument("--dataset", help=f"a registry key ({', '.join(DATASET_KEYS)}) or, with a .csv root, your "
                                          f"dataset's name; KEY:REQUIREMENT for another score column, e.g. "
                                          f"agiqa_3k:align (required unless --splits)")
    parser.add_argument("--root", help="the dataset root folder, or the label file of a csv dataset (required unless "
                                       "--splits)")
    parser.add_argument("--splits", metavar="PATH",
                        help="instead of a dataset: whether the splits of a run folder (its splits.json), a split "
                             "file or a checkpoint (its recorded splits) equal the published splits")
    parser.add_argument("--no-images", "--no_images", dest="no_images", action="store_true",
                        help="check the label files only: no image or reference folder is listed or required")
    parser.add_argument("--json", action="store_true", help="end the output with one line of JSON")
    parser.add_argument("--label_norm", choices=LABEL_NORMS, default="official",
                        help="which labels to check (official also picks LIVE's unrealigned DMOS)")
    parser.add_argument("--partial", action="store_true",
                        help="accept fewer images than the published dataset (a subset, or a test fixture)")
    parser.add_argument("--lower_is_better", action="store_true", help="csv kind: the scores are DMOS-like")


def build_parser() -> argparse.ArgumentParser:
    """The check command's command line on its own (the registry builds the same from add_arguments)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog=program("python -m promptiqa.data.check"),
                                     description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def _image_problems(paths: Sequence[str]) -> List[str]:
    """A problem line for each image among `paths` that is a folder, a truncated JPEG or that OpenCV cannot decode,
    with a progress bar on stderr."""
    import cv2
    from tqdm import tqdm

    try:  # OpenCV would print a warning per bad file; the problems list already names each one
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:
        pass
    problems = []
    for path in tqdm(paths, desc="decoding images", unit="img", file=sys.stderr, leave=False):
        problem = image_file_problem(path)
        if problem is None and cv2.imread(path, cv2.IMREAD_COLOR) is None:
            problem = "image cannot be decoded"
        if problem is not None:
            problems.append(f"{problem}: {path}")
    return problems


def inspect_dataset(key: str, root: str, label_norm: str = "official", check_images: bool = True,
                    partial: bool = False, **options) -> dict:
    """The check report as a dict (the --json object); never raises for a dataset problem."""
    report = {"dataset": key, "root": os.path.abspath(os.path.expanduser(root)), "label_norm": label_norm,
              "images": None, "references": None, "score_min": None, "score_max": None, "label_type": None,
              "higher_is_better": None, "split_by": None, "units": None, "label_min": None, "label_max": None,
              "label_rule": None, "expected_images": None, "expected_references": None, "images_checked": check_images,
              "notes": [], "problems": []}
    problems = report["problems"]
    try:
        dataset = load_dataset(key, root, label_norm=label_norm, check_images=False, **options)
    except DatasetError as error:
        problems.append(str(error))
        report["ok"] = False
        return report
    scores = [r.score for r in dataset.records]
    references = {r.reference for r in dataset.records if r.reference is not None}
    report.update(root=dataset.root, images=len(dataset.records), references=len(references),
                  score_min=min(scores), score_max=max(scores), label_type=dataset.label_type,
                  higher_is_better=dataset.higher_is_better, split_by=dataset.split_by, units=len(dataset.units),
                  notes=list(dataset.notes))
    spec = spec_of(dataset.key)
    if spec is not None:
        report.update(expected_images=spec.images, expected_references=spec.references)
        if not partial and len(dataset.records) != spec.images:
            problems.append(f"{len(dataset.records)} labelled images, the published dataset has {spec.images} "
                            "(use --partial for a subset)")
        if not partial and spec.references is not None and len(references) != spec.references:
            problems.append(f"{len(references)} references, the published dataset has {spec.references}")
    try:
        labels = normalise_labels(dataset)
        report.update(label_min=float(labels.min()), label_max=float(labels.max()))
        report["label_rule"] = official_rule(dataset) if label_norm == "official" and spec else "min-max"
    except DatasetError as error:
        problems.append(str(error))
    if check_images:
        dataset, image_problems = locate_images(dataset)
        problems.extend(image_problems)
        # Missing images and folders are reported above; check and decode the files, where locate_images found them.
        present = [r.path for r in dataset.records if os.path.isfile(r.path)]
        problems.extend(_image_problems(present))
    report["ok"] = not problems
    return report


def _print_report(report: dict) -> None:
    key = report["dataset"]
    spec = spec_of(key)
    print(f"dataset     {key}" + (f"  ({spec.title})" if spec else "  (csv kind)"))
    print(f"root        {report['root']}")
    if report["images"] is not None:
        for field in ("images", "references"):
            published = report[f"expected_{field}"]
            print(f"{field:<11} {report[field]}" + (f"  (published: {published})" if published is not None else ""))
        print(f"split unit  {report['split_by']} ({report['units']} units)")
        polarity = "higher is better" if report["higher_is_better"] else "lower is better"
        print(f"scores      {report['score_min']:g} to {report['score_max']:g}  ({report['label_type']}, {polarity})")
        if report["label_min"] is not None:
            print(f"labels      {report['label_min']:.4g} to {report['label_max']:.4g}  "
                  f"(label_norm={report['label_norm']}: {report['label_rule']}, over the whole dataset)")
        for note in report["notes"]:
            print(f"note        {note}")
        print("image check " + ("every labelled image located, checked complete and decoded"
                                if report["images_checked"] else "skipped (--no-images): label files only"))
    for problem in report["problems"]:
        print(f"PROBLEM     {problem}")
    print("OK: the dataset is complete" if report["ok"] else f"FAILED: {len(report['problems'])} problem(s)")


def recorded_splits(path: str, read_checkpoint: Optional[Callable[[str], dict]] = None) -> Dict[str, dict]:
    """The splits a run folder (its splits.json), a split file or a checkpoint records: {key: {"seed", "split_by",
    "train", "test"[, "val"]}}. Checkpoints are read by ``read_checkpoint`` (models.checkpoint's, passed in by the
    ``promptiqa check`` command: the data layer does not import the model layer)."""
    target = Path(os.path.expanduser(path))
    if not target.exists() and not path.startswith("hf:"):
        raise SplitError(f"--splits {path}: not found (expected a training run's folder, a split file .json or a "
                         f"checkpoint)")
    if target.is_dir():
        if not (target / RUN_SPLITS_FILE).is_file():
            raise SplitError(f"--splits {path}: the folder has no {RUN_SPLITS_FILE} (expected a training run's folder)")
        return load_splits(target / RUN_SPLITS_FILE)
    if target.suffix.lower() == ".json":
        return load_splits(target)
    if read_checkpoint is None:
        raise SplitError(f"--splits {path}: a checkpoint's splits are read by `{command('check')} --splits` "
                         f"(this module alone reads run folders and split files)")
    config = read_checkpoint(path).get("config")
    splits = config.get("splits") if isinstance(config, dict) else None
    if not splits:
        raise SplitError(f"--splits {path}: the checkpoint records no splits (the authors' release and "
                         f"official-format files record none; expected a checkpoint saved by this project's training)")
    return splits


def _comparison_line(c: dict) -> str:
    """One dataset's line (and its notes) of the --splits report."""
    if not c["published"]:
        return f"{c['key']:<12} {'':<10} " + "; ".join(c["notes"])
    seed = f"seed {c['compared_seed']}" if c["compared_seed"] is not None else ""
    unit = c["split_by"]
    if c["equal"]:
        what = f"equal ({c['units']} {unit}s" + (f", {c['images']} images)" if unit == "reference" else ")")
    else:
        parts = []
        if c["other_side_units"]:
            parts.append(f"{c['other_side_units']} {unit}(s)" + (f" ({c['other_side_images']} images)"
                                                                  if unit == "reference" else "") + " on the other side")
        if c["missing"]:
            parts.append(f"{c['missing']} published {unit}(s) on neither side")
        if c["unknown"]:
            parts.append(f"{c['unknown']} {unit}(s) not in the published dataset, e.g. {c['unknown_examples'][0]!r} "
                         f"(another version of the dataset, or not the real one?)")
        what = "DIFFERS" + (": " + "; ".join(parts) if parts else "")
        if c["differing_images"]:
            what += f" -> {c['differing_images']} of the {c['images']} published images differ"
    return f"{c['key']:<12} {seed:<10} {what}" + "".join(f"\n{'':<23} note: {n}" for n in c["notes"])


def check_splits(path: str, published: Optional[str] = None,
                 read_checkpoint: Optional[Callable[[str], dict]] = None) -> dict:
    """Compare the splits `path` records with the published ones; the --json report (never raises for a split
    that differs)."""
    document = read_published(published or PUBLISHED_FILE)
    comparisons = compare_splits(recorded_splits(path, read_checkpoint), document)
    compared = [c for c in comparisons if c.published]
    return {"splits": path, "published": str(published or PUBLISHED_FILE), "seeds": document["seeds"],
            "datasets": [dict(dataclasses.asdict(c), differing_images=c.differing_images) for c in comparisons],
            "compared": len(compared), "ok": bool(compared) and all(c.equal for c in compared)}


def _print_splits_report(report: dict) -> None:
    seeds = report["seeds"]
    print(f"splits of   {report['splits']}")
    print(f"published   {report['published']} (seeds {seeds[0]}..{seeds[-1]}, 80/20 by the official rule)")
    for entry in report["datasets"]:
        print(_comparison_line(entry))
    differ = sum(1 for d in report["datasets"] if d["published"] and not d["equal"])
    if report["ok"]:
        print(f"OK: the splits of all {report['compared']} published dataset(s) equal the published ones")
    elif not report["compared"]:
        print("FAILED: none of its datasets has a published split")
    else:
        print(f"FAILED: {differ} of {report['compared']} published dataset(s) differ")


def run(args: argparse.Namespace, read_checkpoint: Optional[Callable[[str], dict]] = None) -> int:
    """Run the check; returns the exit status (0 complete or equal to the published splits, 1 problems found or a
    split differs). ``read_checkpoint`` reads a checkpoint's recorded splits (``promptiqa check`` passes the model
    layer's: promptiqa/commands/check.py)."""
    if args.splits is not None and (args.dataset or args.root):
        raise UsageError("give either --splits or --dataset and --root, not both")
    if args.splits is None and not (args.dataset and args.root):
        raise UsageError("the following arguments are required: --dataset, --root (or --splits PATH)")
    if args.splits is not None:
        report = check_splits(args.splits, read_checkpoint=read_checkpoint)
        _print_splits_report(report)
    else:
        report = inspect_dataset(args.dataset, args.root, label_norm=args.label_norm, check_images=not args.no_images,
                                 partial=args.partial, **({"higher_is_better": False} if args.lower_is_better else {}))
        _print_report(report)
    if args.json:
        sys.stdout.flush()
        sys.stderr.flush()
        print(json_text(report, indent=None), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":   # an alias: the registered command under this module's name (docs/architecture.md)
    from promptiqa.cli import main

    sys.exit(main(["check", *sys.argv[1:]], prog="python -m promptiqa.data.check"))
