"""The images a user scores: files, folders, PIL images and arrays, through the training pipeline.

Files are decoded by ``read_image``; PIL images and arrays get the same bicubic resize of the uint8 image. A folder is
scanned once (``find_images``), its files in a fixed order. Decoding errors travel as data (``ImageInputs``), so the
scorer can skip a broken file found in a folder and name one given explicitly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import PromptIQAError
from .images import read_image, resize_image, to_chw

PathLike = Union[str, os.PathLike]
ImageInput = Union[PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821 - PIL is optional at import time
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PIL_16_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N")  # what PIL opens a 16-bit grayscale PNG or TIFF as


class ImageError(PromptIQAError, OSError):
    """An image that cannot be read (missing, corrupt, unsupported format); ``index`` is its position in the input."""

    def __init__(self, message: str, index: Optional[int] = None):
        super().__init__(message)
        self.index = index


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


def as_image_list(images) -> list:
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


def describe_image(image: Any, i: int) -> str:
    """How an input is named in prompt files and messages: its path, or its position for in-memory images."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return getattr(image, "filename", "") or f"<{type(image).__name__} {i}>"  # PIL keeps the file it was opened from


class ImageInputs(Dataset):
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
                f"{describe_image(self.images[i], i)}: {err}"
            return i, None, message


def collate_inputs(items):
    """A batch as (indices of the decoded images, their stacked tensor or None, [(index, message)] of the others)."""
    good = [(i, tensor) for i, tensor, message in items if message is None]
    errors = [(i, message) for i, _, message in items if message is not None]
    tensor = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], tensor, errors


class FoundImages(list):
    """``find_images``' answer: the files in order, and for each whether it was named explicitly (``named``), not
    found by scanning a folder. Given to ``Predictor.score_files``, it is scored without scanning the folders again."""

    def __init__(self, found: Iterable[Tuple[Path, bool]] = ()):
        found = list(found)
        super().__init__(path for path, _ in found)
        self.named = [named for _, named in found]


def find_images(paths: Iterable[PathLike]) -> FoundImages:
    """Files as given, and folders scanned recursively for common image types (case-insensitive suffixes).

    Deterministic: a folder's files in sorted order, then its sub-folders in sorted order. Hidden files and folders
    (names starting with '.', e.g. macOS '._photo.jpg' resource forks) are skipped.
    """
    found: List[Tuple[Path, bool]] = []
    for path in map(Path, [paths] if isinstance(paths, (str, os.PathLike)) else paths):
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
    return FoundImages(found)


def is_folder(item: Any) -> bool:
    """Whether ``item`` is a path naming a folder (which stands for the images ``find_images`` finds in it)."""
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
