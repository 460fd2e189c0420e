"""Where the model runs and in which precision: the default device, the one device check and the one mixed-precision
(AMP) table.

Mixed precision is bfloat16 or nothing. float16 is refused everywhere (training, test.py, scoring): MAL's attention
energies are not scaled by 1/sqrt(d), so they can overflow float16's range (65504), in a training forward as in
scoring. bfloat16 has float32's range, and every GPU this project targets has it.

Importing this module does not load torch (command-line parsers read AMP_MODES).
"""
from __future__ import annotations

import os
import platform
import socket
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, List, Optional

from .errors import ConfigError

AMP_MODES = {"bf16": "bfloat16"}        # --amp value -> the torch dtype autocast runs in
AMP_CHOICES = (*AMP_MODES, "none")      # "none": float32 throughout
FP16_REFUSAL = ("fp16 is not offered: MAL's unscaled attention energies overflow float16 (in training as in "
                "scoring); use bf16, which has float32's range, or none")


# The CPU's vector extensions that change which kernels torch runs, and with them the rounding of every sum: a model
# trained from scratch (the demo) goes elsewhere on an AVX2 CPU than on an AVX-512 one. /proc/cpuinfo's names.
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",     # x86
                     "asimd", "asimddp", "bf16", "i8mm", "sve", "sve2", "sme")              # Arm


def cpu_name(cpuinfo: Optional[str] = None) -> str:
    """The CPU's model name (/proc/cpuinfo; elsewhere what the platform module says)."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_vector_extensions(cpuinfo: Optional[str] = None) -> List[str]:
    """Which of VECTOR_EXTENSIONS the CPU has (its flags, /proc/cpuinfo), in VECTOR_EXTENSIONS' order."""
    flags = set()
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [name for name in VECTOR_EXTENSIONS if name in flags]


def cpu_facts() -> Dict[str, object]:
    """What a CPU run's figures depend on: the model, its vector extensions, the kernels torch picked for them
    (its CPU capability), the cores and torch's thread counts, and how torch was built (CUDA or CPU-only)."""
    import torch

    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {"model": cpu_name(), "vector_extensions": cpu_vector_extensions(), "torch_cpu_capability": capability,
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "torch_build": f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:   # not Linux
        return ""


class DeviceError(ConfigError):
    """A --device torch does not know, or one this machine does not have."""


def default_device():
    """CUDA when available, else CPU: every command's default."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _has_backend(kind: str) -> bool:
    """Whether torch reports a device of type ``kind`` (mps, xpu, ...) as available here."""
    import torch

    backend = getattr(torch.backends, kind, None) or getattr(torch, kind, None)
    is_available = getattr(backend, "is_available", None)
    return bool(is_available is not None and is_available())


def available_devices() -> List[str]:
    """The devices this machine has, as --device names them: cpu, each GPU (cuda:0, ...), then mps or xpu."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found + [kind for kind in ("mps", "xpu") if _has_backend(kind)]


def resolve_device(device=None):
    """``device`` (anything torch.device takes: cpu, cuda, cuda:1, mps; None: ``default_device()``) as a
    torch.device, checked here: every command's one device check. A name torch does not know, or a device this
    machine does not have, is one DeviceError line naming it and the devices there are."""
    import torch

    if device is None or device == "auto":
        return default_device()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"--device {device}: not a device torch knows; available here: "
                          f"{', '.join(available_devices())}") from None
    if parsed.type == "cuda":
        here = torch.cuda.is_available() and (parsed.index is None or parsed.index < torch.cuda.device_count())
    else:
        here = parsed.type == "cpu" or _has_backend(parsed.type)
    if not here:
        raise DeviceError(f"--device {device}: not available on this machine; available here: "
                          f"{', '.join(available_devices())}")
    return parsed


def gpu_identity(device) -> Optional[str]:
    """'host/GPU-uuid' of a CUDA device (None for other devices): what tells two processes' GPUs apart."""
    import torch

    if device.type != "cuda":
        return None
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    return f"{socket.gethostname()}/{uuid if uuid is not None else device.index}"


def check_amp(amp: Optional[str], option: str = "--amp") -> None:
    """Refuse an AMP mode other than bf16 / none (None counts as none); fp16 with the reason."""
    if amp in (None, "none") or amp in AMP_MODES:
        return
    if amp == "fp16":
        raise ConfigError(f"{option}: {FP16_REFUSAL}")
    raise ConfigError(f"{option}: expected one of {', '.join(AMP_CHOICES)}, got {amp!r}")


def amp_mode(amp: Optional[str], option: str = "--amp") -> str:
    """``amp`` checked (``check_amp``) and spelt as every command keeps it: "bf16", or "none" (also for None)."""
    check_amp(amp, option)
    return "none" if amp is None else amp


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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def default_workers() -> int:
    """Image-decoding processes used by default (``promptiqa score``, test.py): none up to 2 cores, then half the
    cores (at most 4).

    Measured with ``promptiqa score`` on 2 cores (docs/scoring.md, "Scoring real folders"): 4 workers were never
    the fastest, and the model already uses both cores; the rule above 2 cores is not measured.
    """
    cores = usable_cores()
    return 0 if cores <= 2 else min(4, cores // 2)
