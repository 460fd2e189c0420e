"""Training and evaluation loops.

trainer (wiring: data, model, optimiser, DDP, loaders, resume; the epoch loop) -> loop (``train_one_epoch``, the
step) -> augment (random scaling, random flipping, the image flip), virtual_ranks (step plan, per-rank random
streams, the per-group BatchNorm rule, the sampler zip), schedule (optimiser and learning rate), checkpointing
(last/best checkpoints, resume), run_folder (the run's files), inference (prompted prediction of a split).
"""
from ..errors import PromptIQAError


class TrainingError(PromptIQAError, RuntimeError):
    """A run that cannot start or go on (bad settings, non-finite loss, bad resume file)."""
