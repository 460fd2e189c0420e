"""``promptiqa isp``: the ISPP (image-score prompt) a dataset's train split gives, as training's evaluation and test.py
choose it, in the order the model receives them; optionally written as a prompt CSV for ``promptiqa score``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..entry import command
from ..errors import ConfigError
from ..fileio import atomic_write, csv_writer, json_text
from .labels import label_scale, normalise_labels
from .registry import LABEL_NORMS, load_dataset, refuse_overwriting_dataset
from .sampling import DEFAULT_ISP_NUM, STRATEGIES, sample_isps
from .splits import official_train_order, resolve_split


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``promptiqa isp``."""
    parser.add_argument("--dataset", required=True,
                        help="a registry key (live, csiq, ..., uwiqa) or, with a .csv --root, your dataset's name")
    parser.add_argument("--root", required=True, help="the dataset root folder, or the label file of a csv dataset")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, default=None, help="split seed (default 2024, the official)")
    which.add_argument("--split_file", default=None, help="a splits JSON (e.g. a run's splits.json) instead of --seed")
    parser.add_argument("--isp_num", type=int, default=DEFAULT_ISP_NUM, help=f"ISPP size n (default {DEFAULT_ISP_NUM})")
    parser.add_argument("--isp_strategy", choices=STRATEGIES, default="interval",
                        help="interval (default; the official 'fix') or random")
    parser.add_argument("--isp_seed", type=int, default=0, help="seed of random sampling (default 0, as test.py)")
    parser.add_argument("--label_norm", choices=LABEL_NORMS, default="official",
                        help="labels as training sees them (default official)")
    parser.add_argument("--no-images", "--no_images", dest="no_images", action="store_true",
                        help="read the label files only: no image is looked for")
    parser.add_argument("--json", action="store_true",
                        help="end the output with one line of JSON: dataset, seed, isp_num, strategy, isps")
    parser.add_argument("--out", default=None, metavar="PROMPT_CSV",
                        help="also write the ISPP as a prompt CSV (image,score, paths relative to it) for "
                             f"{command('score')} --prompt")


def run(args: argparse.Namespace) -> int:
    """Print the ISPP (and with --out write it as a prompt CSV, with --json as one JSON line) -> exit code."""
    key = args.dataset
    dataset = load_dataset(key, args.root, label_norm=args.label_norm, check_images=not args.no_images)
    if args.out:
        refuse_overwriting_dataset([("--out", args.out)], dataset, [("the --split_file", args.split_file)])
    split = resolve_split(dataset, seed=args.seed, split_file=args.split_file)
    labels = normalise_labels(dataset, split.train_indices)
    try:
        picks = sample_isps(labels, args.isp_num, args.isp_strategy, seed=args.isp_seed,
                            order=official_train_order(dataset, split))
    except ConfigError as err:
        raise ConfigError(f"{key}: --isp_num {args.isp_num}: {err}") from None
    records = [dataset.records[split.train_indices[p]] for p in picks]
    isps = [{"image": r.name, "score": r.score, "label": float(labels[p])} for r, p in zip(records, picks)]

    where = f"split file {args.split_file}" if args.split_file else f"split seed {split.seed}"
    print(f"{key}: {len(isps)} ISPs from the train split ({len(labels)} images, {where}), {args.isp_strategy} "
          f"sampling" + (f" (seed {args.isp_seed})" if args.isp_strategy == "random" else "")
          + f", label_norm {args.label_norm}; in the order the model receives them")
    width = max(len("image"), *(len(isp["image"]) for isp in isps))
    print(f"{'#':>3}  {'image':<{width}}  {'score':>12}  {'label':>10}  tied")
    for i, (isp, p) in enumerate(zip(isps, picks), 1):
        tied = int((labels == labels[p]).sum()) - 1   # other train images with the same label
        print(f"{i:>3}  {isp['image']:<{width}}  {isp['score']:>12.6g}  {isp['label']:>10.6f}  {tied or ''}")
    if args.out:
        out = Path(args.out)
        base = out.resolve().parent

        def write(fh):
            writer = csv_writer(fh)
            writer.writerow(["image", "score"])
            writer.writerows([Path(os.path.relpath(Path(r.path).resolve(), base)).as_posix(), repr(r.score)]
                             for r in records)

        atomic_write(out, write)
        low, high = label_scale(dataset, split.train_indices)
        print(f"wrote {out} ({len(records)} image-score pairs, raw scores); score images under this prompt with:")
        print(f"  {command('score')} --checkpoint CHECKPOINT --prompt {out} --score_range {low!r} {high!r} "
              f"IMAGE_OR_DIR ...")
    if args.json:
        sys.stdout.flush()
        print(json_text({"dataset": key, "seed": split.seed, "isp_num": args.isp_num,
                          "strategy": args.isp_strategy, "isps": isps}, indent=None), flush=True)
    return 0
