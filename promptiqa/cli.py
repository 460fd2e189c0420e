"""The ``python -m promptiqa`` command line (also the ``promptiqa`` console command): the one registry of commands.

Every command lives in COMMANDS, with its help line and the extra of pyproject.toml it needs (EXTRA_MODULES: what
each extra provides), in one of two shapes: a Command names a module with ``add_arguments(parser)`` and ``run(args)
-> exit code`` (the registry builds its parser); a Delegated one names a module's ``main(argv) -> exit code`` and the
function building the parser it reads argv with (train.py's, test.py's, the experiments': they pass options through
to train.py's parser). Either runs under ``errors.run_command``. This module holds no command's code. train.py,
test.py and scripts/*.py are shims that call ``script(name)``; ``python -m promptiqa.demo``, ``.data.check``,
``.data.prepare`` and ``.data.published`` are aliases that call ``main`` with their command's name. A command's
module is imported only when it runs or its parser is built, so ``--help`` stays fast (and works without the
extra). Errors follow promptiqa.errors' rule: a user error is one ``error: ...`` line with exit code 1
(``--verbose`` shows the full message and traceback), a usage error 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

from promptiqa.entry import command as typed_command, launcher
from promptiqa.errors import EXIT_USAGE, run_command
from promptiqa.extras import EXTRA_MODULES, require_extra  # noqa: F401  (EXTRA_MODULES: the registry's extras)



@dataclass(frozen=True)
class Command:
    """One subcommand: its help line and the module holding its ``add_arguments(parser)`` and ``run(args) -> exit
    code`` (imported only when the command's parser is built, so ``--help`` stays fast), with the extra of
    pyproject.toml it needs (a key of EXTRA_MODULES; None: the core)."""

    help: str
    module: str
    extra: Optional[str] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        importlib.import_module(self.module).add_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        return importlib.import_module(self.module).run(args)


@dataclass(frozen=True)
class Delegated:
    """A subcommand whose module owns its command line: ``target`` is "module:function", a ``main(argv) -> exit
    code`` that parses the rest of the command line with the parser ``parser`` ("module:function") builds (train.py's
    options, test.py's, the experiments'). Both are imported only when the command runs or its parser is asked for."""

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


COMMANDS: Dict[str, Union[Command, Delegated]] = {
    # training and evaluating one model (train.py and test.py are shims over these)
    "train": Delegated("train PromptIQA on a mix of IQA datasets (train.py; --config YAML, torchrun, resume)",
                       "promptiqa.engine.trainer:main", extra="train", parser="promptiqa.config:build_parser"),
    "test": Delegated("evaluate a checkpoint on datasets' test splits (test.py): SROCC/PLCC, predictions, plots",
                      "promptiqa.evaluation.runner:main", extra="train",
                      parser="promptiqa.evaluation.runner:build_test_parser"),
    # scoring
    "score": Command("score images under a requirement given as image-score pairs", "promptiqa.commands.score"),
    "isp": Command("show the ISPP (image-score prompt) a dataset's train split gives, as training's evaluation "
                   "and test.py choose it", "promptiqa.data.isp", extra="train"),
    # data
    "check": Command("check that a dataset's label file and images are where and what they should be, or that "
                     "a run's splits equal the published ones (--splits)", "promptiqa.commands.check", extra="train"),
    "publish-splits": Delegated("write the published splits (every public dataset at the 10 split seeds) from "
                                "label files", "promptiqa.data.published:main", extra="train",
                                parser="promptiqa.data.published:build_parser"),
    "prepare": Command("decode a dataset's images once into a cache that training and testing read fast",
                       "promptiqa.data.prepare", extra="train"),
    # the embedded demo
    "demo": Command("the embedded demo: synthetic requirements, training, prompted evaluation (scripts/demo.sh)",
                    "promptiqa.demo.command", extra="demo"),
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
    "app": Command("serve the web page: set requirements with a few scored images, score many images in the browser",
                   "promptiqa.app.command", extra="app"),
}


# --------------------------------------------------------------------------------------------------------------
# dispatcher


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: every registered command with its help line (``command_parser`` builds the parser a
    command reads its options with, only when that command runs)."""
    from promptiqa import __version__

    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog=launcher(), description="PromptIQA: image quality under requirements given "
                                     f"as prompts. `{launcher()} COMMAND --help` documents a command's options.")
    parser.add_argument("--version", action="version", version=f"promptiqa {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, add_help=False, allow_abbrev=False)
        sub.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def command_parser(name: str, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser command ``name`` reads its command line with, built without running anything: a delegated
    command's own (a delegated command with ``rest_to`` hands what it leaves to that command's parser), else one
    made by its module's ``add_arguments``, under the program name ``prog`` (default: as typed, promptiqa.entry)."""
    command = COMMANDS[name]
    if isinstance(command, Delegated):
        return command.build_parser()
    parser = argparse.ArgumentParser(prog=prog or typed_command(name), description=command.help, allow_abbrev=False)
    parser.add_argument("--verbose", action="store_true", help="on errors, show the full message and traceback")
    command.add_arguments(parser)
    return parser


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
    name the command shows in its usage and messages (default: as typed, "promptiqa COMMAND" under the console
    command, else "python -m promptiqa COMMAND": promptiqa.entry; "python train.py" for a script, "python -m
    promptiqa.data.check" for an alias)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS.get(argv[0]) if argv else None
    if command is None:   # no command, an unknown one, --help or --version: argparse prints what it has to and exits
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
        return EXIT_USAGE
    name = prog or typed_command(argv[0])
    if isinstance(command, Delegated):
        def delegated() -> Optional[int]:
            if not {"-h", "--help"} & set(argv[1:]):   # a command's --help works without its extra
                require_extra(command.extra, name)
            return command.main()(argv[1:])

        with _program_name(name):
            return _end(run_command(delegated))
    try:
        args = command_parser(argv[0], name).parse_args(argv[1:])
    except SystemExit as exit_:  # --help and usage errors: argparse has printed what it had to
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE

    def declared() -> int:   # its extra, then its numeric options, then the command
        require_extra(command.extra, name)
        _check_numbers(args)
        return command.run(args)

    return run_command(declared, verbose=args.verbose)


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
