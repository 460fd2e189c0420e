"""Reading and writing PromptIQA checkpoints: the official release layout, plain state dicts, and our own.

Our checkpoints keep the official layout (``{"state_dict": {"module." + key: tensor}, "prompt_num": n}``) so the
official code loads them too, and add a ``config`` entry that describes the model, which makes them
self-describing: ``load_model`` rebuilds the right architecture from the file alone.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from ..devices import default_device
from ..errors import PromptIQAError
from ..fileio import atomic_write
from ..hub import resolve_checkpoint
from .promptiqa import ARCHITECTURES, DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE, MoNet, build_model, unwrap

PathLike = Union[str, os.PathLike]
DDP_PREFIX = "module."


class CheckpointError(PromptIQAError, ValueError):
    """A file that is not a loadable PromptIQA checkpoint, or one that does not fit the model."""


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint (a file, or a ``hf:`` reference: promptiqa.hub) onto the CPU with ``weights_only=True``;
    clear errors for missing or foreign files."""
    path = resolve_checkpoint(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types on foreign bytes (KeyError, EOFError, ...)
        raise CheckpointError(f"{path} is not a readable PromptIQA checkpoint (expected a torch.save'd dict with a "
                              f"'state_dict' of tensors): {err}") from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} is not a PromptIQA checkpoint: it holds a {type(obj).__name__}, not a dict")
    return dict(obj)


def split_checkpoint(obj: Mapping[str, Any], source: str = "checkpoint") -> Tuple[Dict[str, torch.Tensor], Dict]:
    """(state_dict without the DDP ``module.`` prefix, the other entries) from any accepted layout."""
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        state, meta = obj["state_dict"], {k: v for k, v in obj.items() if k != "state_dict"}
    else:
        state, meta = obj, {}
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} is not a PromptIQA checkpoint: expected a 'state_dict' mapping names to "
                              f"tensors")
    if all(k.startswith(DDP_PREFIX) for k in state):
        state = {k[len(DDP_PREFIX):]: v for k, v in state.items()}
    return dict(state), meta


def state_dict_sha256(model: torch.nn.Module) -> str:
    """The SHA-256 of ``model``'s state_dict: each entry's name, dtype, shape and bytes, in order. The one weight hash:
    saved prompts record it (``weights_sha256``), a run's ranks compare it (summary.json)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _describe(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_checkpoint(model: torch.nn.Module, path_or_state: Union[PathLike, Mapping[str, Any]]) -> Dict[str, Any]:
    """Load weights strictly from an official, plain or own checkpoint (file or dict); returns its other entries."""
    source = "the given state" if isinstance(path_or_state, Mapping) else str(path_or_state)
    obj = path_or_state if isinstance(path_or_state, Mapping) else read_checkpoint(path_or_state)
    state, meta = split_checkpoint(obj, source)
    _load_state(model, state, source)
    return meta


def _load_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    wrong = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own.keys() & state.keys() if state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        lines = [f"{source} does not fit this {type(model).__name__} ({getattr(model, 'config', {})}):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
        if wrong:
            lines.append(f"  shape mismatches ({len(wrong)}): {'; '.join(sorted(wrong)[:8])}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def checkpoint_config(model: MoNet, prompt_num: Optional[int] = None, label_norm: Optional[str] = None,
                      **extra: Any) -> Dict[str, Any]:
    """The ``config`` entry of our checkpoints: what ``load_model`` needs to rebuild ``model``, plus provenance."""
    from .. import __version__

    config = dict(model.config)
    config.update(prompt_num=prompt_num, label_norm=label_norm, version=__version__)
    config.update(extra)
    return config


def save_checkpoint(path: PathLike, model: torch.nn.Module, prompt_num: Optional[int] = None,
                    config: Optional[Dict[str, Any]] = None, **extra: Any) -> Path:
    """Write ``model`` in the official layout plus ``config`` (and ``extra`` entries), atomically (temp + rename)."""
    model = unwrap(model)
    config = dict(config) if config is not None else checkpoint_config(model, prompt_num)
    obj = {"state_dict": {DDP_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()},
           "prompt_num": prompt_num if prompt_num is not None else config.get("prompt_num"), "config": config}
    obj.update(extra)
    atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)
    return path


def _official_arch(state: Mapping[str, torch.Tensor]) -> str:
    """Official-format files do not name their architecture: the prompt encoder's keys tell."""
    return "promptiqa" if any(k.startswith("i_p_fusion.") for k in state) else "promptiqa_wo_prompt"


# The largest input side a checkpoint's config may ask for: beyond it the position embedding alone would take
# gigabytes (a hand-edited image_size: 65536 hung model building).
MAX_IMAGE_SIDE = 8192


def _check_config(config: Any, prompt_num: Any, path: PathLike) -> None:
    """Refuse a ``config`` entry (hand-edited, or from another program) whose fields have the wrong types."""
    def bad(field: str, value: Any, expected: str) -> CheckpointError:
        return CheckpointError(f"{path}: its config's {field} is {value!r}; expected {expected}")

    if not isinstance(config, Mapping):
        raise bad("entry", type(config).__name__, "a dict describing the model")
    if not isinstance(config.get("arch", "promptiqa"), str) or config.get("arch", "promptiqa") not in ARCHITECTURES:
        raise bad("arch", config.get("arch"), f"one of {', '.join(sorted(ARCHITECTURES))}")
    if not isinstance(config.get("backbone", DEFAULT_BACKBONE), str):
        raise bad("backbone", config.get("backbone"), "a timm model name")
    for field in ("image_size", "prompt_num"):
        value = config.get(field, prompt_num if field == "prompt_num" else None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise bad(field, value, "a positive whole number")
    if isinstance(config.get("image_size"), int) and config["image_size"] > MAX_IMAGE_SIDE:
        raise bad("image_size", config["image_size"], f"at most {MAX_IMAGE_SIDE} pixels (the paper's is {DEFAULT_IMAGE_SIZE})")
    if not isinstance(config.get("backbone_kwargs") or {}, Mapping):
        raise bad("backbone_kwargs", config.get("backbone_kwargs"), "a dict of timm constructor arguments")
    splits = config.get("splits")
    if splits is not None and not (isinstance(splits, Mapping) and all(
            isinstance(entry, Mapping) and all(isinstance(entry.get(side, []), (list, tuple)) for side in
                                               ("train", "test")) for entry in splits.values())):
        raise bad("splits", type(splits).__name__, "a dict of {dataset: {'train': [...], 'test': [...], ...}}")


def _weights_sizes(state: Mapping[str, torch.Tensor]) -> Dict[str, int]:
    """The backbone sizes the weights themselves fix (depth, embed_dim, patch_size, mlp_ratio, image_size), from
    tensor shapes alone: what a config's sizes are checked against before anything is built."""
    sizes: Dict[str, int] = {}
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("vit.blocks.") and k.split(".")[2].isdigit()}
    if blocks:
        sizes["depth"] = max(blocks) + 1
    proj, pos = state.get("vit.patch_embed.proj.weight"), state.get("vit.pos_embed")
    if proj is not None and proj.ndim == 4:
        sizes["embed_dim"] = int(proj.shape[0])
        fc1 = state.get("vit.blocks.0.mlp.fc1.weight")
        if fc1 is not None and fc1.shape[0] % proj.shape[0] == 0:
            sizes["mlp_ratio"] = int(fc1.shape[0] // proj.shape[0])
        sizes["patch_size"] = int(proj.shape[-1])
        # A plain ViT's grid is image_size / patch_size; a hybrid's (a CNN stem first, e.g. the demo's
        # vit_tiny_r_s16_p8) is divided by the stem's stride too, which the weights do not tell.
        hybrid = any(k.startswith("vit.patch_embed.backbone.") for k in state)
        if pos is not None and pos.ndim == 3 and not hybrid:
            grid = math.isqrt(int(pos.shape[1]))   # patches plus one or a few prefix tokens (class, registers)
            sizes["image_size"] = grid * sizes["patch_size"]
    return sizes


def _check_sizes(config: Mapping[str, Any], state: Mapping[str, torch.Tensor], path: PathLike) -> None:
    """Refuse a config whose architecture sizes disagree with its own weights, before building: a hand-edited
    ``depth: 1000000`` would otherwise spend hours constructing blocks (or all memory allocating them) only to fail
    on the first missing key."""
    kwargs = dict(config.get("backbone_kwargs") or {})
    if config.get("image_size") is not None:
        kwargs.setdefault("image_size", config["image_size"])
    weights = _weights_sizes(state)
    for field, value in kwargs.items():
        if field in weights and value != weights[field]:
            raise CheckpointError(f"{path}: its config's {field} is {value!r} but its weights are built for "
                                  f"{weights[field]}; the config was edited or belongs to other weights")
    heads, width = kwargs.get("num_heads"), weights.get("embed_dim")
    if heads is not None and width and not (isinstance(heads, int) and 1 <= heads <= width and width % heads == 0):
        raise CheckpointError(f"{path}: its config's num_heads is {heads!r}; expected a divisor of the weights' "
                              f"width {width}")


def non_finite(tensors: Mapping[str, Any]) -> List[str]:
    """The names of the floating-point tensors in ``tensors`` (nested dicts and lists, e.g. an optimiser's state,
    are walked; names joined by '.') that hold NaN or infinity."""
    bad: List[str] = []

    def walk(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            # A sum is NaN or infinite when any element is, and costs ~1/30 of isfinite().all() on a CPU; only a sum
            # that overflows from finite values needs the element-wise look.
            if value.is_floating_point() and not bool(torch.isfinite(value.sum())) \
                    and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{name}.{key}" if name else str(key), item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{name}.{i}" if name else str(i), item)

    walk("", tensors)
    return bad


def _check_finite(state: Mapping[str, torch.Tensor], path: PathLike) -> None:
    """Refuse weights holding NaN or infinity: every score would be NaN (a run saved after it diverged, a bad copy)."""
    bad = non_finite(state)
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s), e.g. "
                              f"{bad[0]}; it cannot score anything (a run saved after it diverged, or a damaged file)")


def _build(path: PathLike, arch: str, **kwargs: Any) -> MoNet:
    """build_model for ``path``'s config; what timm or the constructor refuse becomes a CheckpointError naming it."""
    try:
        return build_model(arch, **kwargs)
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: cannot build the model its config describes ({arch}, backbone "
                              f"{kwargs.get('backbone')!r}: {reason})") from err


def load_model(path: PathLike, backbone: Optional[str] = None, device: Union[str, torch.device, None] = None,
               with_info: bool = False):
    """Rebuild and load a model from an official release file or our checkpoint; returns it in eval mode.

    Our checkpoints are rebuilt from their ``config``; official files get the official configuration, or
    ``backbone`` when given (the image size then follows from the file's position embedding). With
    ``with_info=True`` returns ``(model, info)`` where ``info`` holds the file's ``config`` and ``prompt_num``.
    ``path`` may be a Hugging Face reference ``hf:REPO[/FILE][@REVISION]`` (promptiqa.hub), fetched once.
    """
    path = resolve_checkpoint(path)   # the local file from here on: messages and info["source"] name it
    obj = read_checkpoint(path)
    state, meta = split_checkpoint(obj, str(path))
    config = meta.get("config") or {}
    _check_config(config, meta.get("prompt_num"), path)
    _check_finite(state, path)
    if config:
        _check_sizes(config, state, path)
    config = dict(config)
    if config:
        arch = config.get("arch", "promptiqa")
        kwargs = dict(backbone=config.get("backbone", DEFAULT_BACKBONE), image_size=config.get("image_size"),
                      backbone_kwargs=config.get("backbone_kwargs") or None)
        if backbone is not None and backbone != kwargs["backbone"]:
            raise CheckpointError(f"{path} records backbone '{kwargs['backbone']}', not '{backbone}'")
    else:
        arch, kwargs = _official_arch(state), dict(backbone=backbone or DEFAULT_BACKBONE)
    model = _build(path, arch, **kwargs)
    pos = state.get("vit.pos_embed")
    if not config and pos is not None and pos.shape != model.vit.pos_embed.shape:
        # another image size than the backbone's default: the grid follows from the position embedding
        grid = int(round((pos.shape[1] - model.vit.num_prefix_tokens) ** 0.5))
        model = _build(path, arch, image_size=grid * int(model.vit.patch_embed.patch_size[0]), **kwargs)
    _load_state(model, state, str(path))
    model.to(device if device is not None else default_device()).eval()
    if with_info:
        info = dict(config=config or None, prompt_num=meta.get("prompt_num", config.get("prompt_num")),
                    source=str(path))
        return model, info
    return model
