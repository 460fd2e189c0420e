"""Make a dataset's image cache once, before training: every image decoded and resized into one memory map.

    python -m promptiqa.data.prepare --dataset koniq10k --root /data/koniq-10k --cache_dir /data/cache -j 8
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..errors import ConfigError, run_command
from .cache import prepare_cache
from .images import DEFAULT_IMAGE_SIZE


def build_parser() -> argparse.ArgumentParser:
    """The prepare command's command line."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="registry key, e.g. koniq10k")
    parser.add_argument("--root", required=True, help="the dataset's root folder")
    parser.add_argument("--cache_dir", required=True, help="folder that holds the caches (<key>_<size>/ inside)")
    parser.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE, help="side of the square images")
    parser.add_argument("-j", "--workers", type=int, default=0, help="decoding threads (0: the main thread)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the command line, load the dataset's records and prepare its cache."""
    parser = build_parser()
    args = parser.parse_args(argv)

    from .registry import load_dataset  # imported here so the cache library does not depend on the loaders

    def run() -> int:
        if args.image_size < 1 or args.workers < 0:
            raise ConfigError(f"--image_size must be at least 1 and --workers at least 0, got {args.image_size} and "
                              f"{args.workers}")
        ds = load_dataset(args.dataset, args.root)
        path = prepare_cache(ds, args.image_size, args.cache_dir, workers=args.workers)
        print(f"{ds.key}: {len(ds.records)} images at {args.image_size}px cached in {path}")
        return 0

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
