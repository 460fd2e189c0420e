"""Scoring images under a requirement: the Predictor, score scales, prompt files and image inputs.

A requirement is a prompt of image-score pairs in the user's own scale (1-5 stars, a 0-100 MOS, a DMOS where lower
is better). A ScoreScale maps those scores onto the model's [0, 1] labels and predictions back; the prompt is
encoded once into a (1, n, 128) tensor, which can be saved to a small file and reused without its images.
Images go through the training pipeline: files are decoded by ``read_image``; PIL images and arrays get the same
bicubic resize of the uint8 image; batches cross the loader as uint8 and are ``normalise``d on the device.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from promptiqa.data.images import (ImageLoader, explain_shared_memory_failures, normalise, read_image, resize_image,
                                   to_chw)
from promptiqa.errors import PromptIQAError
from promptiqa.fileio import atomic_write, refuse_overwriting_inputs
from promptiqa.devices import AMP_MODES, FP16_REFUSAL, amp_dtype, default_device, default_workers
from promptiqa.hub import RELEASE
from promptiqa.models import CheckpointError, load_model
from promptiqa.models.promptiqa import FEATURE_DIM, unwrap, uses_prompt

PathLike = Union[str, os.PathLike]
DEFAULT_PROMPT = "default"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PROMPT_FILE_FORMAT = "promptiqa-prompt"
PROMPT_FILE_VERSION = 1
PIL_16_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N")  # what PIL opens a 16-bit grayscale PNG or TIFF as


class PredictorError(PromptIQAError, ValueError):
    """A request the Predictor cannot serve (unknown prompt name, unavailable device, ...)."""


class PromptError(PredictorError):
    """A prompt that cannot express a requirement: too few pairs, bad scores, a foreign or mismatched prompt file.

    ``index`` is the position of the offending pair when there is one, so callers can name its row or entry.
    """

    def __init__(self, message: str, index: Optional[int] = None):
        super().__init__(message)
        self.index = index


class ImageError(PromptIQAError, OSError):
    """An image that cannot be read (missing, corrupt, unsupported format); ``index`` is its position in the input."""

    def __init__(self, message: str, index: Optional[int] = None):
        super().__init__(message)
        self.index = index


# --------------------------------------------------------------------------------------------------------------
# Score scales


@dataclass(frozen=True)
class ScoreScale:
    """The user's score scale [low, high] and its polarity, mapped linearly onto the model's [0, 1] and back.

    higher_is_better: m = (u - low) / (high - low); otherwise m = (high - u) / (high - low), so the model always
    sees 1 for the best score of the range.
    """

    low: float
    high: float
    higher_is_better: bool = True

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or not self.low < self.high:
            raise PromptError(f"score_range must be two finite numbers with low < high, got ({self.low:g}, "
                              f"{self.high:g})")
        if not math.isfinite(self.high - self.low):  # e.g. -1e308 to 1e308: every mapped score would be NaN
            raise PromptError(f"the score scale ({self.low:g}, {self.high:g}) spans more than a float can hold; "
                              f"rescale the scores")

    @classmethod
    def from_scores(cls, scores: Sequence[float], score_range: Optional[Tuple[float, float]] = None,
                    higher_is_better: bool = True) -> "ScoreScale":
        """The scale of a prompt: ``score_range`` when given (every score must lie in it), else the scores' min/max."""
        values = np.asarray(scores, dtype=np.float64)
        if score_range is None:
            if values.min() == values.max():
                raise PromptError(f"all {values.size} prompt scores equal {values[0]:g}: without score_range the "
                                  f"prompt's min and max define the scale, so it needs at least two distinct scores")
            return cls(float(values.min()), float(values.max()), bool(higher_is_better))
        low, high = (float(v) for v in score_range)
        scale = cls(low, high, bool(higher_is_better))
        outside = np.flatnonzero((values < low) | (values > high))
        if outside.size:
            i = int(outside[0])
            raise PromptError(f"score {values[i]:g} lies outside score_range ({low:g}, {high:g})", index=i)
        return scale

    def to_model(self, values) -> np.ndarray:
        """User scores -> the model's [0, 1] scale (float64)."""
        u = np.asarray(values, dtype=np.float64)
        span = self.high - self.low
        return (u - self.low) / span if self.higher_is_better else (self.high - u) / span

    def to_user(self, values) -> np.ndarray:
        """Model scores in [0, 1] -> the user's scale (float64); the exact inverse of ``to_model``."""
        m = np.asarray(values, dtype=np.float64)
        span = self.high - self.low
        return self.low + m * span if self.higher_is_better else self.high - m * span


# --------------------------------------------------------------------------------------------------------------
# Image inputs

ImageInput = Union[PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821 - PIL is optional at import time


def _is_pil(image: Any) -> bool:
    return type(image).__module__.startswith("PIL.") and hasattr(image, "convert")


def load_rgb(image: ImageInput, size: int) -> np.ndarray:
    """A path, PIL image or uint8 HxWx3 RGB array -> uint8 size x size x 3 RGB, through the training pipeline."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, size)
    if _is_pil(image):
        from PIL import ImageOps

        # Files are decoded with their EXIF orientation applied (OpenCV does it), so PIL images are turned upright
        # the same way: a photo scores the same whether given as its path or as Image.open(path).
        image = ImageOps.exif_transpose(image)
        if image.mode in PIL_16_BIT_GRAY:
            # OpenCV keeps the high byte of 16-bit samples; PIL's convert("RGB") would saturate them to white.
            gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            array = np.repeat(gray[:, :, None], 3, axis=2)
        else:
            array = np.asarray(image.convert("RGB"))
        return resize_image(array, size)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image arrays must be uint8 HxWx3 RGB, got {image.dtype} with shape {image.shape}")
        return resize_image(image, size)
    raise TypeError(f"an image must be a file path, a PIL image or a uint8 HxWx3 RGB array, got {type(image).__name__}")


def _as_list(images) -> list:
    """One image (path, PIL image, HxWx3 array) or many (a sequence, an NxHxWx3 array) -> a list of images."""
    if isinstance(images, (str, os.PathLike)) or _is_pil(images) or (isinstance(images, np.ndarray)
                                                                        and images.ndim == 3):
        return [images]
    if isinstance(images, torch.Tensor):
        raise TypeError("pass file paths, PIL images or uint8 HxWx3 RGB arrays; for normalised tensors call "
                        "model.score directly")
    items = list(images)
    for item in items:
        if not (isinstance(item, (str, os.PathLike, np.ndarray)) or _is_pil(item)):
            raise TypeError(f"an image must be a file path, a PIL image or a uint8 HxWx3 RGB array, got "
                            f"{type(item).__name__}")
    return items


def _describe_image(image: Any, i: int) -> str:
    """How an input is named in prompt files and messages: its path, or its position for in-memory images."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return getattr(image, "filename", "") or f"<{type(image).__name__} {i}>"  # PIL keeps the file it was opened from


class _ImageInputs(Dataset):
    """(index, uint8 CHW tensor or None, error message or None): errors travel as data so worker processes report
    them cleanly, instead of as exceptions that the DataLoader re-raises wrapped in a worker traceback."""

    def __init__(self, images: Sequence[ImageInput], size: int):
        self.images = images
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            return i, to_chw(load_rgb(self.images[i], self.size)), None
        except (OSError, ValueError, cv2.error) as err:
            message = str(err) if isinstance(self.images[i], (str, os.PathLike)) else \
                f"{_describe_image(self.images[i], i)}: {err}"
            return i, None, message


def _collate(items):
    """A batch as (indices of the decoded images, their stacked tensor or None, [(index, message)] of the others)."""
    good = [(i, tensor) for i, tensor, message in items if message is None]
    errors = [(i, message) for i, _, message in items if message is not None]
    tensor = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], tensor, errors


def _scan(paths: Iterable[PathLike]) -> List[Tuple[Path, bool]]:
    """(file, named explicitly) for ``find_images``: files found by scanning a folder are not named explicitly."""
    found: List[Tuple[Path, bool]] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append((path, True))
        elif path.is_dir():
            inside = []
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # sorted in place: walk order is fixed
                inside.extend(Path(folder) / f for f in sorted(files)
                              if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES))
            if not inside:
                raise FileNotFoundError(f"no images under {path} (looked for {', '.join(IMAGE_SUFFIXES)}, "
                                        f"any case, in all sub-folders)")
            found.extend((f, False) for f in inside)
        else:
            raise FileNotFoundError(f"image or folder not found: {path}")
    return found


def find_images(paths: Iterable[PathLike]) -> List[Path]:
    """Files as given, and folders scanned recursively for common image types (case-insensitive suffixes).

    Deterministic: a folder's files in sorted order, then its sub-folders in sorted order. Hidden files and folders
    (names starting with '.', e.g. macOS '._photo.jpg' resource forks) are skipped.
    """
    return [path for path, _ in _scan(paths)]


def _is_folder(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike)) and Path(item).is_dir()


@dataclass
class ScoredFiles:
    """What ``Predictor.score_files`` scored: the files in order, their scores under each prompt (by prompt name,
    in the prompt's scale), and the files found in folders that were skipped because they could not be decoded."""

    images: List[Path]
    scores: Dict[str, np.ndarray]
    skipped: List[Tuple[Path, str]] = field(default_factory=list)

    def skipped_report(self, name: Callable[[Path], str] = str, where: str = "found in folders",
                       note: str = "") -> List[str]:
        """The skipped files as lines to show (none when none was skipped): a heading, then each file by ``name``."""
        if not self.skipped:
            return []
        return [f"skipped {len(self.skipped)} file(s) {where} that could not be decoded{note}:",
                *(f"  {name(path)}" for path, _ in self.skipped)]


# --------------------------------------------------------------------------------------------------------------
# Prompt files: the pairs a user writes (CSV, official JSON) and the encoded prompts the Predictor saves


@dataclass
class PromptPairs:
    """Image-score pairs read from a prompt file, where each came from (for messages), and the scale its format
    implies (None: the prompt's own min and max)."""

    images: List[Path]
    scores: List[float]
    origins: List[str]
    score_range: Optional[Tuple[float, float]] = None


def _number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PromptError(f"{where}: score {value!r} is not a number") from None
    if not math.isfinite(number):
        raise PromptError(f"{where}: score {value!r} is not a finite number")
    return number


def _image_path(value: Any, base: Path, where: str, within: Optional[Path] = None) -> Path:
    """The image a prompt file names (relative to ``base``); with ``within``, only a path inside that folder is
    looked at (an uploaded prompt file may name only the files uploaded with it: nothing else on the disk is opened,
    nor is its existence told)."""
    if not isinstance(value, str) or not value.strip():
        raise PromptError(f"{where}: image {value!r} is not a file path")
    path = base / value.strip()
    if within is not None and not _inside(path, within):
        raise PromptError(f"{where}: image '{value.strip()}' is not among the uploaded files (a prompt file may name "
                          f"only images uploaded with it)")
    if not path.is_file():
        raise PromptError(f"{where}: image '{value.strip()}' not found (looked at {path})")
    return path


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder``, spelt out (``..`` and absolute paths) and with links followed."""
    folder = Path(os.path.abspath(folder))
    lexical = Path(os.path.normpath(os.path.abspath(path)))
    return (lexical == folder or folder in lexical.parents) and folder.resolve() in Path(lexical).resolve().parents


def read_prompt_rows(path: PathLike) -> Iterable[Tuple[Any, float, str]]:
    """The rows of a CSV with columns ``image,score``, one at a time: (image as written, score, where: the file and
    its row, counting from the header, 1); the image is not looked for (``read_prompt_csv`` does that)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: spreadsheets write a BOM
            reader = csv.DictReader(fh)
            columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
            if "image" not in columns or "score" not in columns:
                raise PromptError(f"{path}: expected a header with columns 'image' and 'score', got "
                                  f"{reader.fieldnames}")
            for row in reader:
                where = f"{path} row {reader.line_num}"
                yield row[columns["image"]], _number((row[columns["score"]] or "").strip(), where), where
    except UnicodeDecodeError as err:
        raise PromptError(f"{path} is not a UTF-8 text CSV: {err}") from None


def read_prompt_csv(path: PathLike, within: Optional[Path] = None) -> PromptPairs:
    """Pairs from a CSV with columns ``image,score`` (paths relative to the CSV); rows count from the header, 1.
    ``within``: images only from that folder (see ``_image_path``)."""
    images, scores, origins = [], [], []
    for image, score, where in read_prompt_rows(path):
        scores.append(score)
        images.append(_image_path(image, Path(path).parent, where, within))
        origins.append(where)
    return PromptPairs(images, scores, origins)


def read_prompt_json(path: PathLike, prompt_id: Optional[str] = None, within: Optional[Path] = None) -> PromptPairs:
    """Pairs from the official demo's JSON: a list of ``{"Example_id", "ISPP": [[image, score], ...]}``, one such
    entry, or a bare ``[[image, score], ...]``; paths relative to the file; scores on the model's [0, 1] scale."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PromptError(f"{path} is not valid JSON: {err}") from None
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, list) and data and all(isinstance(e, dict) for e in data):
        ids = [str(e.get("Example_id", i + 1)) for i, e in enumerate(data)]
        if prompt_id is None and len(data) > 1:
            raise PromptError(f"{path} holds {len(data)} prompts ({', '.join(ids)}); choose one with prompt_id "
                              f"(--prompt_id)")
        if prompt_id is not None and prompt_id not in ids:
            raise PromptError(f"{path} has no prompt '{prompt_id}'; it holds {', '.join(ids)}")
        index = ids.index(prompt_id) if prompt_id is not None else 0
        pairs, label = data[index].get("ISPP"), f"{path} prompt '{ids[index]}'"
    else:
        pairs, label = data, str(path)
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise PromptError(f"{label}: expected image-score pairs as [[image, score], ...]")
    images, scores, origins = [], [], []
    for i, (image, score) in enumerate(pairs, start=1):
        where = f"{label} pair {i}"
        scores.append(_number(score, where))
        images.append(_image_path(image, path.parent, where, within))
        origins.append(where)
    # The official demo feeds these scores to the model unchanged (its sliders span 0-1), so that is their scale.
    return PromptPairs(images, scores, origins, score_range=(0.0, 1.0))


def read_prompt_pairs(path: PathLike, prompt_id: Optional[str] = None, within: Optional[Path] = None) -> PromptPairs:
    """Pairs from a ``.json`` (official demo format) or any other file as CSV ``image,score``; with ``within``, image
    paths resolve only inside that folder (the web app: the files uploaded together)."""
    path = _prompt_file(path)
    if path.suffix.lower() == ".json":
        return read_prompt_json(path, prompt_id, within)
    if prompt_id is not None:
        raise PromptError(f"{path}: prompt_id selects an entry of a JSON prompt file; a CSV holds one prompt")
    return read_prompt_csv(path, within)


def _prompt_file(path: PathLike) -> Path:
    """``path`` when it is a regular file; a missing one is FileNotFoundError, anything else (a folder, a FIFO, a
    device, which open() would wait on forever) one PromptError, found without opening it."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"prompt file not found: {path}")
    raise PromptError(f"{path} is not a regular file (a folder, pipe or device); expected a prompt CSV, JSON or a "
                      f"prompt file saved with --save_prompt")


def is_saved_prompt(path: PathLike) -> bool:
    """Whether ``path`` is a torch file (as ``save_prompt`` writes: a zip archive) rather than a CSV or JSON. Only
    regular files are opened (reading a FIFO would wait for a writer)."""
    if not Path(path).is_file():
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def model_fingerprint(model: torch.nn.Module) -> Dict[str, Any]:
    """What identifies a model for its prompts: its config and the SHA-256 of its state_dict (names, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return dict(config=dict(model.config), weights_sha256=digest.hexdigest())


@dataclass
class EncodedPrompt:
    """An encoded requirement: the (1, n, 128) prompt tensor, the scale of its scores, and what it was made from.
    (evaluation.prompts.SampledISPP is an ISPP before encoding, as the evaluation tools sample it.)"""

    tensor: torch.Tensor
    scale: ScoreScale
    images: List[str] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    features: Optional[torch.Tensor] = None   # the images' (n, 128) features when encoded here (a saved prompt: None)

    @property
    def isp_num(self) -> int:
        """Number of image-score pairs."""
        return int(self.tensor.shape[1])


# Below this leave-one-out SROCC a prompt's own images are ranked too unlike its scores to trust the model under it:
# for 10 pairs, 0.56 is where a one-sided 5% test would call the agreement more than chance.
REQUIREMENT_CHECK_MIN_SROCC = 0.5
NO_CHECK_FOR_SAVED_PROMPT = "requirement check: not available for a saved prompt (it keeps no images)"


@dataclass
class RequirementCheck:
    """``Predictor.check_requirement``: each prompt image's score under the other n-1 pairs (the prompt's scale) and
    the SROCC of those predictions against the prompt's own scores (NaN when the predictions are all equal)."""

    predictions: np.ndarray
    scores: np.ndarray

    @property
    def srocc(self) -> float:
        """Spearman correlation of the leave-one-out predictions with the prompt's scores (NaN: undefined)."""
        if np.ptp(self.predictions) == 0 or np.ptp(self.scores) == 0:
            return float("nan")
        from promptiqa.metrics import srocc

        return srocc(self.predictions, self.scores)

    @property
    def follows(self) -> bool:
        """Whether the SROCC reaches ``REQUIREMENT_CHECK_MIN_SROCC`` (an undefined one does not)."""
        return bool(self.srocc >= REQUIREMENT_CHECK_MIN_SROCC)

    def line(self) -> str:
        """The check in one line, as ``promptiqa score`` and the web page say it."""
        value = self.srocc
        equal = "prompt score" if np.ptp(self.scores) == 0 else "leave-one-out prediction"
        figure = f"{value:.2f}" if math.isfinite(value) else f"undefined (every {equal} is equal)"
        verdict = "" if self.follows else (f"; below {REQUIREMENT_CHECK_MIN_SROCC:g}: this model does not follow "
                                          f"this requirement")
        return (f"requirement check (leave-one-out SROCC on the prompt's own {self.scores.size} images): "
                f"{figure}{verdict}")


# --------------------------------------------------------------------------------------------------------------
# The Predictor


class Predictor:
    """Scores images under requirements given as image-score prompts, in the prompts' own score scales.

    >>> p = Predictor.from_checkpoint("checkpoints/best_model.pth.tar")
    >>> p.set_prompt(["a.jpg", "b.jpg", "c.jpg"], [1, 3, 5], score_range=(1, 5))
    >>> p.score(["x.jpg", "y.jpg"])        # numpy array of scores on the 1-5 scale
    """

    def __init__(self, model: torch.nn.Module, device: Union[str, torch.device, None] = None,
                 amp: Optional[str] = None):
        """Wrap an in-memory PromptIQA model (put in eval mode; moved to ``device`` when given, else left where it is).

        ``amp="bf16"`` runs under bfloat16 autocast. The model's weights must not change while the Predictor is used.
        """
        model = unwrap(model)
        if not uses_prompt(model):
            raise TypeError(f"Predictor needs a PromptIQA model (arch 'promptiqa'), got {type(model).__name__} "
                            f"{getattr(model, 'config', {}).get('arch', '')}".rstrip())
        amp = None if amp == "none" else amp   # --amp none: float32, as every command reads it
        if amp is not None and amp not in AMP_MODES:
            why = f" ({FP16_REFUSAL})" if amp == "fp16" else ""
            raise PredictorError(f"amp must be one of {sorted(AMP_MODES)} or None, got {amp!r}{why}")
        if device is None:
            device = next(model.parameters()).device
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.amp = amp
        self.image_size = int(model.image_size)
        self.prompts: Dict[str, EncodedPrompt] = {}
        self.checkpoint_info: Dict[str, Any] = {}
        self._fingerprint: Optional[Dict[str, Any]] = None

    @classmethod
    def from_checkpoint(cls, path: PathLike, device: Union[str, torch.device, None] = None,
                        backbone: Optional[str] = None, amp: Optional[str] = None) -> "Predictor":
        """Load an official release file or our checkpoint (``load_model``); CUDA when available unless ``device``.

        ``path`` may also name a file on the Hugging Face Hub, ``hf:REPO[/FILE][@REVISION]`` (downloaded once).
        """
        device = resolve_device(device)
        model, info = load_model(path, backbone=backbone, device=device, with_info=True)
        if not uses_prompt(model):
            raise CheckpointError(f"{path} holds the w/o-prompt ablation ({model.config.get('arch')}), which takes no "
                                  f"prompt; the Predictor needs a PromptIQA checkpoint")
        predictor = cls(model, device=device, amp=amp)
        predictor.checkpoint_info = info
        return predictor

    @classmethod
    def from_pretrained(cls, name: str = RELEASE, device: Union[str, torch.device, None] = None,
                        backbone: Optional[str] = None, amp: Optional[str] = None) -> "Predictor":
        """The authors' released model by default (``hf:Zevin2023/PromptIQA``, downloaded once into the Hugging Face
        cache), or any ``hf:`` reference or local file; otherwise as ``from_checkpoint``."""
        return cls.from_checkpoint(name, device=device, backbone=backbone, amp=amp)

    def __repr__(self) -> str:
        prompts = ", ".join(f"{k} (n={v.isp_num})" for k, v in self.prompts.items()) or "none"
        return (f"Predictor({self.model.config.get('backbone')} at {self.image_size}px on {self.device}, "
                f"amp={self.amp}, prompts: {prompts})")

    @property
    def fingerprint(self) -> Dict[str, Any]:
        """The model's config and weight hash, recorded in saved prompts (computed once: hashing takes a second)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    def _autocast(self):
        if self.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=amp_dtype(self.amp))

    def _batches(self, images: Sequence[ImageInput], batch_size: int, workers: int,
                 skip: Optional[Callable[[int, str], bool]] = None):
        """(input indices, normalised (B, 3, S, S) batch on the device or None), decoded by ``workers`` background
        processes (0: inline). An image that fails to decode is an ImageError unless ``skip(index, message)``
        takes it (returns True): then it is left out of its batch."""
        loader = ImageLoader(_ImageInputs(images, self.image_size), batch_size=batch_size, shuffle=False,
                             num_workers=workers, collate_fn=_collate, pin_memory=self.device.type == "cuda")
        for indices, batch, errors in loader:
            for index, message in errors:
                if skip is None or not skip(index, message):
                    raise ImageError(message, index=index)
            yield indices, None if batch is None else normalise(batch.to(self.device, non_blocking=True))

    def set_prompt(self, images, scores: Sequence[float], name: str = DEFAULT_PROMPT,
                   score_range: Optional[Tuple[float, float]] = None, higher_is_better: bool = True,
                   batch_size: int = 8) -> EncodedPrompt:
        """Encode a requirement from image-score pairs and keep it under ``name``; returns the EncodedPrompt.

        ``images``: file paths, PIL images or uint8 HxWx3 RGB arrays. ``scores``: numbers in your own scale;
        ``score_range=(lo, hi)`` is that scale's range (default: the prompt's own min and max, so at least two
        distinct scores are needed, and predictions then stay within them); ``higher_is_better=False`` for
        DMOS-style scores. Predictions are returned in the same scale.
        """
        items = _as_list(images)
        values = [_number(s, f"prompt pair {i + 1}") for i, s in enumerate(scores)]
        if len(items) != len(values):
            raise PromptError(f"{len(items)} prompt images but {len(values)} scores")
        if len(items) < 2:
            raise PromptError(f"a prompt needs at least 2 image-score pairs, got {len(items)}")
        scale = ScoreScale.from_scores(values, score_range, higher_is_better)
        labels = torch.as_tensor(scale.to_model(values), dtype=torch.float32)
        if not bool(torch.isfinite(labels).all()):  # a span a float holds but float32 labels do not
            raise PromptError(f"the prompt scores do not map onto finite labels on the scale ({scale.low:g}, "
                              f"{scale.high:g}); rescale them")
        chunks, features, start = [], [], 0
        with torch.inference_mode(), self._autocast():
            # Each pair is encoded independently (per-ISP encoder, eval-mode BatchNorm), so chunks concatenate.
            for _, batch in self._batches(items, batch_size, workers=0):
                stop = start + batch.shape[0]
                features.append(self.model.image_features(batch))
                chunks.append(self.model.encode_prompt_features(features[-1], labels[start:stop].to(self.device))
                              .float())
                start = stop
        prompt = EncodedPrompt(torch.cat(chunks, dim=1), scale,
                               [_describe_image(im, i) for i, im in enumerate(items)], values,
                               torch.cat(features).float())
        if not bool(torch.isfinite(prompt.tensor).all()):
            raise PromptError("the encoded prompt is not finite (NaN or infinity): the model overflowed on these "
                              "images" + (" under --amp bf16; try without it" if self.amp else ""))
        self.prompts[name] = prompt
        return prompt

    def _prompt(self, prompt: Union[str, EncodedPrompt, None]) -> EncodedPrompt:
        if isinstance(prompt, EncodedPrompt):
            return prompt
        name = DEFAULT_PROMPT if prompt is None else prompt
        if name not in self.prompts:
            known = ", ".join(repr(k) for k in self.prompts) or "none yet"
            raise PredictorError(f"no prompt named {name!r} (prompts: {known}); call set_prompt or load_prompt first")
        return self.prompts[name]

    def check_requirement(self, prompt: Union[str, EncodedPrompt, None] = None) -> "RequirementCheck":
        """How well the model follows a prompt's requirement: each of its n images scored with the other n-1 pairs
        as the prompt (leave-one-out), against the prompt's own scores. Reuses the image features ``set_prompt``
        kept, so it costs n passes of the prompt and score heads, no image encoding; a saved prompt has none."""
        entry = self._prompt(prompt)
        if entry.features is None:
            raise PredictorError("a prompt loaded from a saved prompt file keeps no image features: the requirement "
                                 "check needs the prompt encoded from its images (set_prompt)")
        if entry.isp_num < 2:
            raise PredictorError(f"the requirement check needs at least 2 pairs, the prompt has {entry.isp_num}")
        with torch.inference_mode(), self._autocast():
            model_scores = self.model.score_leave_one_out(entry.features.to(self.device),
                                                          entry.tensor[0].to(self.device)).float().cpu().numpy()
        return RequirementCheck(entry.scale.to_user(model_scores), np.asarray(entry.scores, dtype=np.float64))

    def score(self, images, batch_size: int = 8, prompt: Union[str, EncodedPrompt, None] = None,
              workers: Optional[int] = None, progress: bool = False) -> np.ndarray:
        """Score images (paths, folders, PIL images or uint8 HxWx3 RGB arrays) under a prompt; float64 array in its
        scale. A folder stands for ``find_images(folder)``: its images in that order.

        ``prompt``: a name given to set_prompt/load_prompt (default "default") or an EncodedPrompt. ``workers``: decoding
        processes (default: ``default_workers()`` for more than one batch of files, else decoding inline). Any image
        that cannot be decoded is an ImageError; ``score_files`` skips those found in folders instead.
        """
        entry = self._prompt(prompt)
        items = []
        for item in _as_list(images):
            items.extend(find_images([item]) if _is_folder(item) else [item])
        return self._predict(items, [entry], batch_size, workers, progress)[0]

    def score_files(self, paths, prompts: Optional[Sequence[str]] = None, batch_size: int = 8,
                    workers: Optional[int] = None, progress: bool = False, strict: bool = False,
                    warn: Optional[Callable[[str], None]] = None) -> ScoredFiles:
        """Score image files and folders (``find_images``) under several prompts at once: each image is decoded once.

        ``prompts``: names given to set_prompt/load_prompt (default: every prompt, in the order they were set).
        A file found in a folder that cannot be decoded is skipped: ``warn(message)`` is called (default:
        ``warnings.warn``) and it is listed in ``ScoredFiles.skipped``. With ``strict``, or for a file named
        explicitly, it is an ImageError instead; so is a folder where no image decodes.
        """
        names = list(self.prompts) if prompts is None else list(prompts)
        if not names:
            raise PredictorError("no prompt to score under; call set_prompt or load_prompt first")
        entries = [self._prompt(name) for name in names]
        listed = _scan([paths] if isinstance(paths, (str, os.PathLike)) else paths)
        files = [path for path, _ in listed]
        skipped: Dict[int, str] = {}

        def skip(index: int, message: str) -> bool:
            if strict or listed[index][1]:  # named explicitly: the user asked for this very file
                return False
            skipped[index] = message
            (warn or (lambda text: warnings.warn(text, stacklevel=4)))(
                f"skipped {files[index]}: it cannot be decoded ({message})")
            return True

        scores = self._predict(files, entries, batch_size, workers, progress, skip)
        if len(skipped) == len(files):
            raise ImageError(f"none of the {len(files)} images found could be decoded (the first: {files[0]}: "
                             f"{skipped[0]})", index=0)
        kept = np.array([i not in skipped for i in range(len(files))], dtype=bool)
        return ScoredFiles([f for f, k in zip(files, kept) if k], {n: v[kept] for n, v in zip(names, scores)},
                           [(files[i], message) for i, message in sorted(skipped.items())])

    @explain_shared_memory_failures()
    def _predict(self, items: List[ImageInput], entries: List[EncodedPrompt], batch_size: int, workers: Optional[int],
                 progress: bool, skip: Optional[Callable[[int, str], bool]] = None) -> np.ndarray:
        """(prompts, images) scores in each prompt's scale; NaN where ``skip`` took an image that failed to decode."""
        if batch_size < 1:
            raise PredictorError(f"batch_size must be at least 1, got {batch_size}")
        if workers is None:
            paths_only = all(isinstance(im, (str, os.PathLike)) for im in items)
            workers = default_workers() if paths_only and len(items) > batch_size else 0
        prompt_tensors = [entry.tensor.to(self.device) for entry in entries]
        predictions = np.full((len(entries), len(items)), np.nan, dtype=np.float64)
        decoded = np.zeros(len(items), dtype=bool)
        from tqdm import tqdm

        with tqdm(total=len(items), unit="img", disable=not progress, dynamic_ncols=True) as bar, \
                torch.inference_mode(), self._autocast():
            done = 0
            for indices, batch in self._batches(items, batch_size, workers, skip):
                if batch is not None:
                    for row, prompt_tensor in zip(predictions, prompt_tensors):
                        row[indices] = self.model.score(batch, prompt_tensor).float().cpu().numpy()
                    decoded[indices] = True
                bar.update(min(batch_size, len(items) - done))
                done += batch_size
        scores = np.stack([entry.scale.to_user(row) for entry, row in zip(entries, predictions)])
        bad = np.flatnonzero(decoded & ~np.isfinite(scores).all(axis=0))
        if bad.size:  # never hand out NaN as a score: the caller would average or rank it silently
            i = int(bad[0])
            raise PredictorError(f"{_describe_image(items[i], i)}: the score is not finite "
                                 f"({scores[:, i].tolist()}; model output {predictions[:, i].tolist()}) for "
                                 f"{bad.size} of {len(items)} image(s); nothing was scored")
        return scores

    def save_prompt(self, path: PathLike, name: str = DEFAULT_PROMPT) -> Path:
        """Write the encoded prompt ``name`` (tensor, score scale, model fingerprint; no images) to ``path``."""
        prompt = self._prompt(name)
        from promptiqa import __version__

        obj = dict(format=PROMPT_FILE_FORMAT, format_version=PROMPT_FILE_VERSION, name=name,
                   prompt=prompt.tensor.detach().float().cpu().contiguous(),
                   score_range=[prompt.scale.low, prompt.scale.high], higher_is_better=prompt.scale.higher_is_better,
                   images=list(prompt.images), scores=[float(s) for s in prompt.scores], model=self.fingerprint,
                   version=__version__)
        path = Path(path)
        refuse_overwriting_inputs([("save_prompt path", path)],
                                  [("the checkpoint", self.checkpoint_info.get("source"))]
                                  + [("a prompt image", image) for image in prompt.images])
        atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)
        return path

    def load_prompt(self, path: PathLike, name: Optional[str] = None) -> str:
        """Load a prompt saved by ``save_prompt`` under ``name`` (default: its saved name); returns the name.

        Refuses a prompt encoded by another model (config or weights differ): its tensor means nothing to this one.
        """
        path = _prompt_file(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # foreign bytes raise many types from the unpickler
            raise PromptError(f"{path} is not a PromptIQA prompt file ({str(err).splitlines()[0]})") from None
        if not isinstance(obj, dict) or obj.get("format") != PROMPT_FILE_FORMAT:
            raise PromptError(f"{path} is not a PromptIQA prompt file (save one with Predictor.save_prompt or "
                              f"--save_prompt)")
        version = obj.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise PromptError(f"{path} is not a complete PromptIQA prompt file: its format_version is {version!r}, "
                              f"not a whole number; save it again with --save_prompt or Predictor.save_prompt")
        if version > PROMPT_FILE_VERSION:
            raise PromptError(f"{path} has prompt file format {obj['format_version']}; this version reads up to "
                              f"{PROMPT_FILE_VERSION}")
        _check_prompt_file(obj, path)
        recorded, own = obj["model"], self.fingerprint
        if recorded != own:
            if recorded.get("config") != own["config"]:
                what = f"config {recorded.get('config')}, this predictor's model has {own['config']}"
            else:
                what = (f"the same config but other weights (sha256 {str(recorded.get('weights_sha256'))[:12]}..., "
                        f"this model's {own['weights_sha256'][:12]}...)")
            raise PromptError(f"{path} was encoded by a different model ({what}); encode the requirement again from "
                              f"its images with this model")
        try:
            scale = ScoreScale(*map(float, obj["score_range"]), obj["higher_is_better"])
        except PromptError as err:
            raise PromptError(f"{path}: {err}") from None
        prompt = EncodedPrompt(obj["prompt"].to(self.device), scale, list(obj.get("images", [])),
                               list(obj.get("scores", [])))
        name = obj.get("name", DEFAULT_PROMPT) if name is None else name
        self.prompts[name] = prompt
        return name


def _check_prompt_file(obj: Dict[str, Any], path: Path) -> None:
    """Refuse a prompt file (hand-edited, or damaged) that lacks an entry or holds a wrong or non-finite one."""
    def bad(what: str) -> PromptError:
        return PromptError(f"{path} is not a complete PromptIQA prompt file: {what}; save it again with "
                           f"--save_prompt or Predictor.save_prompt")

    for key in ("model", "prompt", "score_range", "higher_is_better"):
        if key not in obj:
            raise bad(f"its '{key}' entry is missing")
    if not isinstance(obj["model"], dict) or "config" not in obj["model"]:
        raise bad("its 'model' entry is not the fingerprint of a model")
    tensor = obj["prompt"]
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or tensor.shape[0] != 1 \
            or not tensor.is_floating_point():
        raise bad(f"its 'prompt' entry is not a (1, n, {FEATURE_DIM}) float tensor")
    if tensor.shape[2] != FEATURE_DIM:
        raise bad(f"its prompt tensor is {tuple(tensor.shape)}, tokens {tensor.shape[2]} wide where the model's are "
                  f"{FEATURE_DIM}")
    if tensor.shape[1] < 2:
        raise bad(f"its prompt holds {tensor.shape[1]} image-score pairs, a prompt needs at least 2")
    if not bool(torch.isfinite(tensor).all()):
        raise bad("its prompt tensor holds NaN or infinity")
    scale = obj["score_range"]
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)):
        raise bad(f"its score_range is {scale!r}, not two numbers")
    if not isinstance(obj["higher_is_better"], bool):
        raise bad(f"its higher_is_better is {obj['higher_is_better']!r}, not true or false")


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``device`` (anything torch.device takes: cpu, cuda, cuda:1, mps) as a torch.device, CUDA when available for
    None; one clear error for a name torch does not know or a device this machine does not have."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise PredictorError(f"device {str(device)!r} is not a device torch knows ({str(err).splitlines()[0]}); "
                             f"expected e.g. cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PredictorError(f"device '{device}' was requested but CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise PredictorError(f"device '{device}' was requested but this machine has {count} CUDA device(s) "
                                 f"(cuda:0 to cuda:{count - 1})")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        is_available = getattr(backend, "is_available", None)
        if is_available is None or not is_available():
            raise PredictorError(f"device '{device}' was requested but it is not available on this machine")
    return device
