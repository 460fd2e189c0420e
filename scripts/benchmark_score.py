#!/usr/bin/env python
"""Images/s of Predictor.score end to end (decode in background workers, resize, batch, model), random weights.

    python scripts/benchmark_score.py                                  # official ViT-B/8 config, 32 JPEGs 512x384
    python scripts/benchmark_score.py --preset tiny micro -n 64 --batch_size 16 --device cuda --amp bf16
    python scripts/benchmark_score.py --preset tiny -n 100 --amp both      # float32 vs bf16: speed and difference
    python scripts/benchmark_score.py -n 30 --amp both --weights reference  # the same, well-conditioned weights

Prints one JSON line per preset (and precision): checkpoint load, prompt encoding (10 pairs) and scoring times, and
images/s; with --amp both also the largest absolute score difference bf16 makes and the SROCC between the two
score lists (and the float32 scores' range).
Model build time is not counted; the checkpoint is written to a temporary folder, never into the repository.
``--weights reference`` fills the official model with the reference weights (promptiqa/models/reference_weights.py,
seed 0, the fidelity tests' weights): unlike random initialisation they keep every softmax soft and spread the
scores, so a float32-vs-bf16 comparison reflects the network's numerics.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from promptiqa.config import OPTIONS
from promptiqa.data.sampling import DEFAULT_ISP_NUM
from promptiqa.data.synthetic_photos import write_synthetic_jpegs
from promptiqa.fileio import json_text
from promptiqa.models import build_model, save_checkpoint
from promptiqa.models.reference_weights import reference_state_dict
from promptiqa.predict import Predictor, default_workers


def benchmark(preset: str, images, tmp: Path, batch_size: int, workers: int, device, amp,
              weights: str = "random") -> dict:
    """Time loading, prompt encoding and scoring of `images` with a `preset` model: randomly initialised (torch seed
    0), or with the reference weights (seed 0)."""
    torch.manual_seed(0)
    model = build_model("promptiqa", preset=preset)
    if weights == "reference":
        model.load_state_dict(reference_state_dict(model, 0), strict=True)
    ckpt = save_checkpoint(tmp / f"{preset}.pth.tar", model, prompt_num=DEFAULT_ISP_NUM)
    start = time.perf_counter()
    predictor = Predictor.from_checkpoint(ckpt, device=device, amp=amp)
    loaded = time.perf_counter()
    predictor.set_prompt(images[:DEFAULT_ISP_NUM], list(range(DEFAULT_ISP_NUM)), batch_size=batch_size)
    encoded = time.perf_counter()
    scores = predictor.score(images, batch_size=batch_size, workers=workers)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    scored = time.perf_counter()
    predictor.fingerprint
    hashed = time.perf_counter()
    return dict(preset=preset, device=str(predictor.device), amp=amp, threads=torch.get_num_threads(),
                images=len(images), batch_size=batch_size, workers=workers, load_s=round(loaded - start, 2),
                prompt_s=round(encoded - loaded, 2), score_s=round(scored - encoded, 2),
                images_per_s=round(len(images) / (scored - encoded), 3), fingerprint_s=round(hashed - scored, 2),
                scores=scores)


def build_parser() -> argparse.ArgumentParser:
    """This script's command line."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", default=["official"], help="model presets (official, tiny, micro)")
    parser.add_argument("-n", "--images", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default=None, help="default: cuda when available")
    amp = OPTIONS["amp"].kwargs   # every command's --amp (fp16 refused with the reason), and both
    parser.add_argument("--amp", type=amp["type"], choices=[*amp["choices"], "both"], default="none",
                        help="bf16 autocast, none (float32), or both (and compare the scores)")
    parser.add_argument("--weights", choices=["random", "reference"], default="random",
                        help="random initialisation (torch seed 0), or the reference weights of the fidelity tests "
                             "(official preset only)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the rules are the official model's; on another preset's keys they would give weights nobody compares with
    if args.weights == "reference" and args.preset != ["official"]:
        parser.error("--weights reference fills the official model only: use --preset official")
    with tempfile.TemporaryDirectory(prefix="promptiqa-bench-") as tmp:
        tmp = Path(tmp)
        images = write_synthetic_jpegs(tmp / "images", max(args.images, DEFAULT_ISP_NUM), height=384, width=512)
        for preset in args.preset:
            runs = {}
            for amp in (["none", "bf16"] if args.amp == "both" else [args.amp]):
                runs[amp] = benchmark(preset, images[:args.images], tmp, args.batch_size, args.workers, args.device,
                                      None if amp == "none" else amp, args.weights)
                print(json_text({**{k: v for k, v in runs[amp].items() if k != "scores"}, "amp": amp,
                                  "weights": args.weights}, indent=None), flush=True)
            if len(runs) == 2:
                fp32, bf16 = runs["none"]["scores"], runs["bf16"]["scores"]
                print(json_text(dict(preset=preset, images=len(fp32), weights=args.weights,
                                      score_range=[round(float(fp32.min()), 4), round(float(fp32.max()), 4)],
                                      bf16_max_abs_diff=float(abs(fp32 - bf16).max()),
                                      bf16_srocc=round(float(spearmanr(fp32, bf16)[0]), 6)), indent=None), flush=True)
    print(f"cpu: {os.cpu_count()} cores, torch {torch.__version__}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
