"""The ``python -m promptiqa`` command line: a registry of subcommands, each a set of arguments and a run function.

A subcommand is added by registering a Command in COMMANDS; its run function imports what it needs (so
``--help`` stays fast) and returns an exit code. Errors follow promptiqa.errors' rule: a user error is one
``error: ...`` line with exit code 1 (``--verbose`` shows the full message and traceback), a usage error 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from promptiqa.devices import AMP_MODES
from promptiqa.errors import run_command


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, a function adding its arguments, and a function running it (-> exit code)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------------------------------
# score


def _add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files, or folders scanned recursively for jpg, jpeg, png, bmp, tif, tiff, webp")
    parser.add_argument("--checkpoint", required=True,
                        help="official release file (best_model.pth.tar) or a checkpoint saved by this project")
    parser.add_argument("--prompt", required=True,
                        help="the requirement: a CSV with columns image,score (paths relative to the CSV), the "
                             "official demo's JSON, or a prompt file saved with --save_prompt")
    parser.add_argument("--prompt_id", default=None, help="which prompt of a JSON file holding several (Example_id)")
    parser.add_argument("--out", default=None, help="output CSV image,score (default: standard output)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--backbone", default=None,
                        help="timm backbone of an official-format file that does not record it "
                             "(default vit_base_patch8_224)")
    parser.add_argument("--score_range", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                        help="range of the prompt's score scale (default: the prompt's min and max; 0 1 for JSON)")
    parser.add_argument("--lower_is_better", action="store_true", help="the prompt's scores are DMOS-like")
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding processes (default: min(4, CPU count) for more than one batch of images; "
                             "0 decodes in the main process)")
    parser.add_argument("--amp", choices=sorted(AMP_MODES), default=None, help="run the model under bfloat16 autocast")
    parser.add_argument("--save_prompt", default=None, metavar="PATH",
                        help="also save the encoded prompt here, to reuse it later as --prompt PATH without images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary on standard error")


def _run_score(args: argparse.Namespace) -> int:
    import csv
    import io

    from promptiqa.fileio import atomic_write, check_writable, refuse_overwriting_inputs
    from promptiqa.predict import (ImageError, Predictor, PredictorError, PromptError, ScoreScale, find_images,
                                   is_saved_prompt, read_prompt_pairs)

    if args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        raise PredictorError("--batch_size must be at least 1 and --workers at least 0")
    if args.score_range is not None:
        ScoreScale(*args.score_range)  # refuses LO >= HI before anything slow happens
    prompt_path = Path(args.prompt)
    saved_prompt = is_saved_prompt(prompt_path)
    # Everything that can be checked without the model is checked first: loading a checkpoint takes a while.
    pairs = None
    if saved_prompt:
        if args.score_range is not None or args.lower_is_better or args.prompt_id is not None:
            raise PromptError(f"{prompt_path} is a saved prompt, which records its own score scale: --score_range, "
                              f"--lower_is_better and --prompt_id apply to CSV and JSON prompts only")
    else:
        pairs = read_prompt_pairs(prompt_path, args.prompt_id)
    images = find_images(args.images)
    # Outputs are checked before the model loads and any image is scored (5 s per image on a CPU for the official
    # model): a result must never replace an input, and an unwritable path must not waste the run.
    outputs = [("--out", args.out), ("--save_prompt", args.save_prompt)]
    for option, path in outputs:
        if path is not None:
            check_writable(path, option)
    refuse_overwriting_inputs(outputs, [("the checkpoint", args.checkpoint), ("the prompt file", prompt_path)]
                              + [("a prompt image", path) for path in (pairs.images if pairs else [])]
                              + [("an input image", path) for path in images])

    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, backbone=args.backbone, amp=args.amp)
    if pairs is None:
        predictor.load_prompt(prompt_path, name="default")
    else:
        try:
            predictor.set_prompt(pairs.images, pairs.scores, score_range=args.score_range or pairs.score_range,
                                 higher_is_better=not args.lower_is_better, batch_size=args.batch_size)
        except (PromptError, ImageError) as err:
            # name the prompt file, and the row or entry when the error is about one pair
            where = pairs.origins[err.index] if err.index is not None else str(prompt_path)
            raise type(err)(f"{where}: {err}") from None
    if args.save_prompt:
        predictor.save_prompt(args.save_prompt)

    start = time.perf_counter()
    progress = not args.quiet and len(images) > args.batch_size
    scores = predictor.score(images, batch_size=args.batch_size, workers=args.workers, progress=progress)
    elapsed = time.perf_counter() - start

    def write(fh):
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["image", "score"])
        writer.writerows([str(path), f"{value:.6f}"] for path, value in zip(images, scores))

    if args.out:
        atomic_write(Path(args.out), write)
    else:  # everything is scored before the first line is printed, so an error never leaves half a table
        buffer = io.StringIO()
        write(buffer)
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
    if not args.quiet:
        where = f" -> {args.out}" if args.out else ""
        print(f"scored {len(images)} images in {elapsed:.1f} s ({len(images) / max(elapsed, 1e-9):.2f} images/s, "
              f"{predictor.device}){where}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------------------------
# isp


def _add_isp_arguments(parser: argparse.ArgumentParser) -> None:
    from promptiqa.data.registry import LABEL_NORMS
    from promptiqa.data.sampling import STRATEGIES

    parser.add_argument("--dataset", required=True,
                        help="a registry key (live, csiq, ..., uwiqa) or, with a .csv --root, your dataset's name")
    parser.add_argument("--root", required=True, help="the dataset root folder, or the label file of a csv dataset")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, default=None, help="split seed (default 2024, the official)")
    which.add_argument("--split_file", default=None, help="a splits JSON (e.g. a run's splits.json) instead of --seed")
    parser.add_argument("--isp_num", type=int, default=10, help="ISPP size n (default 10)")
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
                             "python -m promptiqa score --prompt")


def _run_isp(args: argparse.Namespace) -> int:
    import csv
    import json
    import os

    from promptiqa.data.labels import label_scale, normalise_labels
    from promptiqa.data.registry import load_dataset
    from promptiqa.data.sampling import sample_isps
    from promptiqa.data.splits import official_train_order, resolve_split
    from promptiqa.errors import ConfigError
    from promptiqa.fileio import atomic_write

    key = args.dataset
    dataset = load_dataset(key, args.root, label_norm=args.label_norm, check_images=not args.no_images)
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
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["image", "score"])
            writer.writerows([Path(os.path.relpath(Path(r.path).resolve(), base)).as_posix(), repr(r.score)]
                             for r in records)

        atomic_write(out, write)
        low, high = label_scale(dataset, split.train_indices)
        print(f"wrote {out} ({len(records)} image-score pairs, raw scores); score images under this prompt with:")
        print(f"  python -m promptiqa score --checkpoint CHECKPOINT --prompt {out} --score_range {low!r} {high!r} "
              f"IMAGE_OR_DIR ...")
    if args.json:
        sys.stdout.flush()
        print(json.dumps({"dataset": key, "seed": split.seed, "isp_num": args.isp_num,
                          "strategy": args.isp_strategy, "isps": isps}), flush=True)
    return 0


COMMANDS: Dict[str, Command] = {
    "score": Command("score images under a requirement given as image-score pairs", _add_score_arguments,
                     _run_score),
    "isp": Command("show the ISPP (image-score prompt) a dataset's train split gives, as training's evaluation "
                   "and test.py choose it", _add_isp_arguments, _run_isp),
}


# --------------------------------------------------------------------------------------------------------------
# dispatcher


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    from promptiqa import __version__

    parser = argparse.ArgumentParser(prog="python -m promptiqa",
                                     description="PromptIQA: image quality under requirements given as prompts.")
    parser.add_argument("--version", action="version", version=f"promptiqa {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="on errors, show the full message and traceback")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help, parents=[common])
        command.add_arguments(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: argparse has printed what it had to
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    return run_command(lambda: COMMANDS[args.command].run(args), verbose=args.verbose)


def run(argv: Optional[List[str]] = None) -> None:
    """Console entry point: exit with ``main``'s code."""
    sys.exit(main(argv))
