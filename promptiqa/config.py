"""The one training/evaluation configuration object: defaults <- YAML file (--config) <- command line.

Defaults are the official train.py's (lr 1e-5, weight decay 1e-5, batch 44, RS 0.5, RF 0.1, seed 2024 as in its
README command); the fields beyond the official ones are this project's engineering options.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

import yaml

from .devices import AMP_CHOICES, FP16_REFUSAL, check_amp
from .errors import ConfigError


@dataclass
class TrainConfig:
    # --- the official command line ---
    dataset: List[str] = field(default_factory=list)
    batch_size: int = 44              # images per optimiser step summed over the processes of one node
    epochs: int = 50
    seed: int = 2024                  # split seed; per-rank seeds are seed + 100 * rank
    lr: float = 1e-5
    weight_decay: float = 1e-5
    random_flipping_rate: float = 0.1
    random_scale_rate: float = 0.5
    random_flipping_warmup: int = 0   # epochs over which the flipping rate ramps up from 0 (0: full rate from the start)
    model: str = "promptiqa"
    save_path: str = "runs/promptiqa"
    workers: int = 4
    dist_url: str = "env://"
    dist_backend: Optional[str] = None  # nccl on GPUs, gloo on CPU
    multiprocessing_distributed: bool = False
    world_size: int = 1               # nodes, as the official code means it with --multiprocessing-distributed
    rank: int = 0                     # node rank
    gpu: Optional[int] = None
    # --- data ---
    data_root: List[str] = field(default_factory=list)   # key=path overrides of configs/datasets.yaml
    datasets_config: Optional[str] = None
    label_norm: str = "official"
    split_file: Optional[str] = None
    cache_dir: Optional[str] = None
    flip_axis: str = "vertical"       # the official "horizontal" flip really flips the height axis
    test_prompt: str = "fixed"        # "fixed": encoded once, unflipped; "official": flipped, re-encoded per test group
    first_epoch: str = "official"     # "official": epoch 1's groups run through each dataset's official sample order
    # --- model ---
    backbone: str = "vit_base_patch8_224"
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    pretrained_backbone: Union[bool, str] = True
    drop: float = 0.1
    clip_grad: Optional[float] = None   # max gradient norm (None: no clipping, as the official code)
    lr_warmup_steps: int = 0            # linear learning-rate warm-up over the first steps (0: none, as the official)
    # --- engineering ---
    device: Optional[str] = None
    nprocs: Optional[int] = None      # processes per node for --multiprocessing-distributed (default: GPU count)
    groups_per_process: int = 1
    batch_groups: bool = False        # run a process's groups as one batch (faster, more memory)
    grad_checkpointing: bool = False
    amp: str = "none"                 # bf16 | none (fp16 is refused: devices.FP16_REFUSAL)
    compile: bool = False
    tf32: bool = True
    resume: Optional[str] = None
    overwrite: bool = False           # replace the run already in save_path (refused without it)
    eval_every: int = 1
    eval_batch_size: int = 32
    log_every: int = 10
    stop_after_steps: Optional[int] = None   # stop (resumably) after this many steps in this run: pre-emption drill
    config: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, origin: Optional[Mapping[str, str]] = None) -> "TrainConfig":
        """Refuse, before any work, a setting of the wrong type, out of its range or not among its choices;
        ``origin`` maps a field to the config file it came from (named in the message). Returns self."""
        choices = {a.dest: a.choices for a in build_parser()._actions if a.choices}
        validate_options(self, origin, choices)
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
NUMBER_RULES: Dict[str, Range] = {
    "batch_size": Range(1), "epochs": Range(1), "seed": Range(0), "lr": Range(0), "weight_decay": Range(0),
    "random_flipping_rate": Range(0, 1), "random_scale_rate": Range(0, 1), "random_flipping_warmup": Range(0),
    "workers": Range(0), "world_size": Range(1), "rank": Range(0), "gpu": Range(0), "image_size": Range(1),
    "drop": Range(0, 1, below_high=True), "clip_grad": Range(0, above_low=True), "lr_warmup_steps": Range(0),
    "nprocs": Range(1), "groups_per_process": Range(1), "eval_every": Range(1), "eval_batch_size": Range(1),
    "log_every": Range(1), "stop_after_steps": Range(1), "isp_num": Range(1), "isp_seed": Range(0),
    "draws": Range(1), "sizes": Range(1),
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
        if f.name == "amp":   # one rule for every command's --amp (fp16 refused with the reason)
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


FIRST_EPOCH_MODES = ("official", "shuffled")

# Fields that change what is trained (resuming with another value is refused) vs. only how.
ARCHITECTURE_FIELDS = ("model", "backbone", "backbone_kwargs", "image_size")
STATE_FIELDS = ("dataset", "batch_size", "seed", "lr", "weight_decay", "random_flipping_rate", "random_scale_rate",
                "random_flipping_warmup", "label_norm", "groups_per_process", "flip_axis", "drop", "clip_grad",
                "lr_warmup_steps", "first_epoch")


def _bool_or_path(value: str) -> Union[bool, str]:
    low = str(value).lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no", "none"):
        return False
    return value


def _flag(value: str) -> bool:
    return str(value).lower() in ("true", "1", "yes", "")


def _amp(value: str) -> str:
    if value == "fp16":   # named with the reason, not just "invalid choice"
        raise argparse.ArgumentTypeError(FP16_REFUSAL)
    return value


def build_parser(description: str = "Train PromptIQA") -> argparse.ArgumentParser:
    """The train.py command line; every option defaults to None so only what the user typed overrides the file."""
    p = argparse.ArgumentParser(description=description, argument_default=None)
    a = p.add_argument
    a("--config", help="YAML file of settings; command-line values override it")
    a("--dataset", nargs="+", help="dataset keys (configs/datasets.yaml) or names given with --data_root name=x.csv")
    a("--batch_size", type=int, help="images per optimiser step summed over the processes of a node")
    a("--epochs", type=int)
    a("--seed", type=int, help="split seed (the official 2024); rank r seeds torch/numpy with seed + 100 r")
    a("--lr", type=float)
    a("--weight_decay", type=float)
    a("--random_flipping_rate", type=float, help="probability of the prompt augmentation s -> 1 - s")
    a("--random_scale_rate", type=float, help="probability of dividing a group's scores by u ~ U(max, 1)")
    a("--random_flipping_warmup", type=int, help="epochs over which the flipping rate ramps linearly from 0 to "
                                                 "--random_flipping_rate (default 0: the full rate from the start)")
    a("--model", choices=["promptiqa", "promptiqa_wo_prompt"])
    a("--save_path")
    a("-j", "--workers", type=int, help="data-loading workers per process (0: load in the main process)")
    a("--dist-url", dest="dist_url")
    a("--dist-backend", dest="dist_backend", choices=["nccl", "gloo"])
    a("--multiprocessing-distributed", dest="multiprocessing_distributed", action="store_const", const=True)
    a("--world-size", dest="world_size", type=int, help="number of nodes (with --multiprocessing-distributed)")
    a("--rank", type=int, help="node rank (with --multiprocessing-distributed)")
    a("--gpu", type=int)
    a("--data_root", action="append", metavar="KEY=PATH", help="dataset root override (repeatable)")
    a("--datasets_config", help="the key -> root YAML (default configs/datasets.yaml)")
    a("--label_norm", choices=["official", "minmax"])
    a("--split_file", help="a splits JSON (e.g. a run's splits.json) instead of --seed's splits")
    a("--cache_dir", help="prepared image caches (python -m promptiqa.data.prepare)")
    a("--flip_axis", choices=["vertical", "horizontal", "none"])
    a("--test_prompt", choices=["fixed", "official"])
    a("--first_epoch", choices=FIRST_EPOCH_MODES,
      help="official (default): epoch 1's groups are consecutive runs of each dataset's official sample order, as "
           "the official code serves them; shuffled: regroup at random from epoch 1 on")
    a("--backbone")
    a("--backbone_kwargs", type=json.loads, help='JSON, e.g. \'{"depth": 4, "embed_dim": 64}\'')
    a("--image_size", type=int)
    a("--pretrained_backbone", type=_bool_or_path, help="true (ImageNet weights from the hub), false, or a file")
    a("--drop", type=float)
    a("--lr_warmup_steps", type=int, help="ramp the learning rate linearly over the first N steps (default 0: none)")
    a("--clip_grad", type=float, help="clip the gradient norm to this value before each step (default: no clipping)")
    a("--device")
    a("--nprocs", type=int, help="processes per node with --multiprocessing-distributed (default: GPUs)")
    a("--groups_per_process", type=int, help="groups (prompt sets) one process handles per step")
    a("--batch_groups", type=_flag, nargs="?", const=True)
    a("--grad_checkpointing", type=_flag, nargs="?", const=True)
    a("--amp", type=_amp, choices=AMP_CHOICES,
      help="bf16 autocast, or none (float32); fp16 is refused: MAL's unscaled attention energies overflow it")
    a("--compile", type=_flag, nargs="?", const=True)
    a("--tf32", type=_flag, nargs="?", const=True,
      help="TF32 matrix multiplies and cuDNN convolutions on CUDA (default true; false for float32 numerics, as "
           "configs/paper.yaml sets)")
    a("--resume", help="last.pth.tar of a run to continue")
    a("--overwrite", action="store_const", const=True,
      help="replace the run already in --save_path (its checkpoints, metrics and log); refused without it")
    a("--eval_every", type=int)
    a("--eval_batch_size", type=int)
    a("--log_every", type=int)
    a("--stop_after_steps", type=int, help="stop resumably after this many steps (a pre-emption drill)")
    return p


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a settings YAML (a path, or a shipped config's name: ``paper``, ``configs/paper.yaml``); unknown keys are
    an error naming the file."""
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
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(map(str, set(data) - set(hints)))
    if unknown:
        raise ConfigError(f"{path}: unknown settings {unknown}")
    data = {key: _from_yaml(value, hints[key]) for key, value in data.items()}
    for key, value in data.items():
        if not _fits(value, hints[key]):
            raise ConfigError(f"{path}: {key}: expected {_describe(hints[key])}, got {type(value).__name__} "
                              f"{value!r}")
    return data


def resolve_config(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None
                   ) -> TrainConfig:
    """Defaults <- --config file <- command line."""
    parser = parser or build_parser()
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    values: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    if args.get("config"):
        values.update(load_yaml(args["config"]))
        origin = {key: args["config"] for key in values if key not in args}
    values.update(args)
    return TrainConfig(**values).validate(origin)
