"""``promptiqa score``: score images under a requirement given as image-score pairs (promptiqa.predict does the
work). Light to import: the model, torch and the image code load when the command runs."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from promptiqa.config import add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``promptiqa score``."""
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files, or folders scanned recursively for jpg, jpeg, png, bmp, tif, tiff, webp "
                             "(a file found in a folder that cannot be decoded is skipped with a warning; a file "
                             "named here that cannot be read is an error)")
    parser.add_argument("--checkpoint", required=True,
                        help="official release file (best_model.pth.tar), a checkpoint saved by this project, or "
                             "hf:REPO[/FILE][@REVISION] (hf:Zevin2023/PromptIQA: the authors' release, downloaded "
                             "once)")
    parser.add_argument("--prompt", required=True, action="append", metavar="PROMPT",
                        help="the requirement: a CSV with columns image,score (paths relative to the CSV), the "
                             "official demo's JSON, or a prompt file saved with --save_prompt; repeat it to score "
                             "under several requirements at once (one output column each, named after the file)")
    parser.add_argument("--prompt_id", default=None,
                        help="which prompt of a JSON file holding several (Example_id); applies to every JSON prompt")
    parser.add_argument("--out", default=None,
                        help="output CSV image,score, or image,<prompt file stem>,... for several prompts (default: "
                             "standard output); written whole or not at all")
    parser.add_argument("--strict", action="store_true",
                        help="fail when a file found in a folder cannot be decoded, instead of skipping it")
    parser.add_argument("--batch_size", type=int, default=8)
    add_options(parser, ["device"])
    parser.add_argument("--backbone", default=None,
                        help="timm backbone of an official-format file that does not record it "
                             "(default vit_base_patch8_224)")
    parser.add_argument("--score_range", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                        help="range of the prompts' score scale (default: each prompt's min and max; 0 1 for JSON); "
                             "applies to every CSV and JSON prompt")
    parser.add_argument("--lower_is_better", action="store_true",
                        help="the prompts' scores are DMOS-like; applies to every CSV and JSON prompt")
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding processes (default, for more than one batch of images: none on up to 2 "
                             "cores, else half the cores, at most 4; 0 decodes in the main process)")
    add_options(parser, ["amp"])
    parser.add_argument("--save_prompt", default=None, metavar="PATH",
                        help="also save the encoded prompt here (one --prompt only), to reuse it later as --prompt "
                             "PATH without images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary on standard error")


def run(args: argparse.Namespace) -> int:
    """Check every input and output, load the model, score the images, write the table (-> exit code)."""
    import io

    from promptiqa.fileio import atomic_write, check_writable, csv_writer, refuse_overwriting_inputs
    from promptiqa.predict import (DEFAULT_PROMPT, NO_CHECK_FOR_SAVED_PROMPT, ImageError, Predictor, PredictorError,
                                   PromptError, ScoreScale, find_images, is_saved_prompt, read_prompt_pairs,
                                   resolve_device)

    if args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        raise PredictorError("--batch_size must be at least 1 and --workers at least 0")
    if args.score_range is not None:
        ScoreScale(*args.score_range)  # refuses LO >= HI before anything slow happens
    device = resolve_device(args.device)  # cuda:1 on a one-GPU machine, mps off a Mac: refused before the model loads
    prompt_paths = [Path(p) for p in args.prompt]
    columns = ["score"] if len(prompt_paths) == 1 else [p.stem for p in prompt_paths]
    names = [DEFAULT_PROMPT] if len(prompt_paths) == 1 else columns   # a saved single prompt keeps the usual name
    if len(set(columns)) < len(columns) or "image" in columns:
        raise PromptError(f"several --prompt files give their output columns their file names without suffix, and "
                          f"these clash ({', '.join(map(str, prompt_paths))} -> {', '.join(columns)}; 'image' is "
                          f"taken): rename one")
    if args.save_prompt and len(prompt_paths) > 1:
        raise PromptError(f"--save_prompt saves one prompt, but {len(prompt_paths)} --prompt files were given")
    saved = [is_saved_prompt(path) for path in prompt_paths]
    # Everything that can be checked without the model is checked first: loading a checkpoint takes a while.
    if all(saved) and (args.score_range is not None or args.lower_is_better or args.prompt_id is not None):
        raise PromptError(f"{prompt_paths[0] if len(saved) == 1 else 'every --prompt'} is a saved prompt, which "
                          f"records its own score scale: --score_range, --lower_is_better and --prompt_id apply to "
                          f"CSV and JSON prompts only")
    any_json = any(path.suffix.lower() == ".json" for path in prompt_paths)
    pairs = [None if is_saved else read_prompt_pairs(
        path, args.prompt_id if path.suffix.lower() == ".json" or not any_json else None)
        for path, is_saved in zip(prompt_paths, saved)]
    images = find_images(args.images)
    # Outputs are checked before the model loads and any image is scored (5 s per image on a CPU for the official
    # model): a result must never replace an input, and an unwritable path must not waste the run.
    outputs = [("--out", args.out), ("--save_prompt", args.save_prompt)]
    for option, path in outputs:
        if path is not None:
            check_writable(path, option)
    refuse_overwriting_inputs(outputs, [("the checkpoint", args.checkpoint)]
                              + [("the prompt file", path) for path in prompt_paths]
                              + [("a prompt image", path) for p in pairs if p is not None for path in p.images]
                              + [("an input image", path) for path in images])

    predictor = Predictor.from_checkpoint(args.checkpoint, device=device, backbone=args.backbone, amp=args.amp)
    for name, path, prompt_pairs in zip(names, prompt_paths, pairs):
        if prompt_pairs is None:
            predictor.load_prompt(path, name=name)
            continue
        try:
            predictor.set_prompt(prompt_pairs.images, prompt_pairs.scores, name=name,
                                 score_range=args.score_range or prompt_pairs.score_range,
                                 higher_is_better=not args.lower_is_better, batch_size=args.batch_size)
        except (PromptError, ImageError) as err:
            # name the prompt file, and the row or entry when the error is about one pair
            where = prompt_pairs.origins[err.index] if err.index is not None else str(path)
            raise type(err)(f"{where}: {err}") from None
    if args.save_prompt:
        predictor.save_prompt(args.save_prompt, name=names[0])
    if not args.quiet:   # the requirement check reuses the prompt's image features: it costs no image encoding
        for name, path, prompt_pairs in zip(names, prompt_paths, pairs):
            which = f"{path}: " if len(names) > 1 else ""
            check = NO_CHECK_FOR_SAVED_PROMPT if prompt_pairs is None else predictor.check_requirement(name).line()
            print(which + check, file=sys.stderr)

    from tqdm import tqdm

    def warn(message: str) -> None:  # above the progress bar, which stays whole
        tqdm.write(f"warning: {message}", file=sys.stderr)

    start = time.perf_counter()
    progress = not args.quiet and len(images) > args.batch_size
    result = predictor.score_files(images, prompts=names, batch_size=args.batch_size, workers=args.workers,
                                   progress=progress, strict=args.strict, warn=warn)
    elapsed = time.perf_counter() - start

    def write(fh):
        writer = csv_writer(fh)
        writer.writerow(["image", *columns])
        for i, path in enumerate(result.images):
            writer.writerow([str(path), *(f"{result.scores[name][i]:.6f}" for name in names)])

    if args.out:
        atomic_write(Path(args.out), write)
    else:  # everything is scored before the first line is printed, so an error never leaves half a table
        buffer = io.StringIO()
        write(buffer)
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
    if not args.quiet:
        where = f" -> {args.out}" if args.out else ""
        under = f" under {len(columns)} prompts" if len(columns) > 1 else ""
        print(f"scored {len(result.images)} images{under} in {elapsed:.1f} s "
              f"({len(images) / max(elapsed, 1e-9):.2f} images/s, {predictor.device}){where}", file=sys.stderr)
        for line in result.skipped_report(note=" (--strict makes this an error)"):
            print(line, file=sys.stderr)
    return 0
