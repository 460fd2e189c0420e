"""Prompted evaluation: encode a dataset's ISPP once, score its test split sharded over ranks, gather the results.

``predict_sharded`` is the one loop that runs a model over a dataset's images sharded over ranks (predictions here,
image features in ``evaluation.features``)."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from ..data import ImageLoader, IQAImages, TestShardSampler
from ..data.images import explain_shared_memory_failures, normalise
from ..devices import autocast
from ..distributed import DistEnv, all_gather_objects
from ..metrics import compute_metrics
from ..models import uses_prompt
from .augment import flip_batch


def stack_items(dataset: IQAImages, positions) -> tuple:
    """uint8 images (n, 3, S, S) and float labels (n,) of ``dataset`` at ``positions`` (e.g. the sampled ISPs);
    ``normalise`` the images on their device."""
    items = [dataset[int(i)] for i in positions]
    return torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items]).float()


@torch.no_grad()
@explain_shared_memory_failures()
def predict_sharded(dataset: IQAImages, env: DistEnv, step: Callable[[torch.Tensor], torch.Tensor],
                    shape: Tuple[int, ...] = (), batch_size: int = 32, workers: int = 0, amp: str = "none",
                    progress=None) -> np.ndarray:
    """``step(images)`` for every image of ``dataset``, in its order, as float32 of ``shape`` per image (NaN where
    none came back): each rank runs its shard (``TestShardSampler``), its images normalised on the device and read
    by ``workers`` loader processes, under ``amp`` autocast; the outputs stay on the device until the shard is done
    (no host synchronisation per batch), then every rank gets all of them."""
    device = env.device
    loader = ImageLoader(dataset, batch_size=batch_size, sampler=TestShardSampler(len(dataset), env.rank,
                                                                                    env.world_size),
                         num_workers=workers, pin_memory=device.type == "cuda")
    indices, outputs = [], []
    for images, _, idx in loader:
        images = normalise(images.to(device, non_blocking=True))
        with autocast(device, amp):
            outputs.append(step(images).float())
        indices.append(idx)
        if progress is not None:
            progress.update(len(idx))
    # indices arrive on the CPU with their batch; the outputs cross to it once, here
    local = (torch.cat(indices).numpy() if indices else np.zeros(0, dtype=np.int64),
             torch.cat(outputs).cpu().numpy() if outputs else np.zeros((0,) + tuple(shape), dtype=np.float32))
    full = np.full((len(dataset),) + tuple(shape), np.nan, dtype=np.float32)
    for idx, out in all_gather_objects(local, env):
        full[idx] = out
    return full


@torch.no_grad()
def predict_split(model, dataset: IQAImages, env: DistEnv, prompt_images: Optional[torch.Tensor] = None,
                  prompt_scores: Optional[torch.Tensor] = None, batch_size: int = 32, workers: int = 0,
                  amp: str = "none", official_prompt: bool = False, flip_axis: str = "vertical",
                  progress=None) -> np.ndarray:
    """Predictions for every item of ``dataset`` (in its order), each scored once across ranks and gathered; the
    prompt images uint8, as ``stack_items`` gives them. Read by ``workers`` loader processes; the predictions stay on
    the device until the shard is done (no host synchronisation per batch).

    The prompt is encoded once (unflipped) by default; ``official_prompt`` re-encodes it, its images randomly
    flipped, for every test group of g = n + 1 consecutive images of this rank's shard (n prompt pairs), as the
    official test loop does with its groups of g images, whatever ``batch_size`` is.
    """
    was_training = model.training
    model.eval()
    device = env.device
    prompted = prompt_images is not None and uses_prompt(model)
    prompt = None
    if prompted:
        prompt_images, prompt_scores = normalise(prompt_images.to(device)), prompt_scores.to(device)
        if not official_prompt:
            with autocast(device, amp):
                prompt = model.encode_prompt(prompt_images, prompt_scores)
    group = len(prompt_images) + 1 if prompted and official_prompt else None
    done = 0   # images of this rank's shard scored so far

    def score(images: torch.Tensor) -> torch.Tensor:
        nonlocal prompt, done
        if group is None:
            return model.score(images, prompt)
        parts, start = [], 0
        while start < len(images):
            if (done + start) % group == 0:   # a new test group: a freshly flipped prompt
                flips = torch.rand(len(prompt_images)).numpy() < 0.5
                prompt = model.encode_prompt(flip_batch(prompt_images, flips, flip_axis), prompt_scores)
            end = min(len(images), start + group - (done + start) % group)
            parts.append(model.score(images[start:end], prompt))
            start = end
        done += len(images)
        return torch.cat(parts)

    try:
        return predict_sharded(dataset, env, score, batch_size=batch_size, workers=workers, amp=amp,
                               progress=progress).astype(np.float64)
    finally:
        model.train(was_training)


def broadcast_buffers(model: torch.nn.Module, env: DistEnv) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), so all ranks evaluate the same model."""
    if env.distributed:
        import torch.distributed as dist

        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)



def evaluate_test_splits(model, views, positions, env: DistEnv, batch_size: int = 32, amp: str = "none",
                         official_prompt: bool = False, flip_axis: str = "vertical", workers: int = 0,
                         part: str = "test") -> Dict[str, Dict[str, float]]:
    """Training's evaluation: each dataset's test split (``part="val"``: its validation part) scored under the ISPP
    at ``positions[key]`` of its train split, with rank 0's BatchNorm statistics on every rank, read by ``workers``
    loader processes; {dataset: SROCC, PLCC, KRCC, RMSE}."""
    broadcast_buffers(model, env)
    results = {}
    for v in views:
        images, scores = stack_items(v.train, positions[v.key])
        scored = getattr(v, part)
        pred = predict_split(model, scored, env, images, scores, batch_size=batch_size, workers=workers, amp=amp,
                             official_prompt=official_prompt, flip_axis=flip_axis)
        results[v.key] = compute_metrics(pred, scored.labels)
    return results
