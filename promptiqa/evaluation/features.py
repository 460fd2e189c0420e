"""Test-split image features computed once and scored under many prompts.

The ISP experiments score the same test images under dozens of ISPPs (sizes, random draws, perturbations). The
visual encoder (MoNet) is almost all of the cost and does not depend on the prompt, so its 128-d features are
computed once (sharded over ranks, gathered) and each prompt then costs only the ISPP fusion and the 8
image-prompt fusion blocks (``model.score_features``, which ``model.score`` itself uses).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..data.groups import TestShardSampler
from ..data.images import ImageLoader, explain_shared_memory_failures, normalise
from ..distributed import DistEnv, all_gather_objects
from ..devices import autocast
from ..models import uses_prompt


class FeatureBank:
    """A dataset's image features under ``model`` (eval mode), every rank holding all of them."""

    @explain_shared_memory_failures()
    def __init__(self, model, dataset, env: DistEnv, batch_size: int = 32, workers: int = 0, amp: str = "none",
                 progress=None):
        self.model, self.env, self.amp = model, env, amp
        model.eval()
        device = env.device
        loader = ImageLoader(dataset, batch_size=batch_size, sampler=TestShardSampler(len(dataset), env.rank,
                                                                                      env.world_size),
                             num_workers=workers, pin_memory=device.type == "cuda")
        indices, feats = [], []
        with torch.no_grad():
            for images, _, idx in loader:
                with autocast(device, amp):
                    feats.append(model.image_features(normalise(images.to(device, non_blocking=True))).float())
                indices.append(idx)
                if progress is not None:
                    progress.update(len(idx))
        local = (torch.cat(indices).numpy() if indices else np.zeros(0, dtype=np.int64),
                 torch.cat(feats).cpu().numpy() if feats else np.zeros((0, 0), dtype=np.float32))
        full = None
        for idx, f in all_gather_objects(local, env):
            if len(idx):
                if full is None:
                    full = np.zeros((len(dataset), f.shape[1]), dtype=np.float32)
                full[idx] = f
        self.features = torch.from_numpy(full if full is not None else np.zeros((0, 128), np.float32)).to(device)

    def __len__(self) -> int:
        return len(self.features)

    @torch.no_grad()
    def score(self, prompt_images: Optional[torch.Tensor], prompt_scores: Optional[torch.Tensor],
              chunk: int = 4096) -> np.ndarray:
        """Predictions for every image under the prompt (None for a model without prompts; uint8 prompt images, as
        ``stack_items`` gives them)."""
        model, device = self.model, self.env.device
        prompt = None
        with autocast(device, self.amp):
            if prompt_images is not None and uses_prompt(model):
                prompt = model.encode_prompt(normalise(prompt_images.to(device)), prompt_scores.to(device))
            out = [model.score_features(self.features[i:i + chunk], prompt).float().cpu()
                   for i in range(0, len(self.features), chunk)]
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
