#!/usr/bin/env python
"""Images/s of the two input paths, single process: direct (decode + resize + to_chw) and cache (memmap + to_chw), the
cost of the truncated-JPEG check the direct path makes before each decode, and the training loader on the cache
(ImageLoader batches of --batch_size uint8 images from --workers processes; MiB per batch as it crosses to the device).

    python scripts/benchmark_data.py                       # 200 synthetic 1024x768 JPEGs (KonIQ's size), quality 90
    python scripts/benchmark_data.py --images DIR -n 500   # the first 500 images of a folder of your own
    python scripts/benchmark_data.py --min_speedup 5       # exit 1 if the cache is not at least 5x the direct path
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from promptiqa.data.cache import ImageCache, prepare_cache
from promptiqa.data.formats.common import image_file_problem
from promptiqa.data.images import ImageLoader, IQAImages, read_image, to_chw
from promptiqa.data.records import DatasetRecords, Record
from promptiqa.data.synthetic_photos import write_synthetic_jpegs


def folder_records(paths: Sequence[Path], key: str = "benchmark") -> DatasetRecords:
    """Wrap image files as an image-split dataset with dummy scores, so they can be cached."""
    records = [Record(p.name, str(p), 0.0, None) for p in paths]
    root = str(Path(paths[0]).parent)
    return DatasetRecords(key, root, records, "image", [r.name for r in records], "MOS", True, "minmax")


def images_per_second(load, n: int, repeats: int = 1) -> float:
    """Best-of-`repeats` throughput of load(i) for i in range(n)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            load(i)
        best = min(best, time.perf_counter() - start)
    return n / best


def loader_images_per_second(cache: ImageCache, batch_size: int, workers: int, repeats: int = 1):
    """Best-of-`repeats` images/s of an ImageLoader over the whole cache, and the bytes of its largest batch's
    images. Its workers persist, as training's do: the first pass also times their start."""
    data = IQAImages(cache, np.zeros(len(cache)), cache.image_size)
    loader = ImageLoader(data, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)
    best, batch_bytes = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        for images, _, _ in loader:
            batch_bytes = max(batch_bytes, images.numel() * images.element_size())
        best = min(best, time.perf_counter() - start)
    return len(data) / best, batch_bytes


def benchmark(paths: Sequence[Path], image_size: int, cache_dir: Path, repeats: int = 1, batch_size: int = 66,
              workers: int = 2) -> dict:
    """Measure both paths and the loader on `paths`; the cache is prepared first (not timed)."""
    ds = folder_records(paths)
    cache = ImageCache(prepare_cache(ds, image_size, cache_dir))
    cache[0]  # map the file before timing
    direct = images_per_second(lambda i: to_chw(read_image(paths[i], image_size)), len(paths), repeats)
    cached = images_per_second(lambda i: to_chw(cache[i]), len(paths), repeats)
    check = images_per_second(lambda i: image_file_problem(paths[i]), len(paths), repeats)
    loader, batch_bytes = loader_images_per_second(cache, batch_size, workers, repeats)
    return {"images": len(paths), "direct": direct, "cache": cached, "speedup": cached / direct,
            "check_us": 1e6 / check, "check_share": direct / check, "loader": loader, "batch_mib": batch_bytes / 2**20}


def build_parser() -> argparse.ArgumentParser:
    """This script's command line."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="a folder of images (default: synthetic 1024x768 JPEGs)")
    parser.add_argument("-n", type=int, default=200, help="number of images")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="timing passes; the best is reported")
    parser.add_argument("--batch_size", type=int, default=66, help="loader batch (default 66: the paper's step)")
    parser.add_argument("-j", "--workers", type=int, default=2, help="loader worker processes (0: the main one)")
    parser.add_argument("--min_speedup", type=float, default=None,
                        help="fail (exit 1) when the cache is less than this many times faster than decoding")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print a one-row table: images, source size, direct and cache images/s, speed-up; 1 below --min_speedup."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.workers < 0:
        parser.error(f"--batch_size must be at least 1 and --workers at least 0, got {args.batch_size} and "
                     f"{args.workers}")

    with tempfile.TemporaryDirectory() as tmp:
        if args.images:
            paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
            paths = paths[:args.n]
            if not paths:
                parser.error(f"no images in {args.images}")
        else:
            paths = write_synthetic_jpegs(Path(tmp) / "images", args.n)
        source = cv2.imread(str(paths[0]), cv2.IMREAD_COLOR)
        result = benchmark(paths, args.image_size, Path(tmp) / "cache", args.repeats, args.batch_size, args.workers)
    print("| images | first image | size | direct img/s | cache img/s | speed-up | truncation check (share of "
          f"direct) | loader img/s (batch {args.batch_size}, -j {args.workers}) | MiB/batch |")
    print(f"| {result['images']} | {source.shape[1]}x{source.shape[0]} | {args.image_size} | {result['direct']:.1f} "
          f"| {result['cache']:.1f} | {result['speedup']:.1f}x | {result['check_us']:.0f} us/img "
          f"({100 * result['check_share']:.2f}%) | {result['loader']:.1f} | {result['batch_mib']:.2f} |")
    if args.min_speedup is not None and result["speedup"] < args.min_speedup:
        print(f"error: the cache is {result['speedup']:.1f}x the direct path, below --min_speedup "
              f"{args.min_speedup:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
