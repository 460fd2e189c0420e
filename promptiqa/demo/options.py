"""The demo's command-line options, kept apart from the demo itself so that ``promptiqa --help`` stays fast."""
from __future__ import annotations

import argparse

from ..config import add_options
from ..resources import shipped_config

DEFAULT_CONFIG = shipped_config("demo.yaml")   # configs/demo.yaml of the checkout, or its copy inside the wheel


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's options (``python -m promptiqa.demo`` and ``promptiqa demo``)."""
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="demo settings merged over the shipped configs/demo.yaml (default: that file alone)")
    p.add_argument("--full", action="store_true", help="the longer run of the config's 'full' section")
    p.add_argument("--save_path", help="output folder (default: the config's save_path, under the current folder)")
    add_options(p, ["device"])
    p.add_argument("--seed", type=int, help="training seed of both models (default: the config's train.seed, the "
                                            "README's first seed)")
    p.add_argument("--no_baseline", action="store_true", help="skip the w/o-prompt baseline (halves training time)")
