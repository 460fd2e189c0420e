"""test.py: evaluate a checkpoint (the official release file or ours) on datasets' test splits.

Each dataset's ISPP is sampled from its train split (interval or seeded random sampling, optionally perturbed) and
encoded once; the test split is scored sharded over ranks (torchrun/SLURM), each image once. The leakage guard
compares the test images with the training split the checkpoint records. Outputs in --save_path: results.csv,
predictions.csv, results.json (everything needed to reproduce the numbers) and scatter.png.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..config import EvalConfig, add_options, merge_settings
from ..data import recorded_split, resolve_roots, resolve_split, split_from_units
from ..data.registry import refuse_overwriting_dataset
from ..data.groups import TestShardSampler
from ..data.sampling import DEFAULT_ISP_NUM
from ..data.views import DatasetViews, load_views
from ..devices import default_workers
from ..distributed import DistEnv, cleanup, init_distributed, quiet_unless_main
from ..engine import run_folder
from ..errors import ConfigError, run_command
from ..fileio import write_json
from ..metrics import compute_metrics, undefined_notes
from ..models import load_model, uses_prompt
from .leakage import LeakageCheck, check_leakage
from .prompts import PERTURBATIONS, SampledISPP, build_prompt, check_perturbations
from .report import PREDICTIONS_COLUMNS, RESULTS_COLUMNS, plot_scatter, text_table, write_csv

CHECKPOINT_SPLITS = "checkpoint"
TEST_RUNS = Path("runs") / "test"   # without --save_path, each test.py run writes to a new folder under it
TEST_OUTPUTS = ("results.csv", "predictions.csv", "results.json", "scatter.png")   # what it writes there


# train.py options test.py takes as they are (one declaration of each: promptiqa.config.OPTIONS)
SHARED_OPTIONS = ("config", "dataset", "data_root", "datasets_config", "label_norm", "cache_dir", "backbone", "device",
                  "gpu", "amp", "workers", "dist_url", "dist_backend", "dist_timeout", "flip_axis", "seed",
                  "split_file", "test_prompt")


def _flag(value: str) -> bool:
    return str(value).lower() in ("true", "1", "yes", "")


def add_eval_options(parser: argparse.ArgumentParser, checkpoint_required: bool = True) -> argparse.ArgumentParser:
    """The options of test.py (also the base of the ISP-experiment and Table 3 commands)."""
    a = parser.add_argument
    a("--checkpoint", required=checkpoint_required,
      help=f"the official release file ({run_folder.BEST}) or a checkpoint of this project")
    add_options(parser, SHARED_OPTIONS,
                workers="image-reading processes per process (default: none on up to 2 cores, else half the cores, "
                        "at most 4, as promptiqa score; 0 reads in the main process)",
                config="YAML file of test.py settings (the names below); command-line values override it",
                seed="split seed, as in train.py (default 2024, the official seed)",
                split_file=f"a splits JSON (e.g. the training run's {run_folder.SPLITS}), or 'checkpoint' for the "
                           "splits our checkpoint records",
                test_prompt="fixed: the ISPP encoded once (default); official: prompt images randomly flipped and "
                            "re-encoded per test group of n + 1 images, as the official test loop")
    a("--isp_strategy", choices=["interval", "random"], help="ISP sampling from the train split (default interval)")
    a("--isp_num", type=int, help="ISPP size n (default: the checkpoint's prompt_num, else 10)")
    a("--isp_seed", type=int, help="seed of random ISP sampling and of the perturbations (default 0)")
    a("--perturb", nargs="+", choices=list(PERTURBATIONS) + ["none"], metavar="NAME",
      help="prompt perturbations (Table 5), alone or combined: random_images (images of uniform random pixels "
           "0..255, the paper's), other_images (other images of the train split), random_scores (U(0,1)), "
           "inverted_scores (1 - s)")
    a("--batch_size", type=int, help="test images per forward pass per process (default 32)")
    a("--save_path", help=f"output folder (default: a new folder {TEST_RUNS}/YYYYmmdd-HHMMSS for each run)")
    a("--plcc_logistic", type=_flag, nargs="?", const=True,
      help="also report PLCC after a 4-parameter logistic fit (column plcc_logistic; the paper's PLCC is plain)")
    a("--plot", type=_flag, nargs="?", const=True, help="write scatter.png (default true)")
    a("--progress", type=_flag, nargs="?", const=True, help="progress bars (default true)")
    return parser


def build_test_parser(description: str = "Evaluate a PromptIQA checkpoint on datasets' test splits"
                      ) -> argparse.ArgumentParser:
    """test.py's command line; every option defaults to None so EvalConfig's defaults apply."""
    return add_eval_options(argparse.ArgumentParser(allow_abbrev=False, description=description, argument_default=None))


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """An EvalConfig from parsed arguments: the one merge (defaults <- --config <- command line); options of other
    commands in ``args`` are ignored."""
    return merge_settings(EvalConfig, args)


def resolve_test_config(argv: Optional[Sequence[str]] = None) -> EvalConfig:
    return config_from_args(build_test_parser().parse_args(argv))


class EvalSession:
    """A checkpoint loaded on this rank's device and the datasets to evaluate it on."""

    def __init__(self, cfg: EvalConfig, env: Optional[DistEnv] = None, trained_keys: Optional[Dict[str, str]] = None):
        cfg.validate()
        if not cfg.checkpoint:
            raise ConfigError("no --checkpoint given")
        if not cfg.dataset:
            raise ConfigError("no --dataset given")
        if cfg.seed is not None and cfg.split_file:
            raise ConfigError("give either --seed or --split_file, not both")
        self.cfg = cfg
        self.workers = default_workers() if cfg.workers is None else cfg.workers
        self.perturb = check_perturbations(cfg.perturb)
        self.roots = resolve_roots(cfg.dataset, config=cfg.datasets_config, overrides=cfg.data_root)  # keys first
        self._own_env = env is None
        self.env = env or init_distributed(cfg)
        self._scope = ExitStack()   # until close(): other ranks' warnings silenced (they repeat rank 0's)
        self._scope.enter_context(quiet_unless_main(self.env))
        try:
            self._open(cfg, trained_keys)
        except BaseException:
            self._scope.close()
            raise

    def _open(self, cfg: EvalConfig, trained_keys: Optional[Dict[str, str]]) -> None:
        self.log: Callable[..., None] = print if self.env.is_main else (lambda *a, **k: None)
        self.model, self.info = load_model(cfg.checkpoint, backbone=cfg.backbone, device=self.env.device,
                                           with_info=True)
        config = self.info.get("config") or {}
        self.official_format = not config
        self.uses_prompt = uses_prompt(self.model)
        self.image_size = int(self.model.image_size)
        trained_norm = config.get("label_norm")
        self.label_norm = cfg.label_norm or trained_norm or "official"
        if trained_norm and self.label_norm != trained_norm:
            self.warn(f"the checkpoint was trained with label_norm={trained_norm}; evaluating with {self.label_norm}")
        self.isp_num = cfg.isp_num or self.info.get("prompt_num") or DEFAULT_ISP_NUM
        self.trained_keys = dict(trained_keys or {})
        kind = "official-format file" if self.official_format else "this project's checkpoint"
        self.log(f"checkpoint {cfg.checkpoint} ({kind}, {self.model.arch}); device {self.env.device}, "
                 f"world size {self.env.world_size}")
        self.leakage: Dict[str, LeakageCheck] = {}   # per dataset: the leakage guard's verdict
        self.datasets = [self.load(key) for key in cfg.dataset]

    def warn(self, message: str) -> None:
        """A warning the user must see: on stderr, main rank only."""
        if self.env.is_main:
            print(f"WARNING: {message}", file=sys.stderr, flush=True)

    def _split(self, ds):
        cfg = self.cfg
        if cfg.split_file == CHECKPOINT_SPLITS:
            splits = (self.info.get("config") or {}).get("splits") or {}
            found = recorded_split(splits, ds.key)   # a requirement's split is its dataset's
            if found is None:
                recorded = ", ".join(sorted(splits)) or "none (official-format files record no splits)"
                raise ConfigError(f"--split_file checkpoint: {cfg.checkpoint} records no split for '{ds.key}' "
                                 f"(it records: {recorded})")
            entry = found[1]
            return split_from_units(ds, entry["train"], entry["test"], seed=entry.get("seed"),
                                    val_units=entry.get("val", ())), \
                f"the checkpoint's recorded split (seed {entry.get('seed')})"
        if cfg.split_file:
            return resolve_split(ds, split_file=cfg.split_file), f"split file {cfg.split_file}"
        split = resolve_split(ds, seed=cfg.seed)
        return split, f"seed {split.seed}"

    def load(self, key: str) -> DatasetViews:
        """Load ``key``'s records, split and images; run the leakage guard."""
        data = load_views(key, self.roots[key], self._split, self.image_size, self.label_norm, self.cfg.cache_dir)
        leakage = self.leakage[key] = check_leakage(data.records, data.split, self.info,
                                                    trained_key=self.trained_keys.get(key))
        if leakage.warns:
            self.warn(leakage.warning)
        self.log(f"dataset {key}: {len(data.train)} train / {len(data.test)} test images ({data.split_source}, "
                 f"{data.records.split_by} split), labels {self.label_norm}")
        return data

    def prompt(self, data: DatasetViews, isp_num: Optional[int] = None, strategy: Optional[str] = None,
               seed: Optional[int] = None, perturb: Optional[Sequence[str]] = None) -> Optional[SampledISPP]:
        """The ISPP for ``data`` (None for a model without prompts); the session's settings by default."""
        if not self.uses_prompt:
            return None
        return build_prompt(data.train, isp_num or self.isp_num, strategy or self.cfg.isp_strategy,
                            self.cfg.isp_seed if seed is None else seed,
                            self.perturb if perturb is None else perturb, key=data.key, order=data.train_order)

    def predict(self, data: DatasetViews, prompt: Optional[SampledISPP], model=None) -> np.ndarray:
        """Predictions for ``data``'s test split, in its order (every rank gets all of them)."""
        from tqdm import tqdm

        from ..engine.inference import predict_split

        cfg, env = self.cfg, self.env
        shard = len(TestShardSampler(len(data.test), env.rank, env.world_size))
        bar = tqdm(total=shard, desc=f"{data.key} test", unit="img", file=sys.stderr, dynamic_ncols=True,
                   disable=not (env.is_main and cfg.progress))
        try:
            return predict_split(model or self.model, data.test, env,
                                 None if prompt is None else prompt.images,
                                 None if prompt is None else prompt.scores, batch_size=cfg.batch_size,
                                 workers=self.workers, amp=cfg.amp, official_prompt=cfg.test_prompt == "official",
                                 flip_axis=cfg.flip_axis, progress=bar)
        finally:
            bar.close()

    def describe(self) -> Dict[str, Any]:
        """What results.json records about the checkpoint."""
        config = self.info.get("config") or {}
        return {"path": str(self.cfg.checkpoint), "format": "official" if self.official_format else "promptiqa",
                "arch": getattr(self.model, "arch", None), "backbone": self.model.config.get("backbone"),
                "image_size": self.image_size, "prompt_num": self.info.get("prompt_num"),
                "label_norm": config.get("label_norm"), "trained_on": sorted((config.get("splits") or {}))}

    def close(self) -> None:
        self._scope.close()
        if self._own_env:
            cleanup(self.env)


def evaluate_dataset(session: EvalSession, data: DatasetViews, prompt: Optional[SampledISPP] = None, model=None,
                     logistic: bool = False) -> Dict[str, Any]:
    """Score ``data``'s test split under ``prompt``: metrics and predictions."""
    pred = session.predict(data, prompt, model=model)
    with warnings.catch_warnings():
        if not session.env.is_main:
            warnings.simplefilter("ignore")
        metrics = compute_metrics(pred, data.test.labels, logistic=logistic)
    return {"metrics": metrics, "pred": pred, "gt": np.asarray(data.test.labels, dtype=np.float64),
            "n": len(data.test)}


def run_test(cfg: EvalConfig, env: Optional[DistEnv] = None) -> Dict[str, Dict[str, Any]]:
    """test.py: evaluate, print the table, write the result files (main rank); returns {dataset: result}."""
    started = time.time()
    session = EvalSession(cfg, env)
    try:
        out = None
        if session.env.is_main:   # only the main rank writes
            out = Path(cfg.save_path) if cfg.save_path else run_folder.new_run_folder(TEST_RUNS)
            for data in session.datasets:   # before any work: no output replaces a label file, image or input
                refuse_overwriting_dataset([(f"test.py's {name}", out / name) for name in TEST_OUTPUTS], data.records,
                                           [("the checkpoint", cfg.checkpoint), ("the --split_file", cfg.split_file)])
            out.mkdir(parents=True, exist_ok=True)
        if session.uses_prompt:
            session.log(f"ISPP: {session.isp_num} ISPs per dataset from its train split, {cfg.isp_strategy} sampling"
                        + (f" (seed {cfg.isp_seed})" if cfg.isp_strategy == "random" else "")
                        + (f"; perturbed: {', '.join(session.perturb)}" if session.perturb else ""))
        else:
            session.log("model without prompt (promptiqa_wo_prompt): no ISPP is used")
            if session.perturb:
                session.warn("--perturb has no effect on a model without prompt")
        results: Dict[str, Dict[str, Any]] = {}
        for data in session.datasets:
            prompt = session.prompt(data)
            result = evaluate_dataset(session, data, prompt, logistic=cfg.plcc_logistic)
            result.update(data=data, prompt=prompt, leakage=session.leakage[data.key])
            results[data.key] = result
        if session.env.is_main:
            write_test_outputs(session, results, out, time.time() - started)
        return results
    finally:
        session.close()


def write_test_outputs(session: EvalSession, results: Dict[str, Dict[str, Any]], out: Path, seconds: float) -> None:
    """results.csv, predictions.csv, results.json, scatter.png, and the printed table."""
    cfg = session.cfg
    extra = ["plcc_logistic"] if cfg.plcc_logistic else []
    columns = list(RESULTS_COLUMNS) + extra + ["leakage", "leaked"]
    rows = []
    for key, r in results.items():
        rows.append(dict(dataset=key, n=r["n"], leakage=r["leakage"].status, leaked=r["leakage"].leaked,
                         **r["metrics"]))
    write_csv(out / "results.csv", columns, rows)
    predictions = []
    for key, r in results.items():
        predictions += [dict(dataset=key, image=name, gt=float(g), pred=float(p))
                        for name, g, p in zip(r["data"].test_names, r["gt"], r["pred"])]
    write_csv(out / "predictions.csv", PREDICTIONS_COLUMNS, predictions)
    details = {
        "checkpoint": session.describe(),
        "config": cfg.to_dict(),
        "label_norm": session.label_norm,
        "isp_num": session.isp_num if session.uses_prompt else None,
        "workers": session.workers,
        "seconds": seconds,
        # an undefined figure (constant predictions, one test image) is null with its reason beside it
        "datasets": {key: {"metrics": {**r["metrics"], **undefined_notes(r["pred"], r["gt"], r["metrics"])},
                           "n": r["n"], "split": r["data"].split_source,
                           "split_seed": r["data"].split.seed, "leakage": r["leakage"].to_dict(),
                           "prompt": None if r["prompt"] is None else r["prompt"].describe(r["data"].train_names)}
                     for key, r in results.items()},
    }
    write_json(out / "results.json", details)
    if cfg.plot:
        plot_scatter({k: dict(gt=r["gt"], pred=r["pred"], **r["metrics"]) for k, r in results.items()},
                     out / "scatter.png")
    table_columns = ["dataset", "n", "SROCC", "PLCC", "KRCC", "RMSE"] + (["PLCC (logistic)"] if extra else []) \
        + ["leakage"]
    table_rows = [[key, r["n"], r["metrics"]["srocc"], r["metrics"]["plcc"], r["metrics"]["krcc"],
                   r["metrics"]["rmse"]] + ([r["metrics"]["plcc_logistic"]] if extra else [])
                  + [r["leakage"].cell] for key, r in results.items()]
    print(text_table(table_columns, table_rows))
    for r in results.values():   # repeated after the table, where they cannot be missed
        if r["leakage"].warns:
            session.warn(r["leakage"].warning)
    print(f"wrote {out / 'results.csv'}, {out / 'predictions.csv'}, {out / 'results.json'}"
          + (f", {out / 'scatter.png'}" if cfg.plot else "") + f" ({seconds:.1f} s)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The test.py entry point; exit codes as promptiqa.errors says (0 done, 1 one 'error:' line, 2 usage)."""
    def run() -> int:
        run_test(resolve_test_config(argv))
        return 0

    return run_command(run)
