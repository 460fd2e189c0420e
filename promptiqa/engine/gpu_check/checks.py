"""The GPU check's items, one small function each, and their registry (CHECKS, in the order they run).

Each function takes the runner's Context and returns {row id: RowResult}. On a GPU they use the official model at
the paper's step (6 groups of 11); with --cpu the micro model at the smallest step (2 groups of 3), so the same code
runs in seconds and CI keeps it from rotting. Rows and pass criteria: see promptiqa/engine/gpu_check/__init__.py.
"""
from __future__ import annotations

import collections
import copy
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ...data.images import DEFAULT_IMAGE_SIZE
from ...devices import cpu_name
from ...fileio import json_text, write_csv
from ...models.reference_weights import FIDELITY_TOLERANCE, read_vector, reference_state_dict, vector_errors
from .runner import FAIL, INFO, NA, PASS, WARN, Check, Context, RowResult

TRAIN_TARGET = 150.0             # images/s at the paper's step, bf16 + compile, one H100 (docs/training.md, "Speed")
TRAIN_MEMORY_TARGET_GIB = 40.0
INFERENCE_TARGET = 500.0         # images/s, bf16, prompt encoded once
CARD_GIB = 24.0                  # an RTX 3090
OUTSIDE_ALLOCATOR_GIB = 1.0      # CUDA context, cuBLAS workspaces, NCCL buffers: outside torch's allocator's count
DATASET_KEY = "gpucheck"


@dataclass(frozen=True)
class Sizes:
    """How big the measured work is: the model preset, the step (groups x group size), steps timed after warm-up,
    inference batches, and the resume drill's dataset, step, epochs and the step it stops after."""

    preset: str
    groups: int
    group_size: int
    warmup: int
    steps: int
    infer_batch: int
    infer_batches: int
    drill_images: int
    drill_groups: int
    drill_group_size: int
    drill_epochs: int
    drill_stop: int
    drill_image_size: int


# The drill: 3 steps an epoch on a GPU, stopped in epoch 2 (resuming crosses an epoch's end and a mid-epoch
# position), the micro backbone at the official input size: its 28x28 grid takes the official head without the bilinear resize, whose
# CUDA backward has no deterministic kernel. With --cpu 2 steps, stopped mid-epoch (the CPU tests cover the rest).
GPU_SIZES = Sizes("official", 6, 11, warmup=2, steps=5, infer_batch=64, infer_batches=8, drill_images=36,
                  drill_groups=2, drill_group_size=4, drill_epochs=2, drill_stop=4,
                  drill_image_size=DEFAULT_IMAGE_SIZE)
CPU_SIZES = Sizes("micro", 2, 3, warmup=1, steps=1, infer_batch=8, infer_batches=2, drill_images=20,
                  drill_groups=2, drill_group_size=3, drill_epochs=1, drill_stop=1, drill_image_size=64)


def sizes(context: Context) -> Sizes:
    return CPU_SIZES if context.cpu else GPU_SIZES


def _tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


def _memory(peak_gib: float, reserved_gib: Optional[float]) -> str:
    if reserved_gib is None:
        return f"peak RSS {peak_gib:.2f} GiB"
    return f"peak {peak_gib:.2f} GiB ({reserved_gib:.2f} reserved)"


# ---------------------------------------------------------------------------------------------------- device facts

def device_facts(context: Context) -> Dict[str, str]:
    """What the report's head says about the machine (the runner calls it like an item)."""
    facts = {"torch": torch.__version__, "python": platform.python_version(), "cpu cores": str(os.cpu_count())}
    if context.cpu:
        facts["device"] = f"CPU: {cpu_name()} ({torch.get_num_threads()} threads)"
        return facts
    props = torch.cuda.get_device_properties(0)
    facts["device"] = (f"{props.name}, {props.total_memory / 2 ** 30:.1f} GiB, compute capability "
                       f"{props.major}.{props.minor} ({torch.cuda.device_count()} visible)")
    facts["driver"] = _nvidia_smi("driver_version") or "unknown (no nvidia-smi)"
    facts["CUDA"] = f"{torch.version.cuda} (torch's runtime)"
    facts["cuDNN"] = str(torch.backends.cudnn.version())
    nccl = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else None
    facts["NCCL"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    return facts


def _nvidia_smi(query: str) -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


# ---------------------------------------------------------------------------------------------------- 1: fidelity

def fidelity(context: Context) -> Dict[str, RowResult]:
    """Row 1: float32, TF32 off. On a GPU with a test vector: the official model with the reference weights against
    the official model's outputs. Otherwise the same random-initialised model in float32 on the device against
    float64 on the CPU."""
    device = torch.device(context.device)
    _tf32(False)
    if context.reference and not context.cpu:
        return {"1": _reference_vector(Path(context.reference), device)}
    return {"1": _against_float64(sizes(context).preset, device)}


def _reference_vector(path: Path, device: torch.device) -> RowResult:
    from ...models import PromptIQA

    vector = read_vector(path)
    with device:
        model = PromptIQA(pretrained_backbone=False)
    model.load_state_dict(reference_state_dict(model, int(vector["seed"])), strict=True)
    errors = vector_errors(model.eval(), vector, device)
    ok = max(errors.values()) <= FIDELITY_TOLERANCE
    return RowResult(PASS if ok else FAIL,
                     f"official model, reference weights, on {device.type}: max |Δ| "
                     + ", ".join(f"{v:.1e} {k}" for k, v in errors.items())
                     + f" {'≤' if ok else '>'} {FIDELITY_TOLERANCE:g} against the test vector ({path})",
                     {"max_abs_error": errors, "tolerance": FIDELITY_TOLERANCE, "reference": str(path)})


def _against_float64(preset: str, device: torch.device) -> RowResult:
    from ...models import build_model

    torch.manual_seed(0)
    model = build_model("promptiqa", preset=preset, pretrained_backbone=False).eval()
    generator = torch.Generator().manual_seed(1)
    size = model.image_size
    loo, prompt_images, queries = (torch.rand(n, 3, size, size, generator=generator) * 2 - 1 for n in (5, 4, 2))
    loo_scores, prompt_scores = torch.rand(5, generator=generator), torch.rand(4, generator=generator)

    def outputs(net, where, dtype):
        net = net.to(where, dtype)
        with torch.no_grad():
            a = net(loo.to(where, dtype), loo_scores.to(where, dtype))
            b = net.score(queries.to(where, dtype), net.encode_prompt(prompt_images.to(where, dtype),
                                                                        prompt_scores.to(where, dtype)))
        return a.double().cpu(), b.double().cpu()

    exact = outputs(copy.deepcopy(model), "cpu", torch.float64)
    got = outputs(model, device, torch.float32)
    errors = {"leave-one-out": float((got[0] - exact[0]).abs().max()),
              "prompted": float((got[1] - exact[1]).abs().max())}
    ok = max(errors.values()) <= FIDELITY_TOLERANCE
    missing = "" if device.type == "cpu" else " (no test vector: run from a checkout, or --reference VECTOR)"
    return RowResult(PASS if ok else FAIL,
                     f"{preset} model, random weights: float32 on {device.type} vs float64 on the CPU, max |Δ| "
                     + ", ".join(f"{v:.1e} {k}" for k, v in errors.items())
                     + f" {'≤' if ok else '>'} {FIDELITY_TOLERANCE:g}{missing}",
                     {"max_abs_error": errors, "tolerance": FIDELITY_TOLERANCE, "preset": preset})


# ---------------------------------------------------------------------------------------------------- 2: training

def _train_row(context: Context, amp: str, tf32: bool) -> RowResult:
    from ..benchmark import benchmark_config, measure_training

    s = sizes(context)
    cfg = benchmark_config(s.preset, groups=s.groups, group_size=s.group_size, amp=amp, tf32=tf32)
    _, got = measure_training(cfg, torch.device(context.device), s.steps, s.warmup)
    return RowResult(INFO, f"{got.images_per_s:.1f} images/s, {_memory(got.peak_gib, got.peak_reserved_gib)}; "
                           f"{s.preset}, {s.groups}x{s.group_size} images/step, {s.steps} timed after {s.warmup} "
                           f"warm-up",
                     {**asdict(got), "preset": s.preset, "groups": s.groups, "group_size": s.group_size,
                      "amp": amp, "tf32": tf32, "steps": s.steps, "warmup": s.warmup})


def train_float32(context: Context) -> Dict[str, RowResult]:
    """Row 2a: training images/s and peak memory at the step, float32 with TF32 off (paper.yaml's numerics)."""
    return {"2a": _train_row(context, "none", tf32=False)}


def train_tf32(context: Context) -> Dict[str, RowResult]:
    """Row 2b: the same with TF32 matrix multiplies and convolutions (CUDA only)."""
    return {"2b": _train_row(context, "none", tf32=True)}


def train_bf16(context: Context) -> Dict[str, RowResult]:
    """Row 2c: the same under bf16 autocast, TF32 on (paper_fast.yaml's numerics)."""
    return {"2c": _train_row(context, "bf16", tf32=True)}


def _dynamo_counts() -> Dict[str, object]:
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "frames": int(counters["frames"]["total"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "break_reasons": sorted(counters["graph_break"])[:10]}


def train_compiled(context: Context) -> Dict[str, RowResult]:
    """Rows 2d and 7 from one compiled run (compiling twice would double the command's longest item): bf16 +
    torch.compile images/s, and what dynamo compiled after the warm-up (0 graphs and 0 graph breaks expected).
    With --cpu, 2d is n/a and dynamo traces with the eager backend: inductor takes minutes on a CPU, and the
    graphs, breaks and recompiles are dynamo's, whatever the backend."""
    from ..benchmark import benchmark_config, measure_training

    torch._logging.set_logs(recompiles=True, graph_breaks=True)   # their reasons, in this item's log
    s = sizes(context)
    backend = "eager" if context.cpu else "inductor"
    cfg = benchmark_config(s.preset, groups=s.groups, group_size=s.group_size, amp="bf16", tf32=True, compile=True)
    marks = {"start": time.perf_counter()}

    def warmed_up():
        marks["warm"] = time.perf_counter()
        marks["counts"] = _dynamo_counts()

    steps = max(s.steps, 2)
    _, got = measure_training(cfg, torch.device(context.device), steps, s.warmup, warmed_up=warmed_up,
                              backend=backend)
    at_warmup, after = marks["counts"], _dynamo_counts()
    new_graphs = after["graphs"] - at_warmup["graphs"]
    new_breaks = after["graph_breaks"] - at_warmup["graph_breaks"]
    warm_s = marks["warm"] - marks["start"]
    recompiles = {"backend": backend, "warmup_steps": s.warmup, "steps_after": steps, "at_warmup": at_warmup,
                  "after_warmup": after, "new_graphs_after_warmup": new_graphs,
                  "new_graph_breaks_after_warmup": new_breaks, "warmup_s": warm_s}
    clean = new_graphs == 0 and new_breaks == 0
    row7 = RowResult(PASS if clean else WARN,
                     f"after {s.warmup} warm-up step(s): {new_graphs} graphs compiled and {new_breaks} graph breaks over "
                     f"{steps} steps (0 expected); during warm-up: {at_warmup['graphs']} graphs, "
                     f"{at_warmup['graph_breaks']} graph breaks; backend {backend}, {s.preset}, "
                     f"{s.groups}x{s.group_size} images/step" + ("" if clean else " (reasons: the log)"),
                     recompiles)
    if context.cpu:
        return {"2d": RowResult(NA, "compiled throughput is measured on a GPU (inductor takes minutes on a CPU); "
                                    "row 7 traces the step with dynamo"), "7": row7}
    fast = got.images_per_s >= TRAIN_TARGET and got.peak_gib <= TRAIN_MEMORY_TARGET_GIB
    row2d = RowResult(PASS if fast else WARN,
                      f"{got.images_per_s:.1f} images/s (target ≥ {TRAIN_TARGET:g}), "
                      f"{_memory(got.peak_gib, got.peak_reserved_gib)} (target ≤ {TRAIN_MEMORY_TARGET_GIB:g}); "
                      f"compile + {s.warmup} warm-up steps took {warm_s:.0f} s (not counted); {s.groups}x"
                      f"{s.group_size} images/step",
                      {**asdict(got), "compile_and_warmup_s": warm_s, "steps": steps, "warmup": s.warmup,
                       "target_images_per_s": TRAIN_TARGET, "target_gib": TRAIN_MEMORY_TARGET_GIB})
    return {"2d": row2d, "7": row7}


# ---------------------------------------------------------------------------------------------------- 3: inference

def inference(context: Context) -> Dict[str, RowResult]:
    """Row 3: scoring images/s in batches with a prompt encoded once, float32 (TF32 off) and bf16."""
    from ...models import build_model
    from ..benchmark import measure_inference

    s = sizes(context)
    device = torch.device(context.device)
    torch.manual_seed(0)
    with device:
        model = build_model("promptiqa", preset=s.preset, pretrained_backbone=False)
    got = {amp: measure_inference(model, device, amp, s.group_size - 1, s.infer_batch, s.infer_batches, s.warmup,
                                  tf32=amp != "none")
           for amp in ("none", "bf16")}
    text = (f"float32 {got['none'].images_per_s:.1f}, bf16 {got['bf16'].images_per_s:.1f} images/s; batch "
            f"{s.infer_batch}, prompt of {s.group_size - 1} encoded once, {s.preset}; "
            f"{_memory(got['bf16'].peak_gib, got['bf16'].peak_reserved_gib)} (bf16)")
    status = INFO
    if not context.cpu:
        status = PASS if got["bf16"].images_per_s >= INFERENCE_TARGET else WARN
        text += f"; target ≥ {INFERENCE_TARGET:g} (bf16)"
    return {"3": RowResult(status, text, {amp: asdict(t) for amp, t in got.items()})}


# ---------------------------------------------------------------------------------------------------- 4: memory

def memory_six_gpus(context: Context) -> Dict[str, RowResult]:
    """Row 4: one process of the paper's run on 6 GPUs (one group of 11 per step, float32, TF32 off, DDP over an
    NCCL group): its peak memory against a 24 GB card."""
    import datetime

    import torch.distributed as dist

    from ...distributed import DistEnv, cleanup, free_port
    from ..benchmark import benchmark_config, measure_training

    device = torch.device(context.device)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=120), device_id=device)
    env = DistEnv(device=device, group=True, owns_group=True)
    try:
        cfg = benchmark_config("official", groups=1, group_size=11, amp="none", tf32=False)
        _, got = measure_training(cfg, device, steps=2, warmup=1, env=env)
    finally:
        cleanup(env)
    need = got.peak_reserved_gib + OUTSIDE_ALLOCATOR_GIB
    fits = need <= CARD_GIB
    return {"4": RowResult(
        PASS if fits else WARN,
        f"{_memory(got.peak_gib, got.peak_reserved_gib)} + {OUTSIDE_ALLOCATOR_GIB:g} outside torch's allocator = "
        f"{need:.1f} GiB: {'fits' if fits else 'does not fit'} a {CARD_GIB:g} GB card (RTX 3090)"
        + ("" if fits else "; try --grad_checkpointing") + "; official, 1x11 images/step, DDP (NCCL), 3 steps",
        {**asdict(got), "card_gib": CARD_GIB, "outside_allocator_gib": OUTSIDE_ALLOCATOR_GIB, "fits": fits})}


# ---------------------------------------------------------------------------------------------------- 5: resume

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

    s, micro = sizes(context), PRESETS["micro"]
    return ["--dataset", DATASET_KEY, "--data_root", f"{DATASET_KEY}={labels}", "--epochs", str(s.drill_epochs),
            "--seed", "2024",
            "--backbone", micro["backbone"], "--image_size", str(s.drill_image_size),
            "--backbone_kwargs", json_text(micro["backbone_kwargs"], compact=True), "--pretrained_backbone", "false",
            "--workers", "0" if context.cpu else "2", "--lr", "1e-4", "--log_every", "2", "--ddp",
            *([] if context.cpu else ["--deterministic"])]


def _launch_command(context: Context, save_path: Path, options: List[str]) -> Tuple[List[str], Dict[str, str]]:
    """train.sh on GPU 0 (as a user runs it), or train.py on the CPU with train.sh's launch options; the child
    imports this same package with this same interpreter."""
    from ...resources import python_env, shipped_config

    s = sizes(context)
    root = Path(context.root) if context.root else None
    step = [str(s.drill_groups * s.drill_group_size), str(s.drill_groups)]
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
    stopped after a few steps (Sizes.drill_stop) and resumed: the weights must be equal bit for bit. On CUDA the
    runs use deterministic kernels (--deterministic: cuDNN autotuning off, torch.use_deterministic_algorithms);
    with --cpu, train.py with gloo."""
    from ...models import read_checkpoint

    s = sizes(context)
    work = Path(context.work)
    labels = write_dataset(work / "data", s.drill_images)
    options = _train_options(context, labels)
    full, part = work / "uninterrupted", work / "resumed"
    runs = [("uninterrupted", full, options), ("stopped", part, options + ["--stop_after_steps", str(s.drill_stop)]),
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
            + f"; stopped after {s.drill_stop} of {steps[0]} steps, resumed, vs uninterrupted; {how}, DDP, micro "
              f"backbone at {s.drill_image_size} px, {s.drill_groups}x{s.drill_group_size} images/step"
            + ("; " + "; ".join(problems) if problems else ""))
    return {"5": RowResult(PASS if exact and not problems else FAIL, text,
                           {"max_abs_weight_difference": worst, "weights": count, "other_differences": odd,
                            "global_steps": steps, "stopped": stopped, f"process_group_{backend}": grouped})}


# ---------------------------------------------------------------------------------------------------- 6: host syncs

def _count_syncs(work: Callable[[], None]) -> Tuple[int, collections.Counter]:
    """How many synchronising CUDA calls ``work`` makes (torch.cuda.set_sync_debug_mode "warn"), and where."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            work()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    where = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))
    return sum(where.values()), where


def host_syncs(context: Context) -> Dict[str, RowResult]:
    """Row 6: host synchronisations per training step after warm-up, in the engine's TrainStep and in
    train_one_epoch's per-step work (the batch to the device, the learning rate, the step; logging steps excluded),
    float32 at the paper's step. 0 expected (docs/training.md, "Speed")."""
    from ...distributed import StopVote
    from ..benchmark import benchmark_config, build_train_step, synthetic_batch
    from ..checkpointing import RunState
    from ..loop import train_one_epoch
    from ..trainer import cuda_settings

    s = sizes(context)
    device = torch.device(context.device)
    cfg = benchmark_config(s.preset, groups=s.groups, group_size=s.group_size, amp="none", tf32=False)
    cfg.log_every = 10 ** 9     # logging steps synchronise on purpose; not counted
    model, step = build_train_step(cfg, device)
    images, labels = synthetic_batch(cfg.batch_size, model.image_size, device)
    # what the DataLoader hands train_one_epoch: pinned CPU tensors (uint8 images, labels, indices, dataset indices)
    pixels = torch.randint(0, 256, tuple(images.shape), dtype=torch.uint8)
    batch = (pixels.pin_memory(), labels.cpu().pin_memory(), torch.arange(len(labels)),
             torch.zeros(len(labels), dtype=torch.long))
    measured = 3

    def epoch(n: int) -> None:
        train_one_epoch(step, [batch] * n, RunState(), n + 10 ** 6, 0, [DATASET_KEY], lambda: False, "(none)",
                        StopVote(step.env))

    with cuda_settings(cfg, device):
        step.net.train()
        for _ in range(s.warmup):
            step(images, labels)
        torch.cuda.synchronize(device)
        in_step, where_step = _count_syncs(lambda: [step(images, labels) for _ in range(measured)])
        # train_one_epoch also synchronises once at the epoch's end: two epoch lengths, the difference is per step
        short, _ = _count_syncs(lambda: epoch(1))
        long, where_epoch = _count_syncs(lambda: epoch(1 + measured))
    per_step = in_step / measured
    per_epoch_step = (long - short) / measured
    clean = in_step == 0 and long == short
    top = ", ".join(f"{k} x{v}" for k, v in (where_step + where_epoch).most_common(4))
    return {"6": RowResult(
        PASS if clean else WARN,
        f"TrainStep {per_step:g} per step, train_one_epoch {per_epoch_step:g} per step (0 expected; "
        f"{short} at an epoch's end); {s.preset}, {s.groups}x{s.group_size} images/step, float32, {measured} steps "
        f"after {s.warmup}" + (f"; where: {top}" if top else ""),
        {"train_step_per_step": per_step, "train_one_epoch_per_step": per_epoch_step, "epoch_end": short,
         "where_train_step": dict(where_step), "where_train_one_epoch": dict(where_epoch)})}


# ---------------------------------------------------------------------------------------------------- 8: attention

def attention(context: Context) -> Dict[str, RowResult]:
    """Row 8: the scaled-dot-product-attention backend each attention class takes, float32 and bf16
    (``promptiqa.models.kernels.attention_kernels``)."""
    from ...models import build_model
    from ...models.kernels import attention_kernels

    s = sizes(context)
    device = torch.device(context.device)
    model = build_model("promptiqa", preset=s.preset, pretrained_backbone=False).to(device).eval()
    found = {amp: attention_kernels(model, amp=amp) for amp in ("none", "bf16")}
    text = "; ".join(f"{'float32' if amp == 'none' else amp}: " + ", ".join(f"{k} {v}" for k, v in kernels.items())
                     for amp, kernels in found.items())
    return {"8": RowResult(INFO, f"{text} ({s.preset})", found)}


# ---------------------------------------------------------------------------------------------------- the registry

CUDA_ONLY = "needs CUDA"
CHECKS: Tuple[Check, ...] = (
    # pass/fail checks first, the longest item (torch.compile) last
    Check("fidelity", (("1", "fidelity: float32, TF32 off"),), fidelity, 150, 60),
    Check("resume", (("5", "train.sh stopped and resumed = uninterrupted (one-process group, DDP)"),), resume,
          200, 150),
    Check("train_float32", (("2a", "training at the paper's step: float32, TF32 off"),), train_float32, 100, 60),
    Check("train_tf32", (("2b", "training at the paper's step: TF32"),), train_tf32, 90, None,
          "TF32 is a CUDA setting"),
    Check("train_bf16", (("2c", "training at the paper's step: bf16"),), train_bf16, 90, 60),
    Check("inference", (("3", "inference, prompt encoded once"),), inference, 90, 45),
    Check("memory_six_gpus", (("4", "memory of one process of a 6-GPU run (1x11, float32) vs 24 GB"),),
          memory_six_gpus, 90, None, "GPU memory against a 24 GB card"),
    Check("host_syncs", (("6", "host synchronisations per training step"),), host_syncs, 100, None,
          "the sync debug mode is CUDA's"),
    Check("attention", (("8", "attention kernels (SDPA backend per module)"),), attention, 60, 30),
    Check("train_compiled", (("2d", "training at the paper's step: bf16 + torch.compile"),
                             ("7", "torch.compile: recompiles and graph breaks after warm-up")),
          train_compiled, 300, 120),
)
