"""The embedded demo: PromptIQA learning assessment requirements from prompts, on data that ships with the install.

    bash scripts/demo.sh            # or: promptiqa demo [--full] [--config configs/demo.yaml]

1. writes the synthetic-distortion dataset (scikit-image photographs; one label file per requirement),
2. trains PromptIQA on a mix of requirements, and the w/o-prompt baseline the same way,
3. scores the held-out references under every requirement's prompt (the training ones and one never seen in
   training), prints SROCC/PLCC per requirement and the prompt effect, writes results.json/.md and results.png,
4. scores a few held-out images through the scoring command line (``python -m promptiqa score``).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..config import TrainConfig, merge_settings, read_yaml, typed_settings
from ..engine import run_folder
from ..errors import ConfigError, PromptIQAError, run_command
from ..fileio import json_text, write_csv
from ..resources import config_file, python_env
from . import published
from .command import DEFAULT_CONFIG
from .report import MODELS, Report, dataset_key
from ..data.synthetic import read_images, requirement, requirement_labels


class DemoError(PromptIQAError):
    """A stage of the demo that failed: a model's training, the scoring command."""


TARGETS = {   # the demo's claims (configs/demo.yaml's targets give the thresholds)
    "prompt_effect": "prompt effect of the mirror pair at most this",
    "own_srocc": "each single-aspect prompt's SROCC on its own held-out set at least this",
    "margin": "... and at least this much above its SROCC against any other single-aspect requirement's labels",
    "unseen_srocc": "each unseen requirement's SROCC under its own prompt at least this",
}


@dataclass
class DemoConfig:
    """Everything the demo does; configs/demo.yaml holds the defaults, its ``full`` section the --full overrides."""

    # No defaults of substance here: configs/demo.yaml holds them, and a user's file is merged over it.
    data: Dict[str, Any] = field(default_factory=dict)        # python -m promptiqa.demo.synthetic settings
    train_requirements: List[str] = field(default_factory=list)
    unseen_requirements: List[str] = field(default_factory=list)
    mirror: List[str] = field(default_factory=list)            # (MOS-like, its DMOS-like mirror)
    train: Dict[str, Any] = field(default_factory=dict)       # TrainConfig fields (train.py's settings)
    baseline: bool = True                                      # also train the w/o-prompt ablation
    score_requirement: str = ""                                # the prompt of the scoring-CLI call
    score_images: int = 0                                      # held-out images it scores
    targets: Dict[str, float] = field(default_factory=dict)   # the thresholds the demo checks (see Demo.targets)
    save_path: str = ""
    published: Optional[Dict[str, Any]] = None                 # the README's figures over seeds (demo/published.py)
    full: Dict[str, Any] = field(default_factory=dict)        # overrides for --full (nested like the file)

    @classmethod
    def from_yaml(cls, path, full: bool = False, overrides: Optional[Dict[str, Any]] = None) -> "DemoConfig":
        """configs/demo.yaml <- ``path`` <- (with ``full``) the merged ``full`` section <- ``overrides``, nested dicts
        merged key by key; each file read and typed as every config file is (promptiqa.config)."""
        values: Dict[str, Any] = {}
        for source in dict.fromkeys([Path(DEFAULT_CONFIG), config_file(path)]):
            values = _merge(values, cls._read(source))
        if full:
            values = _merge(values, values.get("full") or {})
        if overrides:
            values = _merge(values, overrides)
        cfg = cls(**typed_settings(values, cls, "demo config"))
        cfg.check()
        return cfg

    @classmethod
    def _read(cls, path: Path) -> Dict[str, Any]:
        if not path.is_file():
            raise FileNotFoundError(f"demo config not found: {path}")
        path, values = read_yaml(path)
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"{path}: unknown demo settings {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return typed_settings(values, cls, str(path))

    def check(self) -> None:
        """Refuse settings the demo cannot run with, naming them."""
        try:
            for name in self.requirements:
                requirement(name)
        except ValueError as err:   # the generator's own refusal, naming the known requirements
            raise ConfigError(f"demo config: {err}") from None
        if len(self.mirror) != 2 or not set(self.mirror) <= set(self.requirements) \
                or self.mirror[0] not in self.train_requirements:
            raise ConfigError(f"mirror must name a MOS-like training requirement and its DMOS-like mirror, got "
                              f"{self.mirror} (requirements: {self.requirements})")
        if self.score_images < 1 or not self.save_path or not self.data.get("out"):
            raise ConfigError("score_images (>= 1), save_path and data.out must be set")
        if self.score_requirement not in self.requirements:
            raise ConfigError(f"score_requirement {self.score_requirement!r} is not one of {self.requirements}")
        unknown = sorted(set(self.train) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"train: unknown train.py settings {unknown}")
        typed_settings(self.train, TrainConfig, "demo config: train")   # a wrong type is refused before any work
        if not any(not requirement(r).is_aspect for r in self.requirements):
            raise ConfigError(f"the requirements {self.requirements} need one without aspects (e.g. ssim): its "
                              f"label file lists every image, the pool every prompt is evaluated on")
        missing = sorted(set(TARGETS) - set(self.targets))
        if missing or set(self.targets) - set(TARGETS):
            raise ConfigError(f"targets must give exactly {sorted(TARGETS)}, got {sorted(self.targets)}")
        published.check(self.published)

    @property
    def requirements(self) -> List[str]:
        return list(self.train_requirements) + [r for r in self.unseen_requirements
                                                if r not in self.train_requirements]


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with ``extra`` merged in, nested dicts key by key."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


class Demo:
    """The demo's stages; ``run`` does them all and returns the results."""

    def __init__(self, cfg: DemoConfig, log=print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.save_path)
        self.data = Path(cfg.data["out"])
        self.times: Dict[str, float] = {}

    def key(self, req: str) -> str:
        return dataset_key(req)

    @property
    def roots(self) -> Dict[str, str]:
        return {self.key(r): str((self.data / f"{r}.csv").resolve()) for r in self.cfg.requirements}

    # ------------------------------------------------------------------ stages
    def generate(self) -> dict:
        from ..data.cache import prepare_cache
        from ..data.registry import load_dataset
        from ..data.synthetic import generate

        settings = {k: v for k, v in self.cfg.data.items() if k != "out"}
        meta = generate(self.data, requirements=self.cfg.requirements, **settings)
        size = int(self.train_config("promptiqa").image_size)
        for key, root in self.roots.items():
            prepare_cache(load_dataset(key, root), size, self.cache_dir)
        self.log(f"dataset {self.data}: {meta['images']} images of {len(meta['references'])} references, "
                 f"requirements {', '.join(meta['requirements'])}")
        return meta

    @property
    def cache_dir(self) -> str:
        return str(self.data / "cache")

    def train_config(self, model: str) -> TrainConfig:
        """The TrainConfig of ``model``: the config's train section and the demo's own data and run settings, through
        the one merge (promptiqa.config.merge_settings: typed and validated as train.py's settings are)."""
        values = dict(self.cfg.train)
        values.update(model=model, dataset=[self.key(r) for r in self.cfg.train_requirements],
                      data_root=[f"{k}={v}" for k, v in self.roots.items()], cache_dir=str(Path(self.cache_dir).resolve()),
                      save_path=str((self.out / model).resolve()), overwrite=True)   # a fresh run each time
        values.setdefault("pretrained_backbone", False)
        return merge_settings(TrainConfig, argparse.Namespace(), base=values, base_origin="demo config: train")

    def train(self, models: Sequence[str]) -> Dict[str, Path]:
        """Train each model in a process of its own (fresh runs); returns their final checkpoints (last epoch, not
        selected on the test split). On a CPU the models train side by side, each on its share of the cores: small
        models use two cores better as two one-thread processes than as one two-thread process."""
        from ..models import default_device

        device = self.cfg.train.get("device") or default_device().type
        cores = os.cpu_count() or 1
        parallel = device == "cpu" and len(models) > 1 and cores >= len(models)
        procs = []
        for i, model in enumerate(models):
            cfg = self.train_config(model)
            run_dir = Path(cfg.save_path)
            run_dir.mkdir(parents=True, exist_ok=True)
            for stale in run_folder.RUN_FILES:   # a fresh run each time (train.py refuses a folder holding one)
                (run_dir / stale).unlink(missing_ok=True)
            env = python_env(**({"OMP_NUM_THREADS": str(max(1, cores // len(models)))} if parallel else {}))
            # the first model's progress goes to the terminal, the others' to a file in their run folder
            output = None if i == 0 else open(run_dir / "train_output.txt", "w")
            self.log(f"training {MODELS[model]} on {', '.join(cfg.dataset)} ({cfg.epochs} epochs, {cfg.backbone} "
                     f"{cfg.backbone_kwargs or ''} at {cfg.image_size} px)"
                     + (f"; output in {run_dir / 'train_output.txt'}" if output else ""))
            # the child trains this very TrainConfig (sent as JSON): no file or command line to parse it from again
            proc = subprocess.Popen([sys.executable, "-c", "from promptiqa.demo.run import train_process; "
                                     "train_process()"], stdin=subprocess.PIPE, text=True, stdout=output,
                                    stderr=subprocess.STDOUT if output else None, env=env)
            proc.stdin.write(json_text(cfg.to_dict(), compact=True))
            proc.stdin.close()
            procs.append((model, proc, output, run_dir))
            if not parallel:
                self._wait(procs[-1])
        if parallel:
            for entry in procs:
                self._wait(entry)
        return {model: run_dir / run_folder.LAST for model, _, _, run_dir in procs}

    @staticmethod
    def _wait(entry) -> None:
        model, proc, output, run_dir = entry
        code = proc.wait()
        if output is not None:
            output.close()
        if code != 0:
            where = run_dir / ("train_output.txt" if output is not None else "log.txt")
            tail = where.read_text(errors="replace").strip().splitlines()[-5:] if where.is_file() else []
            raise DemoError(f"training {MODELS[model]} failed (exit {code}); see {where}"
                            + ("\n" + "\n".join(tail) if tail else ""))

    def labels(self):
        """(every requirement's score of every image, by name; every requirement's evaluation set: for an aspect
        requirement the images it penalises plus as many it does not, whatever its label file's share of others)."""
        rows = read_images(self.data)
        scores, sets = {}, {}
        for req in self.cfg.requirements:
            values, members = requirement_labels(req, rows)
            scores[self.key(req)] = {r["image"]: float(v) for r, v in zip(rows, values)}
            sets[self.key(req)] = {r["image"] for r, m in zip(rows, members) if m}
        return scores, sets

    def evaluate(self, model: str, checkpoint: Path):
        from .evaluate import evaluate_model

        return evaluate_model(MODELS[model], str(checkpoint), self.roots, *self.labels(),
                              seen=[self.key(r) for r in self.cfg.train_requirements],
                              mirror=tuple(self.key(r) for r in self.cfg.mirror),
                              seed=int(self.train_config(model).seed), cache_dir=self.cache_dir,
                              device=self.cfg.train.get("device"))

    def score_cli(self, checkpoint: Path, result) -> List[dict]:
        """Score held-out images of a requirement's set through ``python -m promptiqa score``, with the requirement's
        ISPP as the prompt CSV.

        The prompt carries the requirement's raw scores, so the scores come back on that scale."""
        req = self.cfg.score_requirement
        key = self.key(req)
        raw = _raw_scores(self.data / f"{req}.csv")
        prompt_csv = self.out / f"prompt_{req}.csv"
        write_csv(prompt_csv, ["image", "score"], [[str((self.data / isp["image"]).resolve()), repr(raw[isp["image"]])]
                                                  for isp in result.requirements[key].prompt])
        names = result.requirements[key].images
        picks = [names[int(i)] for i in np.linspace(0, len(names) - 1, min(self.cfg.score_images, len(names)))]
        out_csv = self.out / f"scores_{req}.csv"
        lo, hi = min(raw.values()), max(raw.values())
        cmd = [sys.executable, "-m", "promptiqa", "score", "--checkpoint", str(checkpoint), "--prompt",
               str(prompt_csv), "--score_range", repr(lo), repr(hi), "--out", str(out_csv), "--workers", "0"]
        if not requirement(req).higher_is_better:
            cmd.append("--lower_is_better")
        if self.cfg.train.get("device"):
            cmd += ["--device", self.cfg.train["device"]]
        cmd += [str((self.data / n).resolve()) for n in picks]
        self.log("$ python -m promptiqa score --checkpoint " + " ".join(
            _short(c) for c in cmd[cmd.index("--checkpoint") + 1:]))
        code = subprocess.run(cmd, env=python_env()).returncode   # relative paths: the working folder's, as the demo's
        if code != 0:
            raise DemoError(f"the scoring command failed (exit {code}): {' '.join(cmd)}")
        with open(out_csv, newline="") as fh:
            scored = {Path(r["image"]).resolve(): float(r["score"]) for r in csv.DictReader(fh)}
        return [dict(image=n, predicted=scored[(self.data / n).resolve()], true=raw[n]) for n in picks]

    # ------------------------------------------------------------------ the whole demo
    def run(self) -> dict:
        start = time.time()
        self.out.mkdir(parents=True, exist_ok=True)
        self._timed("generate", self.generate)
        models = ["promptiqa"] + (["promptiqa_wo_prompt"] if self.cfg.baseline else [])
        checkpoints, results = self._timed("train", self.train, models), {}
        for model in models:
            results[model] = self._timed(f"evaluate {MODELS[model]}", self.evaluate, model, checkpoints[model])
        scored = self._timed("score (CLI)", self.score_cli, checkpoints["promptiqa"], results["promptiqa"])
        self.times["total"] = time.time() - start
        summary = Report(self.cfg, self.out, self.times).write(results, scored)
        return summary

    def _timed(self, name: str, fn, *args):
        t = time.time()
        value = fn(*args)
        self.times[name] = time.time() - t
        self.log(f"[{name}: {self.times[name]:.0f} s]")
        return value


def _raw_scores(label_csv: Path) -> Dict[str, float]:
    with open(label_csv, newline="") as fh:
        return {r["image"]: float(r["score"]) for r in csv.DictReader(fh)}


def _short(arg: str) -> str:
    """A path argument relative to the working directory when it lies inside it (for the printed command)."""
    try:
        rel = os.path.relpath(arg) if os.path.isabs(arg) else arg
    except ValueError:
        return arg
    return arg if rel.startswith("..") else rel


def train_process() -> None:
    """A demo model's training process: the TrainConfig the demo resolved, read as JSON from standard input, trained
    as ``promptiqa train`` trains one; exits by the one exit-code rule."""
    from ..engine.trainer import launch

    cfg = TrainConfig(**json.loads(sys.stdin.read()))

    def train() -> int:
        launch(cfg)
        return 0

    sys.exit(run_command(train))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``promptiqa demo`` with ``argv``: the registered command (its alias ``python -m promptiqa.demo`` is
    promptiqa/demo/__main__.py)."""
    from ..cli import main as registry

    return registry(["demo", *(sys.argv[1:] if argv is None else argv)])
