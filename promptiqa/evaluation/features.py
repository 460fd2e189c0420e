"""Test-split image features computed once and scored under many prompts.

The ISP experiments score the same test images under dozens of ISPPs (sizes, random draws, perturbations). The
visual encoder (MoNet) is almost all of the cost and does not depend on the prompt, so its 128-d features are
computed once (sharded over ranks and gathered by ``engine.inference.predict_sharded``) and each prompt then costs only the ISPP fusion and the 8
image-prompt fusion blocks (``model.score_features``, which ``model.score`` itself uses).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..data.images import normalise
from ..devices import autocast
from ..distributed import DistEnv
from ..engine.inference import predict_sharded
from ..models import uses_prompt
from ..models.promptiqa import FEATURE_DIM


class FeatureBank:
    """A dataset's image features under ``model`` (eval mode), every rank holding all of them."""

    def __init__(self, model, dataset, env: DistEnv, batch_size: int = 32, workers: int = 0, amp: str = "none",
                 progress=None):
        self.model, self.env, self.amp = model, env, amp
        model.eval()
        features = predict_sharded(dataset, env, model.image_features, (FEATURE_DIM,), batch_size, workers, amp,
                                   progress)
        self.features = torch.from_numpy(features).to(env.device)

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
