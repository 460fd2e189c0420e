"""How the user started this process, so usage lines and the commands messages suggest read as they would type them:
``promptiqa score`` under the console command, ``python -m promptiqa score`` otherwise, ``python train.py`` for a
script. promptiqa.cli sets ``sys.argv[0]`` to the program name while it runs a command (argparse reads it there).
"""
from __future__ import annotations

import os
import sys

CONSOLE = "promptiqa"                 # the console command (pyproject.toml's [project.scripts])
MODULE = "python -m promptiqa"        # the same commands without it (a checkout, or PYTHONPATH)


def _argv0() -> str:
    return sys.argv[0] if sys.argv and sys.argv[0] else ""


def launcher() -> str:
    """How registered commands start in this process: "promptiqa" when it was started by the console command (or
    promptiqa.cli runs a command under that name), else "python -m promptiqa"."""
    first = os.path.basename(_argv0()).split(" ")[0]
    for suffix in (".exe", "-script.py"):   # Windows' console launchers
        first = first[:-len(suffix)] if first.endswith(suffix) else first
    return CONSOLE if first == CONSOLE else MODULE


def command(name: str) -> str:
    """The registered command ``name`` as the user would type it here: "promptiqa score", "python -m promptiqa score"."""
    return f"{launcher()} {name}"


def program(module_form: str) -> str:
    """The program name a module's own parser shows: ``module_form`` ("python -m promptiqa.data.check") when the
    module runs itself (``sys.argv[0]`` is its file), else the name promptiqa.cli or a script gave the command."""
    argv0 = _argv0()
    return module_form if not argv0 or os.path.isfile(argv0) else argv0

