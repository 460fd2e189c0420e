"""A synthetic-distortion IQA dataset built from the colour photographs that ship inside scikit-image.

Reference crops of the bundled photographs are degraded by five distortion types at five levels and labelled under
several *assessment requirements*, each computed by a full-reference metric (scikit-image's PSNR and SSIM). Every
requirement is one label file in the ``csv`` dataset kind (``image,score,reference``), so each is a dataset of its
own and all of them split alike by reference:

    python -m promptiqa.demo.synthetic --out data/demo --seed 0

Output: ``images/<reference>_<distortion><level>.png`` (lossless, at the model's input size), ``<requirement>.csv``
per requirement, and ``dataset.json`` (the settings, the requirements' meanings and polarities, the file list).
The output is a pure function of the settings and the seed.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

FORMAT_VERSION = 1

# The colour photographs scikit-image ships in its wheel (no download); name -> loader.
def _photo_loaders() -> Dict[str, Callable[[], np.ndarray]]:
    from skimage import data

    return {
        "astronaut": data.astronaut,
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "hubble": data.hubble_deep_field,
        "retina": data.retina,
        "ihc": data.immunohistochemistry,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
    }


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble", "retina", "ihc", "motorcycle")

# Five levels per distortion type, mildest first. Blur sigmas are for a 96 px image and scale with --size.
LEVELS = {
    "blur": (0.9, 1.4, 2.0, 3.0, 4.4),            # Gaussian blur sigma (px at 96)
    "noise": (0.03, 0.06, 0.10, 0.15, 0.22),      # white Gaussian noise sigma (fraction of 255)
    "jpeg": (40, 22, 12, 7, 3),                   # JPEG quality
    "contrast": (0.8, 0.62, 0.46, 0.32, 0.2),     # contrast kept around the mean luminance
    "saturation": (0.7, 0.45, 0.25, 0.1, 0.0),    # saturation kept (0: greyscale; SSIM hardly sees it, PSNR does)
}
DISTORTIONS = tuple(LEVELS)
PSNR_CAP = 60.0     # dB: an unchanged image (PSNR infinite) and near-copies score this


@dataclass(frozen=True)
class Requirement:
    """An assessment requirement: how one full-reference metric scores a distorted image."""

    name: str
    description: str
    higher_is_better: bool
    mirror_of: Optional[str] = None     # the MOS-like requirement this one is the DMOS-like mirror of


REQUIREMENTS = (
    Requirement("ssim", "SSIM to the reference (structure; MOS-like)", True),
    Requirement("dssim", "1 - SSIM (a distance; DMOS-like, lower is better)", False, mirror_of="ssim"),
    Requirement("psnr", "PSNR to the reference in dB (pixel fidelity)", True),
    Requirement("noise", "only noise matters: SSIM for noisy images, 1 for every other distortion", True),
    Requirement("blur", "only blur matters: SSIM for blurred images, 1 for every other distortion", True),
)
REQUIREMENT_NAMES = tuple(r.name for r in REQUIREMENTS)


def requirement(name: str) -> Requirement:
    """The requirement called ``name``; an unknown name is an error listing the known ones."""
    for r in REQUIREMENTS:
        if r.name == name:
            return r
    raise ValueError(f"unknown requirement {name!r}; choose from {', '.join(REQUIREMENT_NAMES)}")


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends only on the seed and the parts (not on call order)."""
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, parts)).encode())])


def reference_crops(size: int, crops_per_photo: int, seed: int,
                    photos: Sequence[str] = PHOTOS) -> List[Tuple[str, np.ndarray]]:
    """(name, RGB uint8 size x size crop) per reference: each photo's central 80 % shrunk to a short side of 2 x size,
    cut into a 2 x 2 grid of cells, and (for more than 4 crops) a centred cell, each crop jittered inside its cell."""
    loaders = _photo_loaders()
    crops = []
    for photo in photos:
        img = np.ascontiguousarray(loaders[photo]()[..., :3])
        h, w = img.shape[:2]
        img = img[int(0.1 * h):int(0.9 * h), int(0.1 * w):int(0.9 * w)]
        h, w = img.shape[:2]
        scale = 2 * size / min(h, w)
        img = cv2.resize(img, (max(2 * size, round(w * scale)), max(2 * size, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        cells = [(0, 0), (0, w // 2), (h // 2, 0), (h // 2, w // 2), (h // 4, w // 4)]
        if crops_per_photo > len(cells):
            raise ValueError(f"at most {len(cells)} crops per photo, got {crops_per_photo}")
        rng = _rng(seed, "crop", photo)
        for k, (top, left) in enumerate(cells[:crops_per_photo]):
            cell_h, cell_w = h // 2, w // 2
            y = top + int(rng.integers(0, max(1, cell_h - size + 1)))
            x = left + int(rng.integers(0, max(1, cell_w - size + 1)))
            y, x = min(y, h - size), min(x, w - size)
            crops.append((f"{photo}{k + 1}", np.ascontiguousarray(img[y:y + size, x:x + size])))
    return crops


def distort(img: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """``img`` (RGB uint8) under distortion ``kind`` at ``level`` (0 = mildest .. 4)."""
    p = LEVELS[kind][level]
    x = img.astype(np.float32)
    if kind == "blur":
        sigma = p * img.shape[0] / 96
        out = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    elif kind == "noise":
        out = x + rng.normal(0.0, p * 255.0, x.shape).astype(np.float32)
    elif kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(p)])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    elif kind == "contrast":
        mean = x.mean(axis=(0, 1), keepdims=True).mean()
        out = mean + (x - mean) * p
    elif kind == "saturation":
        grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        out = grey + (x - grey) * p
    else:
        raise ValueError(f"unknown distortion {kind!r}; choose from {', '.join(DISTORTIONS)}")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def fr_metrics(ref: np.ndarray, img: np.ndarray) -> Dict[str, float]:
    """Full-reference SSIM (over RGB, 7x7 windows) and PSNR (dB, capped at PSNR_CAP) of ``img`` against ``ref``,
    by scikit-image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if np.array_equal(ref, img):    # e.g. desaturating a grey patch: PSNR would be infinite
        return {"ssim": 1.0, "psnr": PSNR_CAP}
    return {"ssim": float(structural_similarity(ref, img, channel_axis=2, data_range=255)),
            "psnr": min(PSNR_CAP, float(peak_signal_noise_ratio(ref, img, data_range=255)))}


def requirement_score(name: str, metrics: Dict[str, float], kind: str) -> float:
    """The score of one distorted image under requirement ``name``."""
    if name == "ssim":
        return metrics["ssim"]
    if name == "dssim":
        return 1.0 - metrics["ssim"]
    if name == "psnr":
        return metrics["psnr"]
    if name in ("noise", "blur"):     # a single-distortion requirement: other distortions do not count
        return metrics["ssim"] if kind == name else 1.0
    raise ValueError(f"unknown requirement {name!r}; choose from {', '.join(REQUIREMENT_NAMES)}")


def generate(out: Path, size: int = 64, crops_per_photo: int = 4, seed: int = 0,
             photos: Sequence[str] = PHOTOS, distortions: Sequence[str] = DISTORTIONS,
             requirements: Sequence[str] = REQUIREMENT_NAMES, progress: bool = True) -> dict:
    """Write the dataset into ``out`` and return its description (also written as ``dataset.json``).

    A folder already holding the same settings is left as it is (generation is deterministic)."""
    out = Path(out)
    settings = dict(format=FORMAT_VERSION, size=int(size), crops_per_photo=int(crops_per_photo), seed=int(seed),
                    photos=list(photos), distortions=list(distortions), requirements=list(requirements),
                    levels={k: list(LEVELS[k]) for k in distortions})
    for name in requirements:
        requirement(name)
    unknown = sorted(set(photos) - set(PHOTOS))
    if unknown:
        raise ValueError(f"unknown photo(s) {unknown}; choose from {', '.join(PHOTOS)}")
    meta_path = out / "dataset.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == settings and all((out / f"{r}.csv").is_file() for r in requirements):
            return meta
    (out / "images").mkdir(parents=True, exist_ok=True)
    refs = reference_crops(size, crops_per_photo, seed, photos)
    rows = []
    from tqdm import tqdm

    with tqdm(total=len(refs) * len(distortions) * 5, desc="generating", unit="image", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for ref_name, ref in refs:
            for kind in distortions:
                for level in range(5):
                    img = distort(ref, kind, level, _rng(seed, "distort", ref_name, kind, level))
                    name = f"images/{ref_name}_{kind}{level + 1}.png"
                    cv2.imwrite(str(out / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_PNG_COMPRESSION, 1])
                    rows.append(dict(image=name, reference=ref_name, distortion=kind, level=level + 1,
                                     **fr_metrics(ref, img)))
                    bar.update(1)
    for name in requirements:
        with open(out / f"{name}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "score", "reference", "distortion", "level"])
            for r in rows:
                writer.writerow([r["image"], repr(requirement_score(name, r, r["distortion"])), r["reference"],
                                 r["distortion"], r["level"]])
    meta = dict(settings=settings, references=[n for n, _ in refs], images=len(rows),
                requirements={n: asdict(requirement(n)) for n in requirements})
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Write the demo's synthetic-distortion dataset "
                                                 "(scikit-image photographs, full-reference labels)")
    parser.add_argument("--out", default="data/demo", help="output folder (default data/demo)")
    parser.add_argument("--size", type=int, default=64, help="side of the square images in pixels (default 64)")
    parser.add_argument("--crops_per_photo", type=int, default=4, help="references per photograph (1-5, default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seeds crop positions and noise (default 0)")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    parser.add_argument("--requirements", nargs="+", default=list(REQUIREMENT_NAMES), choices=REQUIREMENT_NAMES)
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    meta = generate(Path(args.out), args.size, args.crops_per_photo, args.seed, args.photos,
                    requirements=args.requirements, progress=not args.no_progress)
    print(f"{args.out}: {meta['images']} images of {len(meta['references'])} references, requirements "
          f"{', '.join(meta['requirements'])}")


if __name__ == "__main__":
    main()
