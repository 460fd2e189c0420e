"""A synthetic-distortion IQA dataset built from the colour photographs that ship inside scikit-image.

Reference crops of the bundled photographs are degraded by five distortion types (blur, noise, JPEG, contrast
reduction, desaturation) at five levels and labelled under several *assessment requirements*:

- metric requirements score every image by a full-reference metric: ``ssim`` (MOS-like), ``dssim`` = 1 - SSIM
  (its DMOS-like mirror), ``psnr``;
- aspect requirements say which quality aspects matter: ``blur``, ``noise``, ``jpeg``, ``contrast``, ``saturation``
  (only that distortion counts; the web app calls them sharpness, noise, JPEG, contrast, colourfulness) and the
  combination ``blur_noise``, each also in a reversed DMOS-like form (``<name>_dmos``). Their labels are ranks, so
  every single-aspect requirement has the same score distribution (see ``Requirement``).

Every requirement is one label file in the ``csv`` dataset kind (``image,score,reference``), so each is a dataset of
its own, and all of them split alike by reference (every file holds every reference):

    python -m promptiqa.demo.synthetic --out data/demo --seed 0    (the demo's command for this module)

Output: ``images/<reference>_<distortion><level>.png`` (lossless, at the model's input size), ``images.csv`` (every
image's distortion, level, SSIM, PSNR and colourfulness loss), ``<requirement>.csv`` per requirement, and
``dataset.json`` (the settings and the requirements' meanings, polarities and sizes). The output is a pure function
of the settings and the seed. ``example_set(folder, "noise")`` gives a requirement's ready-made 10-pair prompt.
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

from ..fileio import write_csv, write_json

FORMAT_VERSION = 2

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
# What an aspect's images are ranked by (how much of the aspect a distortion removed, seen against the reference):
# SSIM loss, except for saturation, which SSIM hardly sees: the loss of colourfulness (Hasler & Suesstrunk 2003).
ASPECT_MEASURE = {"blur": "ssim", "noise": "ssim", "jpeg": "ssim", "contrast": "ssim", "saturation": "colour_loss"}
FACTS = ("image", "reference", "distortion", "level", "ssim", "psnr", "colour_loss")     # the columns of images.csv


@dataclass(frozen=True)
class Requirement:
    """An assessment requirement: which images it scores and how.

    With ``aspects`` empty it scores every image by a full-reference metric (``metric``). With ``aspects`` it is an
    aspect requirement: only those distortions count. Each aspect's images get the scores 0, 1/n, ..., (n-1)/n by
    rank of severity (most severe lowest; n images of that distortion), every other image 1; the requirement's
    image set is its aspects' images plus as many others. So every single-aspect requirement has the same score
    distribution, and only which image carries which score tells one from another.
    """

    name: str
    description: str
    higher_is_better: bool
    metric: Optional[str] = None          # "ssim" or "psnr", for a requirement without aspects
    aspects: Tuple[str, ...] = ()
    mirror_of: Optional[str] = None       # the requirement this one is the reversed (DMOS-like) form of

    @property
    def is_aspect(self) -> bool:
        return bool(self.aspects)


# What issue 23's web app calls the aspects: blur costs sharpness, desaturation costs colourfulness.
ASPECT_WORDS = {"blur": "sharpness", "noise": "noise", "jpeg": "JPEG artefacts", "contrast": "contrast",
                "saturation": "colourfulness"}


def _aspect_requirements(aspects: Tuple[str, ...]) -> Tuple[Requirement, Requirement]:
    name = "_".join(aspects)
    words = " and ".join(ASPECT_WORDS[a] for a in aspects)
    verb = "counts" if len(aspects) == 1 else "count"
    return (Requirement(name, f"only {words} {verb}: {' and '.join(aspects)} images scored by rank of severity (0 the "
                              f"most severe), every other image 1 (MOS-like)", True, aspects=aspects),
            Requirement(f"{name}_dmos", f"the reversed form of {name}: 1 - its score (DMOS-like, lower is better)",
                        False, aspects=aspects, mirror_of=name))


REQUIREMENTS = (
    Requirement("ssim", "SSIM to the reference (structure; MOS-like)", True, metric="ssim"),
    Requirement("dssim", "1 - SSIM (a distance; DMOS-like, lower is better)", False, metric="ssim",
                mirror_of="ssim"),
    Requirement("psnr", "PSNR to the reference in dB (pixel fidelity)", True, metric="psnr"),
) + tuple(r for aspects in [(k,) for k in DISTORTIONS] + [("blur", "noise")] for r in _aspect_requirements(aspects))
REQUIREMENT_NAMES = tuple(r.name for r in REQUIREMENTS)
SINGLE_ASPECTS = DISTORTIONS      # the single-aspect requirements (MOS form) are named after their distortion


def requirement(name: str) -> Requirement:
    """The requirement called ``name``; an unknown name is an error listing the known ones."""
    for r in REQUIREMENTS:
        if r.name == name:
            return r
    raise ValueError(f"unknown requirement {name!r}; choose from {', '.join(REQUIREMENT_NAMES)}")


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends only on the seed and the parts (not on call order)."""
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, parts)).encode())])


# A photograph is cut into references at several scales, in turn: shrunk to a short side of k x size for each k
# here, a k x k grid of cells (at k = 2 also a centred cell), one crop jittered inside each cell.
CROP_SCALES = (2, 3, 4)
MAX_CROPS_PER_PHOTO = sum(k * k for k in CROP_SCALES) + 1


def reference_crops(size: int, crops_per_photo: int, seed: int,
                    photos: Sequence[str] = PHOTOS) -> List[Tuple[str, np.ndarray]]:
    """(name, RGB uint8 size x size crop) per reference: the first ``crops_per_photo`` cells of each photo's central
    80 %, taken scale by scale (CROP_SCALES: the 2 x 2 grid and a centred cell at a short side of 2 x size, then the
    3 x 3 grid at 3 x size, the 4 x 4 grid at 4 x size), each crop jittered inside its cell."""
    if not 1 <= crops_per_photo <= MAX_CROPS_PER_PHOTO:
        raise ValueError(f"crops per photo must be 1 to {MAX_CROPS_PER_PHOTO}, got {crops_per_photo}")
    loaders = _photo_loaders()
    crops = []
    for photo in photos:
        img = np.ascontiguousarray(loaders[photo]()[..., :3])
        h, w = img.shape[:2]
        base = img[int(0.1 * h):int(0.9 * h), int(0.1 * w):int(0.9 * w)]
        rng = _rng(seed, "crop", photo)
        count = 0
        for k in CROP_SCALES:
            if count == crops_per_photo:     # no finer scale needed: skip its resize
                break
            h, w = base.shape[:2]
            scale = k * size / min(h, w)
            img = cv2.resize(base, (max(k * size, round(w * scale)), max(k * size, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
            cell_h, cell_w = h // k, w // k
            cells = [(i * cell_h, j * cell_w) for i in range(k) for j in range(k)]
            if k == 2:
                cells.append((h // 4, w // 4))
            for top, left in cells:
                if count == crops_per_photo:
                    break
                y = top + int(rng.integers(0, max(1, cell_h - size + 1)))
                x = left + int(rng.integers(0, max(1, cell_w - size + 1)))
                y, x = min(y, h - size), min(x, w - size)
                count += 1
                crops.append((f"{photo}{count}", np.ascontiguousarray(img[y:y + size, x:x + size])))
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


def colourfulness(img: np.ndarray) -> float:
    """Hasler & Suesstrunk's colourfulness of an RGB image (0 for grey; about 100 for very colourful photographs)."""
    x = img.astype(np.float64)
    rg, yb = x[..., 0] - x[..., 1], 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def fr_metrics(ref: np.ndarray, img: np.ndarray) -> Dict[str, float]:
    """Full-reference SSIM (over RGB, 7x7 windows), PSNR (dB, capped at PSNR_CAP), both by scikit-image, and the
    colourfulness ``img`` lost against ``ref``."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    colour_loss = colourfulness(ref) - colourfulness(img)
    if np.array_equal(ref, img):    # e.g. desaturating a grey patch: PSNR would be infinite
        return {"ssim": 1.0, "psnr": PSNR_CAP, "colour_loss": 0.0}
    return {"ssim": float(structural_similarity(ref, img, channel_axis=2, data_range=255)),
            "psnr": min(PSNR_CAP, float(peak_signal_noise_ratio(ref, img, data_range=255))),
            "colour_loss": colour_loss}


def severity(row: dict) -> float:
    """How much of its distortion's aspect an image lost (larger is worse), by ASPECT_MEASURE."""
    measure = ASPECT_MEASURE[row["distortion"]]
    return 1.0 - float(row["ssim"]) if measure == "ssim" else float(row[measure])


def requirement_labels(name: str, rows: Sequence[dict], others: Optional[int] = None
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """(score of every row under requirement ``name``, whether the row belongs to the requirement's image set).

    ``rows`` are all the images of a dataset (images.csv): an aspect requirement ranks each aspect's images among
    all of that distortion's images; its set is its aspects' images plus ``others`` images of other distortions
    per reference (default: as many as it has of its aspects, the balanced set the demo evaluates on)."""
    req = requirement(name)
    kinds = np.array([r["distortion"] for r in rows])
    if not req.is_aspect:
        scores = np.array([float(r[req.metric]) for r in rows])
        return (1.0 - scores if req.mirror_of else scores), np.ones(len(rows), bool)
    missing = sorted(set(req.aspects) - set(kinds))
    if missing:
        raise ValueError(f"requirement {name!r} needs the distortion(s) {missing}, which the dataset lacks")
    scores = np.ones(len(rows))
    for kind in req.aspects:
        idx = np.flatnonzero(kinds == kind)
        # ordinal ranks (ties in row order), so every aspect's scores are exactly 0, 1/n, ..., (n-1)/n
        order = idx[np.argsort([-severity(rows[i]) for i in idx], kind="stable")]
        scores[order] = np.arange(len(idx)) / len(idx)
    members = np.isin(kinds, req.aspects) | _others(rows, req.aspects, others)
    return (1.0 - scores if req.mirror_of else scores), members


def _others(rows: Sequence[dict], aspects: Sequence[str], per_reference: Optional[int]) -> np.ndarray:
    """The images an aspect requirement adds from the other distortions: ``per_reference`` per reference (default as
    many as it has of its aspects; at most one per other distortion and level), taking (distortion, level) in turn
    from reference to reference, so that every other distortion and level is equally represented (exactly so when
    the references come in multiples of the turn's length)."""
    kinds = [k for k in DISTORTIONS if any(r["distortion"] == k for r in rows) and k not in aspects]
    levels = sorted({int(r["level"]) for r in rows})
    combos = [(k, lv) for lv in levels for k in kinds]       # level-major: one reference's picks vary in kind
    refs = list(dict.fromkeys(r["reference"] for r in rows))
    m = min(len(combos), len(levels) * len(aspects) if per_reference is None else int(per_reference))
    chosen = {(ref, *combos[(i * m + j) % len(combos)]) for i, ref in enumerate(refs) for j in range(m)}
    return np.array([(r["reference"], r["distortion"], int(r["level"])) in chosen for r in rows])


def read_images(folder: Path) -> List[dict]:
    """The rows of a generated dataset's images.csv (every image with its distortion and full-reference facts)."""
    with open(Path(folder) / "images.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def example_set(folder: Path, name: str, n: int = 10) -> List[Tuple[str, float]]:
    """``n`` (image path, score) pairs of requirement ``name``, interval-sampled from its label file as an ISPP is:
    a ready-made prompt (for an aspect requirement: its aspect's images spread over the severities, and as many
    images of other distortions scored as clean). A reversed (DMOS-like) form gives the same images as the form it
    mirrors, with its own scores."""
    from .sampling import sample_isps

    folder = Path(folder)
    req = requirement(name)

    def read(which: str) -> List[dict]:
        with open(folder / f"{which}.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    rows = read(req.name)
    order = read(req.mirror_of) if req.mirror_of else rows
    if [r["image"] for r in order] != [r["image"] for r in rows]:
        raise ValueError(f"{folder}: {req.name}.csv and {req.mirror_of}.csv list different images (regenerate)")
    picks = sample_isps(np.array([float(r["score"]) for r in order]), n)
    return [(str(folder / rows[i]["image"]), float(rows[i]["score"])) for i in picks]


def generate(out: Path, size: int = 64, crops_per_photo: int = 4, seed: int = 0,
             photos: Sequence[str] = PHOTOS, distortions: Sequence[str] = DISTORTIONS,
             requirements: Sequence[str] = REQUIREMENT_NAMES, others_per_reference: Optional[int] = None,
             progress: bool = True) -> dict:
    """Write the dataset into ``out`` and return its description (also written as ``dataset.json``).

    A folder already holding the same settings is left as it is (generation is deterministic)."""
    out = Path(out)
    settings = dict(format=FORMAT_VERSION, size=int(size), crops_per_photo=int(crops_per_photo), seed=int(seed),
                    photos=list(photos), distortions=list(distortions), requirements=list(requirements),
                    levels={k: list(LEVELS[k]) for k in distortions}, others_per_reference=others_per_reference)
    for name in requirements:
        missing = sorted(set(requirement(name).aspects) - set(distortions))
        if missing:
            raise ValueError(f"requirement {name!r} needs the distortion(s) {missing}, which are not generated")
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
    write_csv(out / "images.csv", FACTS, [[repr(r[c]) if isinstance(r[c], float) else r[c] for c in FACTS]
                                           for r in rows])
    sizes = {}
    for name in requirements:
        scores, members = requirement_labels(name, rows, others_per_reference)
        write_csv(out / f"{name}.csv", ("image", "score", "reference", "distortion", "level"),
                   [[r["image"], repr(float(s)), r["reference"], r["distortion"], r["level"]]
                    for r, s, m in zip(rows, scores, members) if m])
        sizes[name] = int(members.sum())
    meta = dict(settings=settings, references=[n for n, _ in refs], images=len(rows),
                requirements={n: dict(asdict(requirement(n)), images=sizes[n]) for n in requirements})
    write_json(meta_path, meta, indent=2)
    return meta


def build_parser() -> argparse.ArgumentParser:
    """python -m promptiqa.demo.synthetic's command line."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Write the demo's synthetic-distortion dataset "
                                                 "(scikit-image photographs, full-reference labels)")
    parser.add_argument("--out", default="data/demo", help="output folder (default data/demo)")
    parser.add_argument("--size", type=int, default=64, help="side of the square images in pixels (default 64)")
    parser.add_argument("--crops_per_photo", type=int, default=4,
                        help=f"references per photograph (1-{MAX_CROPS_PER_PHOTO}, default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seeds crop positions and noise (default 0)")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    parser.add_argument("--requirements", nargs="+", default=list(REQUIREMENT_NAMES), choices=REQUIREMENT_NAMES,
                        metavar="NAME", help=f"label files to write (default all: {', '.join(REQUIREMENT_NAMES)})")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    meta = generate(Path(args.out), args.size, args.crops_per_photo, args.seed, args.photos,
                    requirements=args.requirements, progress=not args.no_progress)
    print(f"{args.out}: {meta['images']} images of {len(meta['references'])} references, requirements "
          f"{', '.join(meta['requirements'])}")


if __name__ == "__main__":
    main()
