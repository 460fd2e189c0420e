"""Make a dataset's image cache once, before training: every image decoded and resized into one memory map.

    promptiqa prepare --dataset koniq10k --root /data/koniq-10k --cache_dir /data/cache -j 8
    (also spelt python -m promptiqa.data.prepare ...: an alias of the registered command)
"""
from __future__ import annotations

import argparse

from ..entry import program
from .cache import prepare_cache
from .images import DEFAULT_IMAGE_SIZE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``promptiqa prepare``."""
    parser.add_argument("--dataset", required=True, help="registry key, e.g. koniq10k")
    parser.add_argument("--root", required=True, help="the dataset's root folder")
    parser.add_argument("--cache_dir", required=True, help="folder that holds the caches (<key>_<size>/ inside)")
    parser.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE, help="side of the square images")
    parser.add_argument("-j", "--workers", type=int, default=0, help="decoding threads (0: the main thread)")


def build_parser() -> argparse.ArgumentParser:
    """The prepare command's command line on its own (the registry builds the same from add_arguments)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog=program("python -m promptiqa.data.prepare"),
                                     description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the dataset's records and prepare its cache (--image_size and --workers are checked by the registry's one
    table of ranges, config.NUMBER_RULES, before this runs)."""
    from .registry import load_dataset  # imported here so the cache library does not depend on the loaders

    ds = load_dataset(args.dataset, args.root)
    path = prepare_cache(ds, args.image_size, args.cache_dir, workers=args.workers)
    print(f"{ds.key}: {len(ds.records)} images at {args.image_size}px cached in {path}")
    return 0


if __name__ == "__main__":   # an alias: the registered command under this module's name (docs/architecture.md)
    import sys

    from promptiqa.cli import main

    sys.exit(main(["prepare", *sys.argv[1:]], prog="python -m promptiqa.data.prepare"))
