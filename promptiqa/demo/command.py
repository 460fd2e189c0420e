"""``promptiqa demo``: its options and how they override the demo's config. Light to import (``--help``): the demo
itself (promptiqa/demo/run.py) loads when it runs."""
from __future__ import annotations

import argparse
from typing import Any, Dict

from ..config import add_options
from ..resources import shipped_config

DEFAULT_CONFIG = shipped_config("demo.yaml")   # configs/demo.yaml of the checkout, or its copy inside the wheel


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's options (``promptiqa demo``; ``python -m promptiqa.demo`` is its alias)."""
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="demo settings merged over the shipped configs/demo.yaml (default: that file alone)")
    p.add_argument("--full", action="store_true", help="the longer run of the config's 'full' section")
    p.add_argument("--save_path", help="output folder (default: the config's save_path, under the current folder)")
    add_options(p, ["device"])
    p.add_argument("--seed", type=int, help="training seed of both models (default: the config's train.seed, the "
                                            "README's first seed)")
    p.add_argument("--no_baseline", action="store_true", help="skip the w/o-prompt baseline (halves training time)")


def overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """What the command line sets over the config files, nested as they are."""
    values: Dict[str, Any] = {}
    if args.save_path:
        values["save_path"] = args.save_path
    if args.device:
        values.setdefault("train", {})["device"] = args.device
    if args.seed is not None:
        values.setdefault("train", {})["seed"] = args.seed
    if args.no_baseline:
        values["baseline"] = False
    return values


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed options; returns the exit code."""
    from .run import Demo, DemoConfig

    Demo(DemoConfig.from_yaml(args.config, full=args.full, overrides=overrides(args))).run()
    return 0
