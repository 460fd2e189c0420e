"""Validate a dataset root before training: counts, score range, label type, and every problem found.

    python -m promptiqa.data.check --dataset live --root /datasets/databaserelease2 [--no-images] [--json]

Exit status 0 when the dataset is complete, 1 when a problem was found (2 for a usage error). With --json the last
line of output is one JSON object (dataset, images, references, score_min, score_max, ..., problems, ok).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional, Sequence

from promptiqa.data.formats.common import DatasetError, image_file_problem
from promptiqa.data.labels import normalise_labels, official_rule
from promptiqa.data.registry import DATASET_KEYS, DATASET_SPECS, LABEL_NORMS, load_dataset, locate_images
from promptiqa.errors import run_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m promptiqa.data.check", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True,
                        help=f"a registry key ({', '.join(DATASET_KEYS)}) or, with a .csv root, your dataset's name")
    parser.add_argument("--root", required=True, help="the dataset root folder, or the label file of a csv dataset")
    parser.add_argument("--no-images", "--no_images", dest="no_images", action="store_true",
                        help="check the label files only: no image or reference folder is listed or required")
    parser.add_argument("--json", action="store_true", help="end the output with one line of JSON")
    parser.add_argument("--label_norm", choices=LABEL_NORMS, default="official",
                        help="which labels to check (official also picks LIVE's unrealigned DMOS)")
    parser.add_argument("--partial", action="store_true",
                        help="accept fewer images than the published dataset (a subset, or a test fixture)")
    parser.add_argument("--lower_is_better", action="store_true", help="csv kind: the scores are DMOS-like")
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
    spec = DATASET_SPECS.get(dataset.key)
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
    spec = DATASET_SPECS.get(key)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the check; returns the exit status (0 complete, 1 problems found)."""
    args = _parser().parse_args(argv)
    options = {"higher_is_better": False} if args.lower_is_better else {}

    def run() -> int:
        report = inspect_dataset(args.dataset, args.root, label_norm=args.label_norm,
                                 check_images=not args.no_images, partial=args.partial, **options)
        _print_report(report)
        if args.json:
            sys.stdout.flush()
            sys.stderr.flush()
            print(json.dumps(report), flush=True)
        return 0 if report["ok"] else 1

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
