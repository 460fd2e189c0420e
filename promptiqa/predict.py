"""Scoring images under a requirement: the Predictor.

A requirement is a prompt of image-score pairs in the user's own scale; the Predictor encodes it once into a
(1, n, 128) tensor (score scales, prompt files and the saved-prompt format: ``promptiqa.prompt_files``) and scores
files, folders, PIL images and arrays under it (``promptiqa.data.inputs``: decoded through the training pipeline;
batches cross the loader as uint8 and are ``normalise``d on the device).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from promptiqa.data.images import ImageLoader, explain_shared_memory_failures, normalise
from promptiqa.data.inputs import (IMAGE_SUFFIXES, FoundImages, ImageError, ImageInput, ImageInputs, ScoredFiles,
                                   as_image_list, collate_inputs, describe_image, find_images, is_folder, load_rgb)
from promptiqa.devices import amp_mode, autocast, default_workers, resolve_device
from promptiqa.errors import ConfigError
from promptiqa.fileio import atomic_write, refuse_overwriting_inputs
from promptiqa.hub import RELEASE
from promptiqa.models import CheckpointError, load_model
from promptiqa.prompt_files import (DEFAULT_PROMPT, EncodedPrompt, PredictorError, PromptError, ScoreScale,
                                    is_saved_prompt, model_fingerprint, read_prompt_pairs, read_prompt_rows,
                                    read_saved_prompt, read_score, saved_prompt)
from promptiqa.models import unwrap, uses_prompt

PathLike = Union[str, os.PathLike]
# Importable from here as before the split (the score command, scripts/benchmark_score.py, the tests).
__all__ = ["DEFAULT_PROMPT", "IMAGE_SUFFIXES", "NO_CHECK_FOR_SAVED_PROMPT", "REQUIREMENT_CHECK_MIN_SROCC",
           "EncodedPrompt", "ImageError", "Predictor", "PredictorError", "PromptError", "RequirementCheck",
           "ScoreScale", "ScoredFiles", "default_workers", "find_images", "is_saved_prompt", "load_rgb",
           "model_fingerprint", "read_prompt_pairs", "read_prompt_rows", "resolve_device"]


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

        ``amp="bf16"`` runs under bfloat16 autocast (``Predictor.amp``: "bf16" or "none"). The model's weights must
        not change while the Predictor is used.
        """
        model = unwrap(model)
        if not uses_prompt(model):
            raise TypeError(f"Predictor needs a PromptIQA model (arch 'promptiqa'), got {type(model).__name__} "
                            f"{getattr(model, 'config', {}).get('arch', '')}".rstrip())
        try:
            amp = amp_mode(amp, option="amp")   # None and "none": float32, as every command reads it
        except ConfigError as err:
            raise PredictorError(str(err)) from None
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

    def _batches(self, images: Sequence[ImageInput], batch_size: int, workers: int,
                 skip: Optional[Callable[[int, str], bool]] = None):
        """(input indices, normalised (B, 3, S, S) batch on the device or None), decoded by ``workers`` background
        processes (0: inline). An image that fails to decode is an ImageError unless ``skip(index, message)``
        takes it (returns True): then it is left out of its batch."""
        loader = ImageLoader(ImageInputs(images, self.image_size), batch_size=batch_size, shuffle=False,
                             num_workers=workers, collate_fn=collate_inputs, pin_memory=self.device.type == "cuda")
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
        items = as_image_list(images)
        values = [read_score(s, f"prompt pair {i + 1}") for i, s in enumerate(scores)]
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
        with torch.inference_mode(), autocast(self.device, self.amp):
            # Each pair is encoded independently (per-ISP encoder, eval-mode BatchNorm), so chunks concatenate.
            for _, batch in self._batches(items, batch_size, workers=0):
                stop = start + batch.shape[0]
                features.append(self.model.image_features(batch))
                chunks.append(self.model.encode_prompt_features(features[-1], labels[start:stop].to(self.device))
                              .float())
                start = stop
        prompt = EncodedPrompt(torch.cat(chunks, dim=1), scale,
                               [describe_image(im, i) for i, im in enumerate(items)], values,
                               torch.cat(features).float())
        if not bool(torch.isfinite(prompt.tensor).all()):
            raise PromptError("the encoded prompt is not finite (NaN or infinity): the model overflowed on these "
                              "images" + (" under --amp bf16; try without it" if self.amp != "none" else ""))
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
        with torch.inference_mode(), autocast(self.device, self.amp):
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
        for item in as_image_list(images):
            items.extend(find_images([item]) if is_folder(item) else [item])
        return self._predict(items, [entry], batch_size, workers, progress)[0]

    def score_files(self, paths, prompts: Optional[Sequence[str]] = None, batch_size: int = 8,
                    workers: Optional[int] = None, progress: bool = False, strict: bool = False,
                    warn: Optional[Callable[[str], None]] = None) -> ScoredFiles:
        """Score image files and folders (``find_images``; or its answer, then nothing is scanned again) under several
        prompts at once: each image is decoded once.

        ``prompts``: names given to set_prompt/load_prompt (default: every prompt, in the order they were set).
        A file found in a folder that cannot be decoded is skipped: ``warn(message)`` is called (default:
        ``warnings.warn``) and it is listed in ``ScoredFiles.skipped``. With ``strict``, or for a file named
        explicitly, it is an ImageError instead; so is a folder where no image decodes.
        """
        names = list(self.prompts) if prompts is None else list(prompts)
        if not names:
            raise PredictorError("no prompt to score under; call set_prompt or load_prompt first")
        entries = [self._prompt(name) for name in names]
        files = paths if isinstance(paths, FoundImages) else find_images(paths)   # found once: not scanned again
        skipped: Dict[int, str] = {}

        def skip(index: int, message: str) -> bool:
            if strict or files.named[index]:  # named explicitly: the user asked for this very file
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
                torch.inference_mode(), autocast(self.device, self.amp):
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
            raise PredictorError(f"{describe_image(items[i], i)}: the score is not finite "
                                 f"({scores[:, i].tolist()}; model output {predictions[:, i].tolist()}) for "
                                 f"{bad.size} of {len(items)} image(s); nothing was scored")
        return scores

    def save_prompt(self, path: PathLike, name: str = DEFAULT_PROMPT) -> Path:
        """Write the encoded prompt ``name`` (tensor, score scale, model fingerprint; no images) to ``path``."""
        prompt = self._prompt(name)
        obj = saved_prompt(prompt, name, self.fingerprint)
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
        saved_name, prompt = read_saved_prompt(path, self.fingerprint, self.device)
        name = saved_name if name is None else name
        self.prompts[name] = prompt
        return name
