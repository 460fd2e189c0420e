"""Every command-line option of train.py, test.py and the commands that share them, declared once (OPTIONS): its
flags, type, choices and help. A command takes the ones it reads by name (add_options), so a shared option reads and
checks the same everywhere; what a setting means, its default and its range are promptiqa/config.py's."""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, NamedTuple, Sequence, Tuple, Union

from .devices import AMP_CHOICES, FP16_REFUSAL
from .entry import command

FIRST_EPOCH_MODES = ("official", "shuffled")
# --log_to (also --log): experiment tracking (engine/tracking.py); "none" turns a config file's off. --log is the short
# name for python train.py and train.sh, but torchrun takes it for an abbreviation of its own --log-dir/--log_dir and
# refuses the whole command line as ambiguous: under torchrun write --log_to.
LOG_BACKENDS = ("tensorboard",)


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


class Option(NamedTuple):
    """One command-line option: its flags and argparse's keyword arguments."""

    flags: Tuple[str, ...]
    kwargs: Dict[str, Any]

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[-1].lstrip("-").replace("-", "_")


def _opt(*flags: str, **kwargs: Any) -> Option:
    return Option(flags, kwargs)


# Every train.py option, declared once, in --help order. test.py, the experiments and the benchmark take the ones
# they share by name (add_options), so a shared option reads and checks the same everywhere. Each defaults to None:
# only what the user typed overrides the config file (merge_settings).
OPTIONS: Dict[str, Option] = {option.dest: option for option in (
    _opt("--config", help="YAML file of settings; command-line values override it"),
    _opt("--dataset", nargs="+",
         help="dataset keys (configs/datasets.yaml) or names given with --data_root name=x.csv; KEY:REQUIREMENT for "
              "another label column of a dataset (agiqa_3k:align, docs/datasets.md#requirements)"),
    _opt("--exclude", nargs="+", metavar="KEY",
         help="hold these datasets (with their requirements) out of the --dataset mix: leave-one-dataset-out "
              "training, e.g. --config leave_one_out --exclude koniq10k"),
    _opt("--batch_size", type=int, help="images per optimiser step summed over the processes of a node"),
    _opt("--epochs", type=int),
    _opt("--seed", type=int, help="split seed (the official 2024); rank r seeds torch/numpy with seed + 100 r"),
    _opt("--lr", type=float),
    _opt("--weight_decay", type=float),
    _opt("--random_flipping_rate", type=float, help="probability of the prompt augmentation s -> 1 - s"),
    _opt("--random_scale_rate", type=float, help="probability of dividing a group's scores by u ~ U(max, 1)"),
    _opt("--random_flipping_warmup", type=int, help="epochs over which the flipping rate ramps linearly from 0 to "
                                                    "--random_flipping_rate (default 0: the full rate from the start)"),
    _opt("--model", choices=["promptiqa", "promptiqa_wo_prompt"]),
    _opt("--save_path"),
    _opt("-j", "--workers", type=int, help="data-loading workers per process (0: load in the main process)"),
    _opt("--dist-url", dest="dist_url"),
    _opt("--dist-backend", dest="dist_backend", choices=["nccl", "gloo"]),
    _opt("--dist_timeout", type=float, metavar="SECONDS",
         help="how long a rank waits in a collective for the others before the job fails (default: "
              "$PROMPTIQA_DIST_TIMEOUT, else 3600)"),
    _opt("--ddp", type=_flag, nargs="?", const=True,
         help="build a process group and wrap the model in DistributedDataParallel even for one process (exercises "
              "the NCCL/DDP path on one GPU)"),
    _opt("--multiprocessing-distributed", dest="multiprocessing_distributed", action="store_const", const=True),
    _opt("--world-size", dest="world_size", type=int, help="number of nodes (with --multiprocessing-distributed)"),
    _opt("--rank", type=int, help="node rank (with --multiprocessing-distributed)"),
    _opt("--gpu", type=int),
    _opt("--data_root", action="append", metavar="KEY=PATH", help="dataset root override (repeatable)"),
    _opt("--datasets_config", help="the key -> root YAML (default configs/datasets.yaml)"),
    _opt("--label_norm", choices=["official", "minmax"]),
    _opt("--split_file", help="a splits JSON (e.g. a run's splits.json) instead of --seed's splits"),
    _opt("--cache_dir", help=f"prepared image caches ({command('prepare')})"),
    _opt("--flip_axis", choices=["vertical", "horizontal", "none"]),
    _opt("--test_prompt", choices=["fixed", "official"]),
    _opt("--first_epoch", choices=FIRST_EPOCH_MODES,
         help="official (default): epoch 1's groups are consecutive runs of each dataset's official sample order, as "
              "the official code serves them; shuffled: regroup at random from epoch 1 on"),
    _opt("--backbone"),
    _opt("--backbone_kwargs", type=json.loads, help='JSON, e.g. \'{"depth": 4, "embed_dim": 64}\''),
    _opt("--image_size", type=int),
    _opt("--pretrained_backbone", type=_bool_or_path, help="true (ImageNet weights from the hub), false, or a file"),
    _opt("--drop", type=float),
    _opt("--lr_warmup_steps", type=int,
         help="ramp the learning rate linearly over the first N steps (default 0: none)"),
    _opt("--clip_grad", type=float,
         help="clip the gradient norm to this value before each step (default: no clipping)"),
    _opt("--device", help="a torch device: cpu, cuda, cuda:1, mps (default: cuda when available)"),
    _opt("--nprocs", type=int, help="processes per node with --multiprocessing-distributed (default: GPUs)"),
    _opt("--groups_per_process", type=int, help="groups (prompt sets) one process handles per step"),
    _opt("--batch_groups", type=_flag, nargs="?", const=True),
    _opt("--grad_checkpointing", type=_flag, nargs="?", const=True),
    _opt("--amp", type=_amp, choices=AMP_CHOICES,
         help="bf16 autocast, or none (float32); fp16 is refused: MAL's unscaled attention energies overflow it"),
    _opt("--eval_amp", type=_amp, choices=AMP_CHOICES,
         help="the precision of training's per-epoch evaluation, and so of the choice of the best model: none "
              "(default: float32, TF32 as --tf32 sets it, whatever --amp is) or bf16 autocast"),
    _opt("--compile", type=_flag, nargs="?", const=True),
    _opt("--tf32", type=_flag, nargs="?", const=True,
         help="TF32 matrix multiplies and cuDNN convolutions on CUDA (default true; false for float32 numerics, as "
              "configs/paper.yaml sets)"),
    _opt("--deterministic", type=_flag, nargs="?", const=True,
         help="on CUDA: deterministic kernels and no cuDNN autotuning, so a rerun or a resume is bit-exact (slower; "
              "an operation without a deterministic kernel stops the run naming it)"),
    _opt("--resume", help="last.pth.tar of a run to continue"),
    _opt("--overwrite", action="store_const", const=True,
         help="replace the run already in --save_path (its checkpoints, metrics and log); refused without it"),
    _opt("--eval_every", type=int),
    _opt("--val_fraction", type=float, metavar="F",
         help="carve a validation part (this fraction of each train split's units: reference images or images) "
              "out of training, and keep best_val_model.pth.tar, the best epoch on it, beside best_model.pth.tar "
              "(best on the test split, as the official code) (default 0: no validation part, the official "
              "protocol)"),
    _opt("--eval_batch_size", type=int),
    _opt("--log_every", type=int),
    _opt("--log", "--log_to", dest="log_to", nargs="+", choices=[*LOG_BACKENDS, "none"], metavar="BACKEND",
         help="experiment tracking: tensorboard writes TensorBoard event files (loss, learning rate, images/s every "
              "--log_every steps; each evaluation's SROCC/PLCC) in SAVE_PATH/tensorboard, from rank 0 (needs pip "
              "install tensorboard); none (default): no tracking. Under torchrun write --log_to (torchrun takes "
              "--log for its own --log-dir)"),
    _opt("--stop_after_steps", type=int, help="stop resumably after this many steps (a pre-emption drill)"),
)}
CHOICES: Dict[str, Sequence] = {name: o.kwargs["choices"] for name, o in OPTIONS.items() if "choices" in o.kwargs}


def add_options(parser: argparse.ArgumentParser, names: Sequence[str], **helps: str) -> argparse.ArgumentParser:
    """Add the OPTIONS ``names`` to ``parser``; ``helps`` gives an option the help text it shows there."""
    for name in names:
        option = OPTIONS[name]
        kwargs = {**option.kwargs, **({"help": helps[name]} if name in helps else {})}
        parser.add_argument(*option.flags, **kwargs)
    return parser


def build_parser(description: str = "Train PromptIQA") -> argparse.ArgumentParser:
    """The train.py command line: every option of OPTIONS."""
    return add_options(argparse.ArgumentParser(allow_abbrev=False,
                                               description=description, argument_default=None), list(OPTIONS))


