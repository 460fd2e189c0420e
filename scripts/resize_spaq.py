#!/usr/bin/env python
"""Make SPAQ's img_resize/ copy: shorter side resized to 512 (aspect kept), file names and sub-folders kept.

    python scripts/resize_spaq.py SPAQ/TestImage SPAQ/img_resize -j 8

As the SPAQ authors do, an image is resized only when both sides are at least --short_side; smaller ones are
copied unchanged. OpenCV decodes (applying the EXIF orientation, as the training loader's OpenCV read does)
and writes without EXIF, so the copy reads in the same orientation as the original. INTER_AREA is OpenCV's
anti-aliased down-scaling filter. Existing outputs are kept unless --overwrite.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence, Tuple

import cv2
from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def target_size(height: int, width: int, short_side: int) -> Optional[Tuple[int, int]]:
    """(height, width) with the shorter side = short_side and the aspect kept; None when no resize is due."""
    shorter = min(height, width)
    if shorter <= short_side:  # smaller (or already exact) images are left as they are
        return None
    scale = short_side / shorter
    if height <= width:
        return short_side, max(1, round(width * scale))
    return max(1, round(height * scale)), short_side


def resize_one(src: Path, dst: Path, short_side: int, quality: int) -> str:
    """Write the resized (or copied) image to dst through a temporary file; returns "resized" or "copied"."""
    image = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"OpenCV could not decode {src} (truncated download? the SPAQ zip may need `zip -FF`)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part" + dst.suffix)  # keep the suffix: imwrite picks the codec by it
    size = target_size(image.shape[0], image.shape[1], short_side)
    if size is None:
        shutil.copyfile(src, tmp)
        action = "copied"
    else:
        resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        if not cv2.imwrite(str(tmp), resized, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"could not write {tmp}")
        action = "resized"
    os.replace(tmp, dst)
    return action


def build_parser() -> argparse.ArgumentParser:
    """This script's command line."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="SPAQ's TestImage folder")
    parser.add_argument("dst", type=Path, help="output folder, e.g. <SPAQ root>/img_resize")
    parser.add_argument("--short_side", type=int, default=512)
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of resized images")
    parser.add_argument("-j", "--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overwrite", action="store_true", help="redo images already in DST")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Resize every image under SRC into DST, with a progress bar."""
    parser = build_parser()
    args = parser.parse_args(argv)

    if not args.src.is_dir():
        parser.error(f"{args.src} is not a folder")
    sources = sorted(p for p in args.src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not sources:
        parser.error(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {args.src}")
    jobs = [(s, args.dst / s.relative_to(args.src)) for s in sources]
    todo = [(s, d) for s, d in jobs if args.overwrite or not d.exists()]
    counts = {"resized": 0, "copied": 0}
    # OpenCV releases the GIL while decoding, resizing and encoding, so threads use all cores.
    with ThreadPoolExecutor(max(1, args.workers)) as pool, tqdm(total=len(todo), unit="img") as bar:
        for action in pool.map(lambda job: resize_one(job[0], job[1], args.short_side, args.quality), todo):
            counts[action] += 1
            bar.update()
    print(f"{counts['resized']} resized, {counts['copied']} copied unchanged, "
          f"{len(jobs) - len(todo)} already present, in {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
