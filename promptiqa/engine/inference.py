"""Prompted evaluation: encode a dataset's ISPP once, score its test split sharded over ranks, gather the results."""
from __future__ import annotations

from typing import Dict, Optional

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
    loader = ImageLoader(dataset, batch_size=batch_size, sampler=TestShardSampler(len(dataset), env.rank,
                                                                                    env.world_size),
                         num_workers=workers, pin_memory=device.type == "cuda")
    indices, preds = [], []
    done = 0   # images of this rank's shard scored so far
    for images, _, idx in loader:
        images = normalise(images.to(device, non_blocking=True))
        with autocast(device, amp):
            if group is None:
                out = model.score(images, prompt)
            else:
                parts, start = [], 0
                while start < len(images):
                    if (done + start) % group == 0:   # a new test group: a freshly flipped prompt
                        flips = torch.rand(len(prompt_images)).numpy() < 0.5
                        prompt = model.encode_prompt(flip_batch(prompt_images, flips, flip_axis), prompt_scores)
                    end = min(len(images), start + group - (done + start) % group)
                    parts.append(model.score(images[start:end], prompt))
                    start = end
                out = torch.cat(parts)
        done += len(images)
        preds.append(out.float())
        indices.append(idx)
        if progress is not None:
            progress.update(len(idx))
    model.train(was_training)
    # indices arrive on the CPU with their batch; the predictions cross to it once, here
    local = (torch.cat(indices).tolist() if indices else [], torch.cat(preds).cpu().tolist() if preds else [])
    result = np.full(len(dataset), np.nan)
    for idx, pred in all_gather_objects(local, env):
        result[np.asarray(idx, dtype=int)] = pred
    return result


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
