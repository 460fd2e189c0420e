"""Requirements as data: the user's score scale, the prompt files a user writes and the prompts the Predictor saves.

A requirement is a prompt of image-score pairs in the user's own scale (1-5 stars, a 0-100 MOS, a DMOS where lower
is better). A ScoreScale maps those scores onto the model's [0, 1] labels and predictions back. Pairs are read from a
CSV ``image,score`` or the official demo's JSON; an encoded prompt (a (1, n, 128) tensor) is saved to a small file
(the saved-prompt format, ``PROMPT_FILE_FORMAT``) that records the model it was encoded by, and reused without its
images.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from promptiqa.errors import PromptIQAError
from promptiqa.models.checkpoint import state_dict_sha256
from promptiqa.models.promptiqa import FEATURE_DIM

PathLike = Union[str, os.PathLike]
DEFAULT_PROMPT = "default"
PROMPT_FILE_FORMAT = "promptiqa-prompt"
PROMPT_FILE_VERSION = 1   # version 1 records the model as its config and weights_sha256 (state_dict_sha256)


class PredictorError(PromptIQAError, ValueError):
    """A request the Predictor cannot serve (unknown prompt name, a prompt it cannot use, ...)."""


class PromptError(PredictorError):
    """A prompt that cannot express a requirement: too few pairs, bad scores, a foreign or mismatched prompt file.

    ``index`` is the position of the offending pair when there is one, so callers can name its row or entry.
    """

    def __init__(self, message: str, index: Optional[int] = None):
        super().__init__(message)
        self.index = index


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


@dataclass
class PromptPairs:
    """Image-score pairs read from a prompt file, where each came from (for messages), and the scale its format
    implies (None: the prompt's own min and max)."""

    images: List[Path]
    scores: List[float]
    origins: List[str]
    score_range: Optional[Tuple[float, float]] = None


def read_score(value: Any, where: str) -> float:
    """A prompt score as a finite float; anything else is a PromptError naming ``where`` it was read."""
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
                yield row[columns["image"]], read_score((row[columns["score"]] or "").strip(), where), where
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
        scores.append(read_score(score, where))
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


def model_fingerprint(model: torch.nn.Module) -> Dict[str, Any]:
    """What identifies a model for its prompts: its config and the SHA-256 of its state_dict (``state_dict_sha256``)."""
    return dict(config=dict(model.config), weights_sha256=state_dict_sha256(model))


def saved_prompt(prompt: EncodedPrompt, name: str, fingerprint: Dict[str, Any]) -> Dict[str, Any]:
    """What a saved prompt file holds: the prompt tensor, its score scale, the model's fingerprint; no images."""
    from promptiqa import __version__

    return dict(format=PROMPT_FILE_FORMAT, format_version=PROMPT_FILE_VERSION, name=name,
                prompt=prompt.tensor.detach().float().cpu().contiguous(),
                score_range=[prompt.scale.low, prompt.scale.high], higher_is_better=prompt.scale.higher_is_better,
                images=list(prompt.images), scores=[float(s) for s in prompt.scores], model=fingerprint,
                version=__version__)


def read_saved_prompt(path: PathLike, fingerprint: Dict[str, Any],
                      device: Union[str, torch.device] = "cpu") -> Tuple[str, EncodedPrompt]:
    """(saved name, EncodedPrompt on ``device``) of a file ``saved_prompt`` wrote; refuses a prompt encoded by another
    model than the one ``fingerprint`` identifies (config or weights differ): its tensor means nothing to this one."""
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
    recorded = obj["model"]
    if recorded != fingerprint:
        if recorded.get("config") != fingerprint["config"]:
            what = f"config {recorded.get('config')}, this predictor's model has {fingerprint['config']}"
        else:
            what = (f"the same config but other weights (sha256 {str(recorded.get('weights_sha256'))[:12]}..., "
                    f"this model's {fingerprint['weights_sha256'][:12]}...)")
        raise PromptError(f"{path} was encoded by a different model ({what}); encode the requirement again from "
                          f"its images with this model")
    try:
        scale = ScoreScale(*map(float, obj["score_range"]), obj["higher_is_better"])
    except PromptError as err:
        raise PromptError(f"{path}: {err}") from None
    prompt = EncodedPrompt(obj["prompt"].to(device), scale, list(obj.get("images", [])), list(obj.get("scores", [])))
    return obj.get("name", DEFAULT_PROMPT), prompt


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
