"""Photo-like synthetic JPEGs: what the input-path and scoring benchmarks (scripts/benchmark_data.py,
scripts/benchmark_score.py) decode when no image folder is given, at a real dataset's size and JPEG quality."""
from __future__ import annotations

from pathlib import Path
from typing import List

import cv2
import numpy as np


def synthetic_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like uint8 BGR image: multi-scale luminance texture, soft colour, a few sharp-edged shapes, noise."""
    luma = np.zeros((height, width), np.float32)
    for cells, amplitude in ((4, 60), (16, 30), (64, 15), (256, 8)):  # octaves: roughly 1/f, like natural scenes
        field = rng.normal(0, amplitude, size=(max(2, cells * height // width), cells)).astype(np.float32)
        luma += cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    tint = cv2.resize(rng.normal(0, 25, size=(3, 4, 3)).astype(np.float32), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    image = 120 + luma[:, :, None] + tint
    for _ in range(6):  # objects with edges, which JPEG and bicubic resizing treat differently from smooth areas
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        colour = [float(c) for c in rng.uniform(0, 255, size=3)]
        cv2.circle(image, (x, y), int(rng.integers(20, 160)), colour, thickness=-1, lineType=cv2.LINE_AA)
    image += rng.normal(0, 4, size=(height, width, 3)).astype(np.float32)  # sensor noise
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_jpegs(folder: Path, n: int, height: int = 768, width: int = 1024, seed: int = 0) -> List[Path]:
    """Write n synthetic quality-90 JPEGs into folder; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), synthetic_photo(rng, height, width), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths
