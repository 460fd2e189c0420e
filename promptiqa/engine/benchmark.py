"""Training and inference throughput (images/s) and peak memory of a configuration on this machine's device.

Synthetic inputs, warm-up excluded; the training step is the engine's own (k groups of g images per step).
Example (the paper's step on one GPU):
    python -m promptiqa benchmark --groups 6 --group_size 11 --amp bf16 --compile   # or scripts/benchmark.py
"""
from __future__ import annotations

import argparse
import time

import torch

from ..config import TrainConfig
from ..devices import AMP_CHOICES, autocast, default_device
from ..distributed import DistEnv
from ..models import PRESETS
from .augment import PromptAugment
from .loop import TrainStep
from .schedule import build_optimizer
from .trainer import build_training_model
from .virtual_ranks import plan_steps, seed_process, virtual_ranks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float:
    """Peak GPU memory since the last reset; on CPU the process's peak resident memory (never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="official", choices=sorted(PRESETS))
    p.add_argument("--model", default="promptiqa", choices=["promptiqa", "promptiqa_wo_prompt"])
    p.add_argument("--groups", type=int, default=6, help="groups per optimiser step (one process)")
    p.add_argument("--group_size", type=int, default=11)
    p.add_argument("--batch_groups", action="store_true", help="run the groups as one batch")
    p.add_argument("--grad_checkpointing", action="store_true")
    p.add_argument("--amp", default="bf16", choices=AMP_CHOICES)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no_tf32", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--infer_batch", type=int, default=64)
    p.add_argument("--infer_batches", type=int, default=10)
    p.add_argument("--device", default=default_device().type)
    p.add_argument("--skip_train", action="store_true")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    preset = PRESETS[args.preset]
    cfg = TrainConfig(batch_size=args.groups * args.group_size, groups_per_process=args.groups, amp=args.amp,
                      batch_groups=args.batch_groups, compile=args.compile, tf32=not args.no_tf32,
                      backbone=preset["backbone"], image_size=preset["image_size"],
                      backbone_kwargs=preset.get("backbone_kwargs") or {}, model=args.model, pretrained_backbone=False,
                      grad_checkpointing=args.grad_checkpointing)
    env = DistEnv(device=device)
    seed_process(cfg.seed, 0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
    model = build_training_model(cfg, device)
    net = torch.compile(model) if args.compile else model
    size = model.image_size
    rows = []
    if not args.skip_train:
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, fused=device.type == "cuda")
        step = TrainStep(net, model, optimizer, cfg, env, plan_steps(cfg.batch_size, 1, args.groups),
                         virtual_ranks(0, args.groups, cfg.seed, device),
                         PromptAugment(cfg.seed, cfg.random_scale_rate, cfg.random_flipping_rate))
        images = torch.rand(cfg.batch_size, 3, size, size, device=device) * 2 - 1
        labels = torch.rand(cfg.batch_size, device=device)
        net.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                _sync(device)
                start = time.perf_counter()
            step(images, labels)
        _sync(device)
        rate = args.steps * cfg.batch_size / (time.perf_counter() - start)
        rows.append(("train", f"{args.groups}x{args.group_size} images/step", rate, _peak_gb(device)))
    model.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        prompt_images = torch.rand(args.group_size - 1, 3, size, size, device=device) * 2 - 1
        with autocast(device, args.amp):
            prompt = model.encode_prompt(prompt_images, torch.rand(args.group_size - 1, device=device)) \
                if args.model == "promptiqa" else None
        batch = torch.rand(args.infer_batch, 3, size, size, device=device) * 2 - 1
        for i in range(args.warmup + args.infer_batches):
            if i == args.warmup:
                _sync(device)
                start = time.perf_counter()
            with autocast(device, args.amp):
                model.score(batch, prompt)
        _sync(device)
    rate = args.infer_batches * args.infer_batch / (time.perf_counter() - start)
    rows.append(("inference", f"batch {args.infer_batch}, prompt encoded once", rate, _peak_gb(device)))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; preset {args.preset}; amp {args.amp}; compile {args.compile}; "
          f"tf32 {not args.no_tf32}; batch_groups {args.batch_groups}")
    print(f"| {'mode':<9} | {'setting':<34} | {'images/s':>9} | {'peak GiB':>8} |")
    print(f"|{'-' * 11}|{'-' * 36}|{'-' * 11}|{'-' * 10}|")
    for mode, setting, rate, peak in rows:
        print(f"| {mode:<9} | {setting:<34} | {rate:>9.1f} | {peak:>8.2f} |")
    return 0
