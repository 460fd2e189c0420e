"""The optimiser and its learning rate: the official Adam and per-epoch cosine schedule, plus the optional
linear warm-up (--lr_warmup_steps). The rate is computed here and written into the optimiser at one site."""
from __future__ import annotations

import math
from typing import Optional

import torch


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, fused: bool = False
                    ) -> torch.optim.Optimizer:
    """Adam over every parameter, as the official train.py; ``fused`` (on CUDA) updates all parameters in one
    kernel instead of a few per tensor list, the same update rule."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, **({"fused": True} if fused else {}))


def learning_rate(base_lr: float, epochs: int, epoch: int, step: Optional[int] = None, warmup_steps: int = 0) -> float:
    """The official cosine schedule, per epoch (0-based), over ``epochs`` (recomputed when a resume extends the
    run); with ``step`` (steps done so far) also the linear ramp over the first ``warmup_steps`` steps."""
    lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if step is not None and warmup_steps > 0:
        lr *= min(1.0, (step + 1) / warmup_steps)
    return lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write ``lr`` into every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
