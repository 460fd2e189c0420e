"""Training and inference throughput (images/s) and peak memory of a configuration on this machine's device.

Synthetic inputs, warm-up excluded; the training step is the engine's own (k groups of g images per step).
Example (the paper's step on one GPU):
    python -m promptiqa benchmark --groups 6 --group_size 11 --amp bf16 --compile   # or scripts/benchmark.py
The measurements are functions (``measure_training``, ``measure_inference``) returning numbers; gpu_check calls them.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from ..config import TrainConfig, add_options
from ..devices import amp_mode, autocast, resolve_device
from ..distributed import DistEnv
from ..models import PRESETS, uses_prompt
from .augment import PromptAugment
from .loop import TrainStep
from .schedule import build_optimizer
from .trainer import build_training_model, cuda_settings
from .virtual_ranks import plan_steps, seed_process, virtual_ranks


@dataclass
class Throughput:
    """Images per second and peak memory (GiB: allocated and reserved by torch on CUDA; the process's peak resident
    memory on CPU, never reset, so reserved is None there)."""

    images_per_s: float
    peak_gib: float
    peak_reserved_gib: Optional[float] = None


def benchmark_config(preset: str = "official", model: str = "promptiqa", groups: int = 6, group_size: int = 11,
                     amp: str = "bf16", compile: bool = False, tf32: bool = True, batch_groups: bool = False,
                     grad_checkpointing: bool = False) -> TrainConfig:
    """The TrainConfig of one process training ``groups`` groups of ``group_size`` images per step with a preset
    model (random initialisation: no download)."""
    spec = PRESETS[preset]
    return TrainConfig(batch_size=groups * group_size, groups_per_process=groups, amp=amp, batch_groups=batch_groups,
                       compile=compile, tf32=tf32, backbone=spec["backbone"], image_size=spec["image_size"],
                       backbone_kwargs=spec.get("backbone_kwargs") or {}, model=model, pretrained_backbone=False,
                       grad_checkpointing=grad_checkpointing)


def build_train_step(cfg: TrainConfig, device: torch.device, env: Optional[DistEnv] = None,
                     backend: str = "inductor") -> Tuple[torch.nn.Module, TrainStep]:
    """The model and the engine's TrainStep for ``cfg`` in one process, as the trainer wires them (torch.compile
    with ``backend``, DDP when ``env`` has a process group, fused Adam on CUDA). The model is created on ``device``
    directly."""
    env = env or DistEnv(device=device)
    seed_process(cfg.seed, env.rank)
    with device:   # parameters initialised where they live: the official model's 318M take seconds on a CPU
        model = build_training_model(cfg, device)
    net = torch.compile(model, backend=backend) if cfg.compile else model
    if env.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, fused=device.type == "cuda")
    groups = cfg.groups_per_process
    step = TrainStep(net, model, optimizer, cfg, env, plan_steps(cfg.batch_size, 1, groups),
                     virtual_ranks(env.rank, groups, cfg.seed, device),
                     PromptAugment(cfg.seed, cfg.random_scale_rate, cfg.random_flipping_rate))
    return model, step


def synthetic_batch(n: int, size: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` random images in the model's input range [-1, 1] and ``n`` scores in [0, 1]."""
    return torch.rand(n, 3, size, size, device=device) * 2 - 1, torch.rand(n, device=device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> Tuple[float, Optional[float]]:
    """Peak GPU memory allocated and reserved since the last reset (GiB); on CPU the process's peak resident memory
    (never reset) and None."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30, torch.cuda.max_memory_reserved(device) / 2 ** 30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, None


def time_steps(step: TrainStep, images: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int,
               warmed_up: Optional[Callable[[], None]] = None) -> Throughput:
    """Run ``warmup`` + ``steps`` training steps on one batch, under the trainer's CUDA settings; images/s over the
    last ``steps`` (``warmed_up`` is called between) and the peak memory of all of them."""
    device = images.device
    step.net.train()
    reset_peak(device)
    with cuda_settings(step.cfg, device):
        for i in range(warmup + steps):
            if i == warmup:
                sync(device)
                if warmed_up is not None:
                    warmed_up()
                start = time.perf_counter()
            step(images, labels)
        sync(device)
    elapsed = time.perf_counter() - start
    return Throughput(steps * len(images) / max(elapsed, 1e-9), *peak_memory(device))


def measure_training(cfg: TrainConfig, device: torch.device, steps: int = 10, warmup: int = 3,
                     env: Optional[DistEnv] = None, warmed_up: Optional[Callable[[], None]] = None,
                     backend: str = "inductor") -> Tuple[torch.nn.Module, Throughput]:
    """Training images/s and peak memory of ``cfg``'s step in one process on synthetic inputs (``build_train_step``,
    ``time_steps``); returns the model too, for an inference measurement after it."""
    model, step = build_train_step(cfg, device, env, backend)
    images, labels = synthetic_batch(cfg.batch_size, model.image_size, device)
    return model, time_steps(step, images, labels, steps, warmup, warmed_up)


def measure_inference(model: torch.nn.Module, device: torch.device, amp: str = "none", prompt_size: int = 10,
                      batch: int = 64, batches: int = 10, warmup: int = 3, tf32: bool = True) -> Throughput:
    """Scoring images/s of ``model`` in batches of ``batch`` with a prompt of ``prompt_size`` pairs encoded once
    (no prompt for the model without one), and the peak memory while scoring."""
    model.eval()
    size = model.image_size
    reset_peak(device)
    with torch.inference_mode(), cuda_settings(TrainConfig(tf32=tf32), device):
        prompt_images, prompt_scores = synthetic_batch(prompt_size, size, device)
        with autocast(device, amp):
            prompt = model.encode_prompt(prompt_images, prompt_scores) if uses_prompt(model) else None
        images, _ = synthetic_batch(batch, size, device)
        for i in range(warmup + batches):
            if i == warmup:
                sync(device)
                start = time.perf_counter()
            with autocast(device, amp):
                model.score(images, prompt)
        sync(device)
    elapsed = time.perf_counter() - start
    return Throughput(batches * batch / max(elapsed, 1e-9), *peak_memory(device))


def build_parser() -> argparse.ArgumentParser:
    """The benchmark command's command line."""
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="official", choices=sorted(PRESETS))
    p.add_argument("--model", default="promptiqa", choices=["promptiqa", "promptiqa_wo_prompt"])
    p.add_argument("--groups", type=int, default=6, help="groups per optimiser step (one process)")
    p.add_argument("--group_size", type=int, default=11)
    p.add_argument("--batch_groups", action="store_true", help="run the groups as one batch")
    p.add_argument("--grad_checkpointing", action="store_true")
    add_options(p, ["amp"])   # the same option, and default (none: float32), as every command's
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no_tf32", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--infer_batch", type=int, default=64)
    p.add_argument("--infer_batches", type=int, default=10)
    add_options(p, ["device"])
    p.add_argument("--skip_train", action="store_true")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)

    device, args.amp = resolve_device(args.device), amp_mode(args.amp)
    cfg = benchmark_config(args.preset, args.model, args.groups, args.group_size, args.amp, args.compile,
                           not args.no_tf32, args.batch_groups, args.grad_checkpointing)
    rows = []
    if args.skip_train:
        seed_process(cfg.seed, 0)
        with device:
            model = build_training_model(cfg, device)
    else:
        model, train = measure_training(cfg, device, args.steps, args.warmup)
        rows.append(("train", f"{args.groups}x{args.group_size} images/step", train))
    infer = measure_inference(model, device, args.amp, args.group_size - 1, args.infer_batch, args.infer_batches,
                              args.warmup, tf32=cfg.tf32)
    rows.append(("inference", f"batch {args.infer_batch}, prompt encoded once", infer))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; preset {args.preset}; amp {args.amp}; compile {args.compile}; "
          f"tf32 {cfg.tf32}; batch_groups {args.batch_groups}")
    print(f"| {'mode':<9} | {'setting':<34} | {'images/s':>9} | {'peak GiB':>8} |")
    print(f"|{'-' * 11}|{'-' * 36}|{'-' * 11}|{'-' * 10}|")
    for mode, setting, result in rows:
        print(f"| {mode:<9} | {setting:<34} | {result.images_per_s:>9.1f} | {result.peak_gib:>8.2f} |")
    return 0
