"""The one training/evaluation configuration object: defaults <- YAML file (--config) <- command line.

Defaults are the official train.py's (lr 1e-5, weight decay 1e-5, batch 44, RS 0.5, RF 0.1, seed 2024 as in its
README command); the fields beyond the official ones are this project's engineering options.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import yaml

from .devices import check_amp
from .errors import ConfigError
# the command-line side (re-exported: commands and tests import them from here)
from .options import CHOICES, FIRST_EPOCH_MODES, LOG_BACKENDS, OPTIONS, add_options, build_parser  # noqa: F401


# The settings come in parts that each command takes what it needs of (train.py all of them but the ISP ones,
# test.py and the ISP experiments the data, runtime and evaluation parts). Fields stay flat on the command's config
# (cfg.lr, cfg.dataset), as in the YAML files and the command lines: a part is a dataclass the config inherits.


@dataclass
class DataSettings:
    """Which datasets, where they are, how they are split and read: the same for training, testing, experiments."""

    dataset: List[str] = field(default_factory=list)
    data_root: List[str] = field(default_factory=list)   # key=path overrides of configs/datasets.yaml
    datasets_config: Optional[str] = None
    split_file: Optional[str] = None
    cache_dir: Optional[str] = None
    flip_axis: str = "vertical"       # the official "horizontal" flip really flips the height axis
    test_prompt: str = "fixed"        # "fixed": encoded once, unflipped; "official": flipped, re-encoded per test group


@dataclass
class RuntimeSettings:
    """Where and how a command runs: device, precision, data-loading workers, the process group."""

    device: Optional[str] = None
    gpu: Optional[int] = None
    amp: str = "none"                 # bf16 | none (fp16 is refused: devices.FP16_REFUSAL)
    workers: int = 4
    dist_url: str = "env://"
    dist_backend: Optional[str] = None  # nccl on GPUs, gloo on CPU
    dist_timeout: Optional[float] = None  # seconds a collective waits (None: $PROMPTIQA_DIST_TIMEOUT, else 1 hour)


@dataclass
class ModelSettings:
    """The architecture trained (a checkpoint records it; test.py reads it from there)."""

    model: str = "promptiqa"
    backbone: str = "vit_base_patch8_224"
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    pretrained_backbone: Union[bool, str] = True
    drop: float = 0.1


@dataclass
class OptimSettings:
    """Optimisation and the paper's prompt augmentation. Defaults are the official train.py's."""

    batch_size: int = 44              # images per optimiser step summed over the processes of one node
    epochs: int = 50
    lr: float = 1e-5
    weight_decay: float = 1e-5
    random_flipping_rate: float = 0.1
    random_scale_rate: float = 0.5
    random_flipping_warmup: int = 0   # epochs over which the flipping rate ramps up from 0 (0: full rate at once)
    clip_grad: Optional[float] = None   # max gradient norm (None: no clipping, as the official code)
    lr_warmup_steps: int = 0            # linear learning-rate warm-up over the first steps (0: none, as the official)
    groups_per_process: int = 1
    first_epoch: str = "official"     # "official": epoch 1's groups run through each dataset's official sample order


@dataclass
class TrainConfig(OptimSettings, ModelSettings, RuntimeSettings, DataSettings):
    """train.py's settings: every part, plus the run's own."""

    seed: int = 2024                  # split seed; per-rank seeds are seed + 100 * rank
    label_norm: str = "official"
    save_path: str = "runs/promptiqa"
    # the official --multiprocessing-distributed mode: this process spawns nprocs ranks per node
    multiprocessing_distributed: bool = False
    world_size: int = 1               # nodes, as the official code means it with --multiprocessing-distributed
    rank: int = 0                     # node rank
    nprocs: Optional[int] = None      # processes per node for --multiprocessing-distributed (default: GPU count)
    ddp: bool = False                 # a process group and DDP even for one process (the NCCL/DDP path on one GPU)
    # how a step runs
    batch_groups: bool = False        # run a process's groups as one batch (faster, more memory)
    grad_checkpointing: bool = False
    compile: bool = False
    tf32: bool = True
    deterministic: bool = False       # CUDA: deterministic kernels, cuDNN autotuning off (bit-exact reruns, slower)
    # the run
    resume: Optional[str] = None
    overwrite: bool = False           # replace the run already in save_path (refused without it)
    eval_every: int = 1
    eval_batch_size: int = 32
    eval_amp: str = "none"            # the per-epoch evaluation's precision, so the best-model choice's: float32
    val_fraction: float = 0.0         # > 0: a validation part of each train split selects best_val_model.pth.tar
    log_every: int = 10
    log_to: List[str] = field(default_factory=list)   # experiment tracking backends (LOG_BACKENDS); none by default
    stop_after_steps: Optional[int] = None   # stop (resumably) after this many steps in this run: pre-emption drill
    # datasets held out of the mix (leave-one-dataset-out, configs/leave_one_out.yaml), each with its requirements
    exclude: List[str] = field(default_factory=list)
    config: Optional[str] = None

    def __post_init__(self):
        if self.exclude:   # applied once, here: `dataset` is the mix trained on, what the checkpoint records
            from .data.registry import hold_out

            self.dataset = hold_out(self.dataset, self.exclude)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, origin: Optional[Mapping[str, str]] = None) -> "TrainConfig":
        """Refuse, before any work, a setting of the wrong type, out of its range or not among its choices;
        ``origin`` maps a field to the config file it came from (named in the message). Returns self."""
        validate_options(self, origin, CHOICES)
        if self.rank >= self.world_size:
            raise ConfigError(f"--rank {self.rank} must be below --world-size {self.world_size} (node ranks are "
                              f"0..{self.world_size - 1})")
        return self


class Range(NamedTuple):
    """The valid values of a numeric option: from ``low`` (excluded if ``above_low``) to ``high`` (excluded if
    ``below_high``; None: no upper bound)."""

    low: float
    high: Optional[float] = None
    below_high: bool = False
    above_low: bool = False


# The range of every numeric option of train.py, test.py and the ISP tools, by name: one table, so an option that
# several commands share has one rule.
# Upper bounds where a huge value is a typo that would otherwise fail deep inside (NumPy seeds are 32-bit; torch
# sizes overflow int64; each loader worker is a process).
SEED_LIMIT, MAX_WORKERS, MAX_BATCH = 2 ** 32 - 1, 1024, 2 ** 20
NUMBER_RULES: Dict[str, Range] = {
    "batch_size": Range(1, MAX_BATCH), "epochs": Range(1), "seed": Range(0, SEED_LIMIT), "lr": Range(0),
    "weight_decay": Range(0),
    "random_flipping_rate": Range(0, 1), "random_scale_rate": Range(0, 1), "random_flipping_warmup": Range(0),
    "workers": Range(0, MAX_WORKERS), "world_size": Range(1), "rank": Range(0), "gpu": Range(0), "image_size": Range(1),
    "drop": Range(0, 1, below_high=True), "clip_grad": Range(0, above_low=True), "lr_warmup_steps": Range(0),
    "nprocs": Range(1), "groups_per_process": Range(1), "eval_every": Range(1), "eval_batch_size": Range(1, MAX_BATCH),
    "log_every": Range(1), "stop_after_steps": Range(1), "isp_num": Range(1), "isp_seed": Range(0, SEED_LIMIT),
    "draws": Range(1), "sizes": Range(1), "k": Range(2), "finetune_steps": Range(0), "bootstrap": Range(1),
    "dist_timeout": Range(0, above_low=True),
    "val_fraction": Range(0, 1, below_high=True),
}
# options whose command-line spelling is not --<field name> (the official ones)
_FLAGS = {"world_size": "--world-size", "dist_url": "--dist-url", "dist_backend": "--dist-backend",
          "multiprocessing_distributed": "--multiprocessing-distributed"}


def check_number(name: str, value: Any, where: str = "") -> None:
    """Refuse ``value`` for option ``name`` when it is not finite or outside NUMBER_RULES[name] (None passes);
    ``where`` replaces the option's name in the message."""
    rule = NUMBER_RULES.get(name)
    if rule is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    option = where or _FLAGS.get(name, f"--{name}")
    if not math.isfinite(value):
        raise ConfigError(f"{option} must be a finite number, got {value}")
    too_low = value < rule.low or (rule.above_low and value == rule.low)
    lowest = f"{'above' if rule.above_low else 'at least'} {rule.low}"
    if rule.high is None:
        if too_low:
            raise ConfigError(f"{option} must be {lowest}, got {value}")
    elif too_low or value > rule.high or (rule.below_high and value == rule.high):
        raise ConfigError(f"{option} must be {lowest} and {'below' if rule.below_high else 'at most'} {rule.high}, "
                          f"got {value}")


def validate_options(obj, origin: Optional[Mapping[str, str]] = None,
                     choices: Optional[Mapping[str, Sequence]] = None) -> None:
    """Check every field of the dataclass ``obj`` against its type, NUMBER_RULES and ``choices``; the message
    names the option (or ``origin[field]``, the file a value came from)."""
    origin = origin or {}
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = f"{origin[f.name]}: {f.name}" if f.name in origin else _FLAGS.get(f.name, f"--{f.name}")
        if not _fits(value, hints[f.name]):
            raise ConfigError(f"{where}: expected {_describe(hints[f.name])}, got {type(value).__name__} {value!r}")
        if f.name in ("amp", "eval_amp"):   # one rule for every --amp and --eval_amp (fp16 refused with the reason)
            check_amp(value, where)
        values = value if isinstance(value, list) else [value]
        for v in values:
            check_number(f.name, v, where if f.name in origin else "")
            allowed = (choices or {}).get(f.name)
            if allowed and v is not None and v not in allowed:
                raise ConfigError(f"{where}: expected one of {', '.join(map(str, allowed))}, got {v!r}")


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Union:
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0]).replace('a ', '', 1).replace('an ', '', 1)}s"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _from_yaml(value: Any, hint: Any) -> Any:
    """YAML 1.1 reads 1e-5 (no dot) as a string: accept a number written so where a number is expected."""
    floats = hint is float or (typing.get_origin(hint) is Union and float in typing.get_args(hint))
    if floats and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# Fields that change what is trained (resuming with another value is refused) vs. only how.
ARCHITECTURE_FIELDS = ("model", "backbone", "backbone_kwargs", "image_size")
STATE_FIELDS = ("dataset", "batch_size", "seed", "lr", "weight_decay", "random_flipping_rate", "random_scale_rate",
                "random_flipping_warmup", "label_norm", "groups_per_process", "flip_axis", "drop", "clip_grad",
                "lr_warmup_steps", "first_epoch")


def read_yaml(path: Union[str, Path]) -> Tuple[Path, Dict[str, Any]]:
    """(the file, its mapping) of a settings YAML: a path, or a shipped config's name (``paper``,
    ``configs/paper.yaml``); a missing file, one that is not UTF-8 text, malformed YAML (naming the line) or a file
    that is not a mapping is an error naming the file."""
    from .resources import config_file

    path = config_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return path, data


def typed_settings(data: Mapping[str, Any], settings: type, where: str) -> Dict[str, Any]:
    """``data`` (settings as YAML reads them) for the config class ``settings``: unknown keys and values of the wrong
    type are an error naming ``where``; a number YAML 1.1 read as a string (1e-5) is the number."""
    hints = typing.get_type_hints(settings)
    unknown = sorted(map(str, set(data) - set(hints)))
    if unknown:
        raise ConfigError(f"{where}: unknown settings {unknown}")
    data = {key: _from_yaml(value, hints[key]) for key, value in data.items()}
    for key, value in data.items():
        if not _fits(value, hints[key]):
            raise ConfigError(f"{where}: {key}: expected {_describe(hints[key])}, got {type(value).__name__} "
                              f"{value!r}")
    return data


def load_yaml(path: Union[str, Path], settings: type = None) -> Dict[str, Any]:
    """Read a settings YAML for the config class ``settings`` (default TrainConfig): read_yaml, then typed_settings."""
    path, data = read_yaml(path)
    return typed_settings(data, settings or TrainConfig, str(path))


def merge_settings(settings: type, args: argparse.Namespace, base: Optional[Mapping[str, Any]] = None,
                   base_origin: str = ""):
    """The one merge every command's configuration goes through: ``settings``' defaults <- ``base`` (settings a
    command fixes itself, from ``base_origin``: the demo's train section) <- the ``--config`` YAML file <- what the
    command line gave (options left at None were not typed); validated before it is returned."""
    given = {k: v for k, v in vars(args).items() if v is not None and k in settings.__dataclass_fields__}
    values = typed_settings(base or {}, settings, base_origin)
    origin = {key: base_origin for key in values}
    if given.get("config"):
        from_file = load_yaml(given["config"], settings)
        values.update(from_file)
        origin.update({key: given["config"] for key in from_file})
    values.update(given)
    return settings(**values).validate({key: where for key, where in origin.items() if key not in given})


def resolve_config(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None
                   ) -> TrainConfig:
    """train.py's configuration: defaults <- --config file <- command line."""
    return merge_settings(TrainConfig, (parser or build_parser()).parse_args(argv))


@dataclass
class EvalConfig(RuntimeSettings, DataSettings):
    """test.py's settings (also the ISP experiments' and Table 3's): the data and runtime parts mean what they
    mean in train.py; the model comes from the checkpoint."""

    checkpoint: str = ""
    seed: Optional[int] = None                # split seed; None: the official 2024 (unless split_file)
    label_norm: Optional[str] = None          # None: the checkpoint's, else official
    backbone: Optional[str] = None            # for official-format files only (ours record it)
    isp_strategy: str = "interval"
    isp_num: Optional[int] = None             # None: the checkpoint's prompt_num, else 10
    isp_seed: int = 0                         # seeds random ISP sampling and the perturbations
    perturb: List[str] = field(default_factory=list)
    save_path: Optional[str] = None           # None: a new folder of its own under runs/test (TEST_RUNS)
    workers: Optional[int] = None             # None: devices.default_workers(), the rule `promptiqa score` uses
    batch_size: int = 32                      # test images per forward pass per process
    plcc_logistic: bool = False
    plot: bool = True
    progress: bool = True
    config: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, origin: Optional[Mapping[str, str]] = None) -> "EvalConfig":
        """Refuse, before any work, a setting of the wrong type, out of its range or not among its choices."""
        validate_options(self, origin, CHOICES)
        return self


def evaluation_config(cfg: TrainConfig, **changes: Any) -> EvalConfig:
    """test.py's settings for what ``cfg`` trains: its data and runtime parts and its label normalisation, its
    evaluation batch size and precision (--eval_amp: float32 unless asked), and ``changes`` (the checkpoint, the
    split file, the output folder, ...)."""
    shared = {f.name: copy.deepcopy(getattr(cfg, f.name))
              for part in (DataSettings, RuntimeSettings) for f in dataclasses.fields(part)}
    return EvalConfig(**{**shared, "label_norm": cfg.label_norm, "batch_size": cfg.eval_batch_size,
                         "amp": cfg.eval_amp, **changes})
