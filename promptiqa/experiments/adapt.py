"""``promptiqa adapt``: how far a checkpoint adapts to a requirement given only as image-score pairs.

On each dataset's split (test.py's options choose the checkpoint, the data and the split) it measures:
- k-shot curves: SROCC/PLCC on the test split against the prompt size k, over ISPP draws from the train split
  (interval sampling: one per k; random: ``--draws`` seeded draws), with bootstrap CIs over draws and over test
  images; beside it the w/o-prompt model (``--baseline``) zero-shot and fine-tuned on the same k images (Table 3's
  ``finetune_few_shot``);
- the requirement matrix: datasets holding the same test images (matched by resolved path) score them under each
  one's prompt (rows) against each one's labels (columns), with each row's margin over its best other column;
- relabel consistency: the same ISPP with its scores transformed monotonically (``adapt_measures.TRANSFORMS``).
Work is done in units (one ISPP draw, one zero-shot pass, one relabel check, one matrix row), each stored in
``<save_path>/units`` when done: a rerun skips them. Test images are encoded once per model and dataset
(``FeatureBank``, sharded over ranks like test.py) and only when a unit needs them; each prompt is encoded once.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..config import check_number
from ..distributed import agreed, all_gather_objects
from ..errors import ConfigError
from ..evaluation.features import FeatureBank
from ..evaluation.runner import EvalSession, add_eval_options, config_from_args
from ..fileio import write_json
from . import adapt_measures as measures
from .adapt_report import write_report
from .relabel import finetune_few_shot, table3

ADAPT_RUNS = "runs/adapt"
UNITS = "units"
SETTINGS = "settings.json"   # in UNITS: what the stored units were computed with (a rerun must match it)
# Table 3's few-shot fine-tuning steps, from their one home (relabel.table3's default)
FINETUNE_STEPS = inspect.signature(table3).parameters["finetune_steps"].default


@dataclasses.dataclass
class Cost:
    """The model calls of a run: images through the image encoder, prompts encoded, fine-tuning steps."""

    images_encoded: int = 0
    prompts_encoded: int = 0
    finetune_steps: int = 0

    def minus(self, other: "Cost") -> Dict[str, int]:
        return {f.name: getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)}


class UnitStore:
    """The run's finished units, one JSON file each under ``folder``; ``get`` computes only what is missing."""

    def __init__(self, folder: Path, settings: Dict[str, Any], env):
        self.folder, self.env = folder, env
        self.computed: List[dict] = []   # this run's: name, seconds, cost
        self.reused = 0
        # every rank follows the main rank's list, read before any rank could add to it; a refusal stops every rank
        done = agreed(lambda: self._stored(settings) if env.is_main else [], env)
        self.done = set(all_gather_objects(done, env)[0])

    def _stored(self, settings: Dict[str, Any]) -> List[str]:
        """The names of the units stored in the folder, after checking they were computed with ``settings``."""
        folder = self.folder
        stored = folder / SETTINGS
        if stored.is_file():
            previous = json.loads(stored.read_text(encoding="utf-8"))
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            if changed:
                raise ConfigError(f"{folder} holds units computed with other settings ({', '.join(changed)} differ); "
                                  f"give another --save_path or delete {folder}")
        else:
            write_json(stored, settings)
        return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.json") if p.name != SETTINGS)

    def get(self, name: str, compute: Callable[[], dict], cost: Cost) -> Optional[dict]:
        """The unit ``name`` as stored, or computed now (by every rank) and stored (main rank); None on other ranks."""
        path = self.folder / f"{name}.json"
        if name in self.done:
            self.reused += 1
            return json.loads(path.read_text(encoding="utf-8")) if self.env.is_main else None
        before, started = dataclasses.replace(cost), time.time()
        result = compute()
        result["cost"] = dict(cost.minus(before), seconds=time.time() - started)
        self.computed.append(dict(name=name, **result["cost"]))
        if self.env.is_main:
            write_json(path, result)
        return result


class Adapt:
    """A session, the baseline, lazily built feature banks and the unit store: each measure asks for its units."""

    def __init__(self, session: EvalSession, opts: argparse.Namespace, out: Path):
        self.session, self.opts, self.cost = session, opts, Cost()
        self.cfg, self.env = session.cfg, session.env
        self.base, self.base_info = None, None
        if opts.baseline:
            from ..models import load_model, uses_prompt

            self.base, self.base_info = load_model(opts.baseline, device=self.env.device, with_info=True)
            if uses_prompt(self.base):
                raise ConfigError(f"--baseline {opts.baseline} is a prompted model; the baselines are the w/o-prompt "
                                  f"model (promptiqa ablation --variant wo_prompt, or the demo's promptiqa_wo_prompt)")
            if int(self.base.image_size) != session.image_size:
                raise ConfigError(f"--baseline takes {self.base.image_size}px images, --checkpoint "
                                  f"{session.image_size}px")
        self._banks: Dict[str, FeatureBank] = {}
        self.units = UnitStore(out / UNITS, self.settings(), self.env)

    def settings(self) -> Dict[str, Any]:
        """What a stored unit depends on (not which k, draws or datasets are asked for: those are units)."""
        def identity(path: Optional[str]) -> Optional[list]:
            if not path or not os.path.isfile(path):
                return None if not path else [path]
            stat = os.stat(path)
            return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]

        cfg = self.cfg
        return {"checkpoint": identity(cfg.checkpoint), "baseline": identity(self.opts.baseline),
                "label_norm": self.session.label_norm, "isp_num": self.session.isp_num,
                "isp_strategy": cfg.isp_strategy, "isp_seed": cfg.isp_seed, "seed": cfg.seed,
                "split_file": cfg.split_file, "amp": cfg.amp, "flip_axis": cfg.flip_axis,
                "finetune_steps": self.opts.finetune_steps if self.base is not None else None}

    # ------------------------------------------------------------ model calls

    def bank(self, data) -> FeatureBank:
        """The test split's image features under the checkpoint, computed on first use."""
        if data.key not in self._banks:
            from tqdm import tqdm

            with tqdm(total=len(data.test), desc=f"{data.key} features", unit="img", file=sys.stderr,
                      disable=not (self.env.is_main and self.cfg.progress)) as bar:
                self._banks[data.key] = FeatureBank(self.session.model, data.test, self.env, self.cfg.batch_size,
                                                    self.session.workers, self.cfg.amp, progress=bar)
            self.cost.images_encoded += len(data.test)
        return self._banks[data.key]

    def scorer(self, data) -> Callable[[torch.Tensor, np.ndarray], np.ndarray]:
        """score(prompt images, prompt scores) -> predictions for the test split: one prompt encoding each."""
        def score(images: torch.Tensor, scores) -> np.ndarray:
            self.cost.prompts_encoded += 1
            return self.bank(data).score(images, torch.as_tensor(np.asarray(scores), dtype=torch.float32))

        return score

    def predict_baseline(self, data, model) -> np.ndarray:
        self.cost.images_encoded += len(data.test)
        return self.session.predict(data, None, model=model)

    # ------------------------------------------------------------ the units

    def kshot(self, data, draw: measures.Draw) -> Optional[dict]:
        def compute() -> dict:
            strategy = self.cfg.isp_strategy
            prompt = self.session.prompt(data, isp_num=draw.k, strategy=strategy, seed=draw.seed, perturb=[])
            result = {"dataset": data.key, "k": draw.k, "draw": draw.draw,
                      "seed": draw.seed if strategy == "random" else None,
                      "prompt": prompt.describe(data.train_names),
                      "pred": self.scorer(data)(prompt.images, prompt.scores.numpy()).tolist()}
            if self.base is not None:
                tuned = finetune_few_shot(self.base, prompt.images, prompt.scores, self.opts.finetune_steps,
                                          seed=draw.seed, amp=self.cfg.amp, env=self.env)
                self.cost.finetune_steps += self.opts.finetune_steps
                result["fine_tuned"] = self.predict_baseline(data, tuned).tolist()
            return result

        return self.units.get(f"kshot/{data.key}/k{draw.k}_d{draw.draw}", compute, self.cost)

    def zero_shot(self, data) -> Optional[dict]:
        return self.units.get(f"zero_shot/{data.key}", lambda: {"dataset": data.key, "pred": self.predict_baseline(
            data, self.base).tolist()}, self.cost)

    def relabel(self, data) -> Optional[dict]:
        def compute() -> dict:
            prompt = self.session.prompt(data, perturb=[])
            return {"dataset": data.key, "prompt": prompt.describe(data.train_names),
                    "transforms": measures.relabel_consistency(self.scorer(data), prompt.images,
                                                               prompt.scores.numpy())}

        return self.units.get(f"relabel/{data.key}", compute, self.cost)

    def matrix_row(self, data, pool, positions: Sequence[int]) -> Optional[dict]:
        """Predictions for ``positions`` of ``pool``'s test split (the common images) under ``data``'s ISPP."""
        def compute() -> dict:
            prompt = self.session.prompt(data, perturb=[])
            pred = self.scorer(pool)(prompt.images, prompt.scores.numpy())[np.asarray(positions, dtype=np.int64)]
            return {"dataset": data.key, "images": [pool.test_names[p] for p in positions], "pred": pred.tolist()}

        return self.units.get(f"matrix/{data.key}", compute, self.cost)


def resolved_paths(data, indices: Sequence[int]) -> List[str]:
    """The resolved file paths of ``data``'s records at ``indices`` (how datasets sharing images are matched)."""
    return [os.path.realpath(data.records.records[i].path) for i in indices]


def run_adapt(cfg, opts: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """Measure, store each unit, write the report (main rank); returns what results.json holds (None elsewhere)."""
    started = time.time()
    session = EvalSession(cfg)
    try:
        if not session.uses_prompt:
            raise ConfigError(f"--checkpoint {cfg.checkpoint} is a model without prompt; adapt measures a PromptIQA "
                              f"model (give the w/o-prompt one as --baseline)")
        out = Path(cfg.save_path)
        run = Adapt(session, opts, out)
        results: Dict[str, Any] = {"curves": {}, "relabel": {}, "matrices": [], "zero_shot": {}}
        for data in session.datasets:
            plan = measures.draw_plan(opts.k, len(data.train), cfg.isp_strategy, opts.draws, cfg.isp_seed)
            results["curves"][data.key] = [run.kshot(data, draw) for draw in plan]
            if run.base is not None:
                results["zero_shot"][data.key] = run.zero_shot(data)
            results["relabel"][data.key] = run.relabel(data)
        by_key = {d.key: d for d in session.datasets}
        tested = {d.key: resolved_paths(d, d.split.test_indices) for d in session.datasets}   # resolved once
        groups = measures.requirement_groups(tested, {d.key: resolved_paths(d, d.split.train_indices)
                                                      for d in session.datasets})
        for keys, common in groups:
            at = {k: {p: i for i, p in enumerate(tested[k])} for k in keys}
            positions = [at[keys[0]][p] for p in common]
            rows = {k: run.matrix_row(by_key[k], by_key[keys[0]], positions) for k in keys} if len(common) >= 2 else {}
            labels = {k: np.asarray([by_key[k].test.labels[at[k][p]] for p in common], dtype=np.float64) for k in keys}
            results["matrices"].append({"keys": keys, "n": len(common), "rows": rows, "labels": labels})
        if not session.env.is_main:
            return None
        return write_report(out, session, run, results, opts, time.time() - started)
    finally:
        session.close()


def build_parser() -> argparse.ArgumentParser:
    """The adapt command's command line: test.py's options plus the prompt sizes, draws, baseline and bootstrap."""
    p = add_eval_options(argparse.ArgumentParser(
        allow_abbrev=False, argument_default=None,
        description="Measure requirement adaptation: k-shot curves with bootstrap CIs, the requirement matrix of "
                    "datasets sharing images, relabel consistency (see docs/adapt.md)"))
    adapted = {"save_path": f"output folder (default {ADAPT_RUNS}); a rerun into it reuses its units/",
               "plot": "write adapt.png (default true)"}
    for action in p._actions:   # test.py's options whose help names test.py's outputs
        action.help = adapted.get(action.dest, action.help)
    p.add_argument("--k", nargs="+", type=int, metavar="K",
                   help="prompt sizes, each capped by the train split (default "
                        f"{' '.join(map(str, measures.DEFAULT_KS))})")
    p.add_argument("--draws", type=int,
                   help=f"ISPP draws per k with --isp_strategy random, seeds isp_seed, isp_seed + 1, ... (default "
                        f"{measures.DEFAULT_DRAWS}; interval sampling has one)")
    p.add_argument("--baseline", metavar="CHECKPOINT",
                   help="a w/o-prompt checkpoint: zero-shot, and fine-tuned on each draw's k images (Table 3's "
                        "few-shot fine-tuning)")
    p.add_argument("--finetune_steps", type=int,
                   help=f"few-shot fine-tuning steps of the baseline on each ISPP (default {FINETUNE_STEPS})")
    p.add_argument("--bootstrap", type=int,
                   help=f"bootstrap resamples per confidence interval (default {measures.DEFAULT_BOOTSTRAP})")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``promptiqa adapt``."""
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    if cfg.save_path is None:
        cfg = dataclasses.replace(cfg, save_path=ADAPT_RUNS)
    if cfg.perturb:
        raise ConfigError("--perturb is test.py's; adapt measures unperturbed ISPPs")
    args.k = list(args.k or measures.DEFAULT_KS)
    args.draws = measures.DEFAULT_DRAWS if args.draws is None else args.draws
    args.finetune_steps = FINETUNE_STEPS if args.finetune_steps is None else args.finetune_steps
    args.bootstrap = measures.DEFAULT_BOOTSTRAP if args.bootstrap is None else args.bootstrap
    for name, value in (("draws", args.draws), ("k", min(args.k)), ("finetune_steps", args.finetune_steps),
                        ("bootstrap", args.bootstrap)):
        check_number(name, value)
    run_adapt(cfg, args)
    return 0
