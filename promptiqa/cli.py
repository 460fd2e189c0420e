"""The ``python -m promptiqa`` command line (also the ``promptiqa`` console command): the one registry of commands.

Every command lives in COMMANDS: a Command (arguments declared here, a run function) or a Delegated one (its
module parses its own options: train.py's, test.py's, the experiments'), each with the extra of pyproject.toml it
needs (EXTRA_MODULES: what each extra provides). train.py, test.py and scripts/*.py are shims that call
``script(name)``. Modules are imported only when their command runs, so ``--help`` stays fast (and works without
the extra); a run function returns an exit code. Errors follow promptiqa.errors' rule: a user error is one
``error: ...`` line with exit code 1 (``--verbose`` shows the full message and traceback), a usage error 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from promptiqa.app import command as app_command
from promptiqa.config import add_options
from promptiqa.entry import command as typed_command, launcher
from promptiqa.errors import run_command
from promptiqa.extras import EXTRA_MODULES, require_extra  # noqa: F401  (EXTRA_MODULES: the registry's extras)



@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, a function adding its arguments, and a function running it (-> exit code)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    extra: Optional[str] = None   # the extra of pyproject.toml it needs (a key of EXTRA_MODULES); None: the core


@dataclass(frozen=True)
class Delegated:
    """A subcommand whose module owns its command line: ``target`` is "module:function", a ``main(argv) -> exit
    code`` that parses the rest of the command line itself (train.py's options, test.py's, ...). The module is
    imported only when the command runs, so ``python -m promptiqa --help`` stays fast."""

    help: str
    target: str
    extra: Optional[str] = None    # as Command's
    parser: Optional[str] = None   # "module:function" building the parser ``target`` reads its options with
    rest_to: Optional[str] = None  # the registered command whose parser reads the options this one's leaves

    def main(self) -> Callable[[Optional[Sequence[str]]], Optional[int]]:
        return _function(self.target)

    def build_parser(self) -> argparse.ArgumentParser:
        """The command's own parser, built without running anything."""
        return _function(self.parser)()


def _function(target: str) -> Callable:
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def check_main(argv: Optional[Sequence[str]] = None) -> int:
    """``check``: promptiqa.data.check's command, with checkpoints (``--splits CHECKPOINT``) read by the model layer's
    reader, which the data layer does not import."""
    from promptiqa.data.check import main

    def read_checkpoint(path: str) -> dict:
        from promptiqa.models.checkpoint import read_checkpoint as read

        return read(path)

    return main(argv, read_checkpoint=read_checkpoint)


# --------------------------------------------------------------------------------------------------------------
# score


def _add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files, or folders scanned recursively for jpg, jpeg, png, bmp, tif, tiff, webp "
                             "(a file found in a folder that cannot be decoded is skipped with a warning; a file "
                             "named here that cannot be read is an error)")
    parser.add_argument("--checkpoint", required=True,
                        help="official release file (best_model.pth.tar), a checkpoint saved by this project, or "
                             "hf:REPO[/FILE][@REVISION] (hf:Zevin2023/PromptIQA: the authors' release, downloaded once)")
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


def _run_score(args: argparse.Namespace) -> int:
    import csv
    import io

    from promptiqa.fileio import atomic_write, check_writable, refuse_overwriting_inputs
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
    result = predictor.score_files(args.images, prompts=names, batch_size=args.batch_size, workers=args.workers,
                                   progress=progress, strict=args.strict, warn=warn)
    elapsed = time.perf_counter() - start

    def write(fh):
        writer = csv.writer(fh, lineterminator="\n")
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


# --------------------------------------------------------------------------------------------------------------
# isp


def _add_isp_arguments(parser: argparse.ArgumentParser) -> None:
    from promptiqa.data.registry import LABEL_NORMS
    from promptiqa.data.sampling import DEFAULT_ISP_NUM, STRATEGIES

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
                             f"{typed_command('score')} --prompt")


def _run_isp(args: argparse.Namespace) -> int:
    import csv
    import os

    from promptiqa.data.labels import label_scale, normalise_labels
    from promptiqa.data.registry import load_dataset
    from promptiqa.data.sampling import sample_isps
    from promptiqa.data.splits import official_train_order, resolve_split
    from promptiqa.errors import ConfigError
    from promptiqa.data.registry import refuse_overwriting_dataset
    from promptiqa.fileio import atomic_write, json_text

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
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["image", "score"])
            writer.writerows([Path(os.path.relpath(Path(r.path).resolve(), base)).as_posix(), repr(r.score)]
                             for r in records)

        atomic_write(out, write)
        low, high = label_scale(dataset, split.train_indices)
        print(f"wrote {out} ({len(records)} image-score pairs, raw scores); score images under this prompt with:")
        print(f"  {typed_command('score')} --checkpoint CHECKPOINT --prompt {out} --score_range {low!r} {high!r} "
              f"IMAGE_OR_DIR ...")
    if args.json:
        sys.stdout.flush()
        print(json_text({"dataset": key, "seed": split.seed, "isp_num": args.isp_num,
                          "strategy": args.isp_strategy, "isps": isps}, indent=None), flush=True)
    return 0


COMMANDS: Dict[str, Union[Command, Delegated]] = {
    # training and evaluating one model (train.py and test.py are shims over these)
    "train": Delegated("train PromptIQA on a mix of IQA datasets (train.py; --config YAML, torchrun, resume)",
                       "promptiqa.engine.trainer:main", extra="train", parser="promptiqa.config:build_parser"),
    "test": Delegated("evaluate a checkpoint on datasets' test splits (test.py): SROCC/PLCC, predictions, plots",
                      "promptiqa.evaluation.runner:main", extra="train",
                      parser="promptiqa.evaluation.runner:build_test_parser"),
    # scoring
    "score": Command("score images under a requirement given as image-score pairs", _add_score_arguments,
                     _run_score),
    "isp": Command("show the ISPP (image-score prompt) a dataset's train split gives, as training's evaluation "
                   "and test.py choose it", _add_isp_arguments, _run_isp, extra="train"),
    # data
    "check": Delegated("check that a dataset's label file and images are where and what they should be, or that "
                       "a run's splits equal the published ones (--splits)", "promptiqa.cli:check_main",
                       extra="train", parser="promptiqa.data.check:build_parser"),
    "publish-splits": Delegated("write the published splits (every public dataset at the 10 split seeds) from "
                                "label files", "promptiqa.data.published:main", extra="train",
                                parser="promptiqa.data.published:build_parser"),
    "prepare": Delegated("decode a dataset's images once into a cache that training and testing read fast",
                         "promptiqa.data.prepare:main", extra="train",
                         parser="promptiqa.data.prepare:build_parser"),
    # the embedded demo
    "demo": Delegated("the embedded demo: synthetic requirements, training, prompted evaluation (scripts/demo.sh)",
                      "promptiqa.demo.run:main", extra="demo", parser="promptiqa.demo.run:build_parser"),
    # the paper's experiments that train models
    "ten-splits": Delegated("train and test on the 10 split seeds, then summarise (Table 2; scripts/ten_splits.py)",
                            "promptiqa.experiments.protocol:ten_splits_main", extra="train",
                            parser="promptiqa.experiments.protocol:build_ten_splits_parser", rest_to="train"),
    "ablation": Delegated("the ablations of Table 6 over split seeds (scripts/ablation.py)",
                          "promptiqa.experiments.protocol:ablation_main", extra="train",
                          parser="promptiqa.experiments.protocol:build_ablation_parser", rest_to="train"),
    "relabel": Delegated("relabel reference-based datasets with SSIM, FSIM and LPIPS (Table 3's new requirements)",
                         "promptiqa.experiments.relabel:relabel_main", extra="paper",
                         parser="promptiqa.experiments.relabel:build_relabel_parser"),
    # the paper's experiments on a trained checkpoint
    "relabel-eval": Delegated("Table 3: PromptIQA and the w/o-prompt baselines on relabelled requirements",
                              "promptiqa.experiments.relabel:table3_main", extra="train",
                              parser="promptiqa.experiments.relabel:build_table3_parser"),
    "adapt": Delegated("requirement adaptation: k-shot curves with bootstrap CIs, the requirement matrix, relabel "
                       "consistency (docs/adapt.md)", "promptiqa.experiments.adapt:main", extra="train",
                       parser="promptiqa.experiments.adapt:build_parser"),
    "isp-experiments": Delegated("ISPP selection (Table 4), perturbation (Table 5) and size (Fig. 3) on a "
                                 "checkpoint (scripts/isp_experiments.py)", "promptiqa.evaluation.isp:isp_main",
                                 extra="train", parser="promptiqa.evaluation.isp:build_isp_parser"),
    "summarise": Delegated("median SROCC/PLCC over split seeds in Table 2's layout (Markdown, CSV, XLSX)",
                           "promptiqa.experiments.summary:main", extra="train",
                           parser="promptiqa.experiments.summary:build_parser"),
    # measuring
    "benchmark": Delegated("training and inference images/s and peak memory of a configuration on this machine "
                           "(scripts/benchmark.py)", "promptiqa.engine.benchmark:main", extra="train",
                           parser="promptiqa.engine.benchmark:build_parser"),
    "gpu-check": Delegated("the acceptance checks for a GPU in one table: fidelity, speed, memory, resume, syncs, "
                           "recompiles (scripts/gpu_check.sh; --cpu on the CPU)", "promptiqa.engine.gpu_check:main",
                           extra="train", parser="promptiqa.engine.gpu_check:build_parser"),
    # the web app
    "app": Command(app_command.HELP, app_command.add_arguments, app_command.run, extra="app"),
}


# --------------------------------------------------------------------------------------------------------------
# dispatcher


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command (a delegated command's subparser only
    lists it: its own module parses its options)."""
    from promptiqa import __version__

    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog=launcher(), description="PromptIQA: image quality under requirements given "
                                     f"as prompts. `{launcher()} COMMAND --help` documents a command's options.")
    parser.add_argument("--version", action="version", version=f"promptiqa {__version__}")
    common = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    common.add_argument("--verbose", action="store_true", help="on errors, show the full message and traceback")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        if isinstance(command, Delegated):
            sub = subparsers.add_parser(name, help=command.help, add_help=False, allow_abbrev=False)
            sub.add_argument("arguments", nargs=argparse.REMAINDER)
        else:
            sub = subparsers.add_parser(name, help=command.help, description=command.help, parents=[common],
                                        allow_abbrev=False)
            command.add_arguments(sub)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser command ``name`` reads its command line with, built without running anything: a delegated
    command's own, else its subparser here. (A delegated command with ``rest_to`` hands what it leaves to that
    command's parser.)"""
    command = COMMANDS[name]
    if isinstance(command, Delegated):
        return command.build_parser()
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[name]


@contextlib.contextmanager
def _program_name(name: str):
    """Show ``name`` as the program in a delegated command's usage and error lines: its module's parser takes
    the program name from sys.argv[0] (as it does when run as a script)."""
    saved = sys.argv[0] if sys.argv else ""
    if sys.argv:
        sys.argv[0] = name
    else:
        sys.argv.append(name)
    try:
        yield
    finally:
        sys.argv[0] = saved


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit code. ``prog`` is the program
    name a delegated command shows in its usage (default: as typed, "promptiqa COMMAND" under the console command,
    else "python -m promptiqa COMMAND": promptiqa.entry)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS.get(argv[0]) if argv else None
    if isinstance(command, Delegated):
        name = prog or typed_command(argv[0])

        def delegated() -> Optional[int]:
            if not {"-h", "--help"} & set(argv[1:]):   # a command's --help works without its extra
                require_extra(command.extra, name)
            return command.main()(argv[1:])

        with _program_name(name):
            return _end(run_command(delegated))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: argparse has printed what it had to
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    return run_command(lambda: _run(args), verbose=args.verbose)


def _run(args: argparse.Namespace) -> int:
    """A command declared here: its extra, then its numeric options, then the command."""
    chosen = COMMANDS[args.command]
    require_extra(chosen.extra, typed_command(args.command))
    _check_numbers(args)
    return chosen.run(args)


def _check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option of a command declared here against the one table of ranges (config.NUMBER_RULES), as
    train.py's and test.py's are checked: ``isp --seed -1`` or ``score --workers 100000`` is one line."""
    from promptiqa.config import check_number

    for name, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            check_number(name, v)


def _end(code: int) -> int:
    """``code``; a process that was a rank of a distributed job ends here instead (promptiqa.distributed.end_process:
    no interpreter shutdown for gloo's threads to abort). Only a module that ran a job has imported that one."""
    distributed = sys.modules.get("promptiqa.distributed")
    return distributed.end_process(code) if distributed is not None else code


def run(argv: Optional[List[str]] = None) -> None:
    """Console entry point: exit with ``main``'s code."""
    sys.exit(main(argv))


def script(command: str) -> None:
    """The whole body of train.py, test.py and scripts/*.py: run the registered ``command`` with the script's
    arguments, under the script's own name ("python train.py"; argparse shows a program's file name, not its folder),
    and exit with its code."""
    import os

    sys.exit(main([command, *sys.argv[1:]], prog=f"python {os.path.basename(sys.argv[0])}"))
