"""Row 5 of the GPU check: the resume drill. The micro model trained as a user trains it (train.sh on one GPU; with
--cpu, train.py), once uninterrupted and once stopped and resumed, on a small random dataset; the weights must be
equal bit for bit."""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from ...data.images import DEFAULT_IMAGE_SIZE
from ...fileio import json_text, write_csv
from .runner import FAIL, PASS, Context, RowResult

DATASET_KEY = "gpucheck"


@dataclass(frozen=True)
class DrillSizes:
    """The drill's dataset (images), step (groups x group size), epochs, the step it stops after, and image size."""

    images: int
    groups: int
    group_size: int
    epochs: int
    stop: int
    image_size: int


# 3 steps an epoch on a GPU, stopped in epoch 2 (resuming crosses an epoch's end and a mid-epoch position), the micro
# backbone at the official input size: its 28x28 grid takes the official head without the bilinear resize, whose CUDA backward has no
# deterministic kernel. With --cpu 2 steps, stopped mid-epoch (the CPU tests cover the rest).
GPU_DRILL = DrillSizes(images=36, groups=2, group_size=4, epochs=2, stop=4, image_size=DEFAULT_IMAGE_SIZE)
CPU_DRILL = DrillSizes(images=20, groups=2, group_size=3, epochs=1, stop=1, image_size=64)


def drill_sizes(context: Context) -> DrillSizes:
    return CPU_DRILL if context.cpu else GPU_DRILL


def write_dataset(folder: Path, n: int, seed: int = 0) -> Path:
    """A `csv` dataset of ``n`` random 32x24 PNG images with random scores in [1, 5]; returns its labels.csv."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"images/{i:03d}.png"
        if not cv2.imwrite(str(folder / name), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)):
            raise OSError(f"could not write {folder / name}")
        rows.append([name, f"{rng.uniform(1, 5):.3f}"])
    return write_csv(folder / "labels.csv", ["image", "score"], rows)


def _train_options(context: Context, labels: Path) -> List[str]:
    from ...models import PRESETS

    s, micro = drill_sizes(context), PRESETS["micro"]
    return ["--dataset", DATASET_KEY, "--data_root", f"{DATASET_KEY}={labels}", "--epochs", str(s.epochs),
            "--seed", "2024",
            "--backbone", micro["backbone"], "--image_size", str(s.image_size),
            "--backbone_kwargs", json_text(micro["backbone_kwargs"], compact=True), "--pretrained_backbone", "false",
            "--workers", "0" if context.cpu else "2", "--lr", "1e-4", "--log_every", "2", "--ddp",
            *([] if context.cpu else ["--deterministic"])]


def _launch_command(context: Context, save_path: Path, options: List[str]) -> Tuple[List[str], Dict[str, str]]:
    """train.sh on GPU 0 (as a user runs it), or train.py on the CPU with train.sh's launch options; the child
    imports this same package with this same interpreter."""
    from ...resources import python_env, shipped_config

    s = drill_sizes(context)
    root = Path(context.root) if context.root else None
    step = [str(s.groups * s.group_size), str(s.groups)]
    if context.cpu:
        script = [str(root / "train.py")] if root and (root / "train.py").is_file() else ["-m", "promptiqa", "train"]
        return ([sys.executable, *script, "--config", str(shipped_config("paper")), "--device", "cpu",
                 "--batch_size", step[0], "--groups_per_process", step[1], "--save_path", str(save_path), *options],
                python_env())
    if root is None or not (root / "train.sh").is_file():
        raise FileNotFoundError(f"train.sh is not beside the package ({Path(__file__).parents[3]}): run the GPU check "
                                f"from a checkout")
    env = python_env(GPUS="0", BATCH_SIZE=step[0], GROUPS_PER_PROCESS=step[1], SAVE_PATH=str(save_path),
                     PYTHON=sys.executable)
    return ["sh", str(root / "train.sh"), *options], env


def _train(context: Context, save_path: Path, options: List[str]) -> Tuple[int, str]:
    """Run one training launch to its end; (exit code, its output), which also goes to this item's log."""
    cmd, env = _launch_command(context, save_path, options)
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, flush=True)
    return proc.returncode, proc.stdout


def _error_line(output: str) -> str:
    """What a failed run said last about why: its last 'error: ...' or 'SomeError: ...' line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    said = [line for line in lines if re.match(r"(error: |[\w.]*(Error|Exception)\b)", line)]
    return (said or lines or [""])[-1]


def _max_weight_difference(a: Path, b: Path) -> Tuple[float, int, List[str]]:
    """Max |a - b| over the checkpoints' floating tensors, their number of elements, and the keys that differ in
    shape, dtype or (integer tensors) value."""
    from ...models import read_checkpoint

    wa, wb = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    worst, count, odd = 0.0, 0, sorted(set(wa) ^ set(wb))
    for key in sorted(set(wa) & set(wb)):
        x, y = wa[key], wb[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            odd.append(key)
        elif x.is_floating_point():
            count += x.numel()
            worst = max(worst, float((x.double() - y.double()).abs().max())) if x.numel() else worst
        elif not torch.equal(x, y):
            odd.append(key)
    return worst, count, odd


def resume(context: Context) -> Dict[str, RowResult]:
    """Row 5: the micro model trained by train.sh on one GPU (NCCL group of one, DDP), once uninterrupted and once
    stopped after a few steps (Sizes.stop) and resumed: the weights must be equal bit for bit. On CUDA the
    runs use deterministic kernels (--deterministic: cuDNN autotuning off, torch.use_deterministic_algorithms);
    with --cpu, train.py with gloo."""
    from ...models import read_checkpoint

    s = drill_sizes(context)
    work = Path(context.work)
    labels = write_dataset(work / "data", s.images)
    options = _train_options(context, labels)
    full, part = work / "uninterrupted", work / "resumed"
    runs = [("uninterrupted", full, options), ("stopped", part, options + ["--stop_after_steps", str(s.stop)]),
            ("resumed", part, options + ["--resume", str(part / "last.pth.tar")])]
    for what, save_path, opts in runs:
        code, output = _train(context, save_path, opts)
        if code != 0:
            return {"5": RowResult(FAIL, f"the {what} run exited with code {code}: {_error_line(output)}")}
    backend = "gloo" if context.cpu else "nccl"
    log = (full / "log.txt").read_text() + (part / "log.txt").read_text()
    stopped = "stopped at epoch" in (part / "log.txt").read_text()
    grouped = f"process group {backend}" in log
    worst, count, odd = _max_weight_difference(full / "last.pth.tar", part / "last.pth.tar")
    steps = [read_checkpoint(p / "last.pth.tar")["global_step"] for p in (full, part)]
    exact = worst == 0 and not odd and steps[0] == steps[1]
    problems = ([] if stopped else ["the drill did not stop"]) + ([] if grouped else [f"no 'process group "
                                                                                       f"{backend}' in log.txt"])
    how = ("train.py, gloo" if context.cpu else
           "train.sh GPUS=0, NCCL, deterministic kernels (--deterministic: cuDNN autotuning off)")
    text = (f"{'exact' if exact else 'NOT exact'}: max |Δw| {worst:.3g} over {count:,} weights"
            + (f", {len(odd)} other tensors differ" if odd else "")
            + f"; stopped after {s.stop} of {steps[0]} steps, resumed, vs uninterrupted; {how}, DDP, micro "
              f"backbone at {s.image_size} px, {s.groups}x{s.group_size} images/step"
            + ("; " + "; ".join(problems) if problems else ""))
    return {"5": RowResult(PASS if exact and not problems else FAIL, text,
                           {"max_abs_weight_difference": worst, "weights": count, "other_differences": odd,
                            "global_steps": steps, "stopped": stopped, f"process_group_{backend}": grouped})}
