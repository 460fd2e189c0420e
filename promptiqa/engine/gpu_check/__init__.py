"""One acceptance command for a GPU: ``bash scripts/gpu_check.sh`` (= ``python -m promptiqa gpu-check``).

It prints one Markdown table, a row per check, and writes it to OUT/gpu_check.md with the raw figures in
OUT/gpu_check.json and each check's output in OUT/logs/ (OUT: --out, default runs/gpu_check). Each check runs in a
process of its own within a time limit, all of them within --budget (8 minutes on a GPU); a check that crashes or
hangs says so in its rows and the others go on.

Rows (the official model at the paper's step, 6 groups of 11, on a GPU; the micro model at 2 groups of 3 with --cpu):

1. fidelity: the official model with the reference weights (promptiqa/models/reference_weights.py) against the
   official model's outputs in the test vector (tests/fixtures/reference, or --reference), float32, TF32 off, within
   1e-5 (without a vector, i.e. an installed package: the random model in float32 on the device against float64 on
   the CPU, same tolerance). pass/fail.
2. training images/s and peak memory at the step: a float32 (TF32 off), b TF32, c bf16 (info), d bf16 +
   torch.compile (pass when it meets the targets, 150 images/s and 40 GB on one H100, else warn).
3. inference images/s, batch 64, the prompt encoded once, float32 and bf16 (target 500 bf16). pass/warn.
4. one process of a 6-GPU run (1 group of 11, float32, DDP): its peak memory against a 24 GB card. pass/warn.
5. train.sh on GPU 0 with a one-process NCCL group and DDP, stopped after 4 steps and resumed, against an
   uninterrupted run: weights equal bit for bit (deterministic kernels). pass/fail.
6. host synchronisations per training step (sync debug mode), in TrainStep and train_one_epoch: 0. pass/warn.
7. torch.compile: graphs compiled and graph breaks after the warm-up: 0. pass/warn.
8. the attention backend each attention module takes (promptiqa.models.attention_backends). info, or n/a.

Exit code 1 when a row failed, crashed, timed out or was not run for lack of time; 0 otherwise. With --cpu the
checks that need CUDA (2b, 4, 6; 2d's throughput) are n/a, training runs train.py with gloo, and dynamo traces with
its eager backend.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ...errors import ConfigError
from ...fileio import atomic_write_text, check_writable, write_json
from .runner import Check, Context, Runner, exit_code, markdown, run_checks

GPU_BUDGET_S = 480.0    # the acceptance command's 8 minutes
CPU_BUDGET_S = 300.0    # a bound for CI; the --cpu run takes under a minute on a quiet 2-core machine


def find_vector(given: Optional[str] = None) -> Optional[Path]:
    """The test vector row 1 checks: ``given`` (an .npz file, or a folder holding vector_public.npz), else the
    checkout's tests/fixtures/reference/vector_public.npz; None for an installed package without ``given``."""
    from ...models.reference_weights import VECTOR_FILE, read_vector
    from ...resources import reference_fixtures

    if given:
        path = Path(given) / VECTOR_FILE if Path(given).is_dir() else Path(given)
        if not path.is_file():
            raise ConfigError(f"--reference {given}: no such file; expected a test vector (.npz, the format of "
                              f"tests/fixtures/reference/{VECTOR_FILE}) or a folder holding {VECTOR_FILE}")
        read_vector(path)   # refuses a file that is not a vector now, not minutes later in row 1
        return path.resolve()
    fixtures = reference_fixtures()
    return fixtures / VECTOR_FILE if fixtures is not None and (fixtures / VECTOR_FILE).is_file() else None


def select(checks: Sequence[Check], only: Optional[Sequence[str]]) -> List[Check]:
    """The checks filling at least one of the rows ``only`` names (all without it); refuses an unknown row."""
    if not only:
        return list(checks)
    known = [row for check in checks for row, _ in check.rows]
    unknown = [row for row in only if row not in known]
    if unknown:
        raise ConfigError(f"--only {' '.join(unknown)}: no such row; the rows are {', '.join(known)}")
    return [check for check in checks if any(row in only for row, _ in check.rows)]


def build_parser() -> argparse.ArgumentParser:
    """The gpu-check command's command line."""
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__.splitlines()[0], epilog=__doc__[__doc__.index("Rows ("):],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true",
                   help="run the same checks on the CPU with the micro model (CI's smoke test; CUDA-only rows n/a)")
    p.add_argument("--out", default="runs/gpu_check",
                   help="folder for gpu_check.md, gpu_check.json and logs/ (default runs/gpu_check)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help=f"time for the whole command (default {GPU_BUDGET_S:g} on a GPU, {CPU_BUDGET_S:g} with --cpu); "
                        f"checks left when it is spent are marked skipped")
    p.add_argument("--only", nargs="+", metavar="ROW", help="run only the checks filling these rows (1 2a ... 8)")
    p.add_argument("--reference", default=None, metavar="VECTOR",
                   help="row 1's test vector: an .npz in the format of tests/fixtures/reference/vector_public.npz "
                        "(or a folder holding vector_public.npz); default: that file in the checkout")
    p.add_argument("--keep_work", action="store_true",
                   help="keep the checks' scratch files (datasets, training runs) in OUT/work")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)

    from .checks import CHECKS, device_facts

    checks = select(CHECKS, args.only)
    reference = find_vector(args.reference)
    if not args.cpu:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("no CUDA device here: the GPU check needs one (--cpu runs the same checks on the CPU "
                              "with the micro model)")
    out = Path(args.out)
    for name in ("gpu_check.md", "gpu_check.json"):
        check_writable(out / name, "--out")
    budget = args.budget if args.budget is not None else (CPU_BUDGET_S if args.cpu else GPU_BUDGET_S)
    if not budget > 0:
        raise ConfigError(f"--budget {args.budget}: expected a positive number of seconds")
    from ...resources import checkout_root

    root = checkout_root()
    work = out / "work" if args.keep_work else Path(tempfile.mkdtemp(prefix="gpu_check."))
    started = time.time()
    runner = Runner(out, budget, progress=lambda line: print(f"gpu-check: {line}", file=sys.stderr, flush=True))
    try:
        def context(name: str) -> Context:
            return Context(cpu=args.cpu, work=str((work / name).resolve()),
                           reference=str(reference) if reference else None, root=str(root) if root else None)

        outcome, value, _ = runner.call("device", device_facts, context("device"), 60)
        facts = value if outcome == "ok" else {"device": f"unknown ({value})"}
        rows = run_checks(checks, lambda check: context(check.name), runner)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.time() - started
    code = exit_code(rows)
    head = [f"{facts.pop('device')}"] + [f"{k}: {v}" for k, v in facts.items()]
    head.append(f"mode: {'--cpu (micro model, gloo)' if args.cpu else 'GPU (official model)'}; "
                f"test vector: {'not used' if args.cpu else reference or 'not found'}; wall time {wall:.0f} s "
                f"of a {budget:g} s budget; "
                f"exit code {code}")
    report = markdown("GPU check" + (" (--cpu)" if args.cpu else ""), head, rows)
    atomic_write_text(out / "gpu_check.md", report)
    write_json(out / "gpu_check.json",
               {"cpu": args.cpu, "facts": facts, "device": head[0], "reference": str(reference) if reference else None,
                "budget_s": budget, "wall_s": wall, "exit_code": code,
                "rows": [row.__dict__ for row in rows]}, indent=2, default=str)
    sys.stdout.write(report)
    sys.stdout.flush()
    print(f"gpu-check: wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'} (logs in {out / 'logs'})",
          file=sys.stderr)
    return code
