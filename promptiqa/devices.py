"""Where the model runs and in which precision: the default device and the one mixed-precision (AMP) table.

Mixed precision is bfloat16 or nothing. float16 is refused everywhere (training, test.py, scoring): MAL's attention
energies are not scaled by 1/sqrt(d), so they can overflow float16's range (65504), in a training forward as in
scoring. bfloat16 has float32's range, and every GPU this project targets has it.

Importing this module does not load torch (command-line parsers read AMP_MODES).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

from .errors import ConfigError

AMP_MODES = {"bf16": "bfloat16"}        # --amp value -> the torch dtype autocast runs in
AMP_CHOICES = (*AMP_MODES, "none")      # "none": float32 throughout
FP16_REFUSAL = ("fp16 is not offered: MAL's unscaled attention energies overflow float16 (in training as in "
                "scoring); use bf16, which has float32's range, or none")


def default_device():
    """CUDA when available, else CPU: every command's default."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_amp(amp: Optional[str], option: str = "--amp") -> None:
    """Refuse an AMP mode other than bf16 / none (None counts as none); fp16 with the reason."""
    if amp in (None, "none") or amp in AMP_MODES:
        return
    if amp == "fp16":
        raise ConfigError(f"{option}: {FP16_REFUSAL}")
    raise ConfigError(f"{option}: expected one of {', '.join(AMP_CHOICES)}, got {amp!r}")


def amp_dtype(amp: str):
    """The torch dtype of AMP mode ``amp`` (one of AMP_MODES)."""
    import torch

    check_amp(amp)
    return getattr(torch, AMP_MODES[amp])


def describe_amp(amp: Optional[str]) -> str:
    """AMP mode ``amp`` in words, for logs: "float32" or "bf16 autocast"."""
    return "float32" if amp in (None, "none") else f"{amp} autocast"


def autocast(device, amp: Optional[str] = "none"):
    """torch.autocast on ``device`` for ``amp`` "bf16"; a no-op for "none" (or None)."""
    import torch

    if amp in (None, "none"):
        return nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype(amp))
