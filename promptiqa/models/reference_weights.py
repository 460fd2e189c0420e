"""The reference weights and the official model's test vector: how the fidelity tests and gpu-check's row 1 tell
that our network computes what the official one does (tests/fixtures/reference holds the vector and the manifest).

Synthetic weights, not trained ones: each tensor is a pure function of (seed, key, shape, dtype), drawn in float64 by
NumPy's default generator seeded with ``SeedSequence([seed, CRC-32 of the key's UTF-8 bytes])`` and cast to the
dtype. Nothing depends on the order of keys, on torch's RNG or on the device, so any implementation that uses the
official key names gets the same bits; these are the rules (version 1) the official model was run with to make the
test vector. By the key's last name, the first rule that applies (fan_in: the product of all dimensions but the
first):

    num_batches_tracked, or an integer dtype     0
    running_mean                                 N(0, 0.1^2)
    running_var                                  U(0.5, 1.5)
    gamma (a Self_Attention's residual gate)     U(0.5, 1.0)
    cls_token, pos_embed, dist_token             N(0, 0.1^2)
    1-D weight (LayerNorm, BatchNorm)            1 + N(0, 0.1^2)
    bias                                         N(0, 0.02^2)
    weight of 2 or more dimensions               N(0, (gain / sqrt(fan_in))^2)
    any other floating tensor                    N(0, 0.02^2)

The gain is 1 except for the query and key projections of MAL's attentions (see ``_gain``). The point of the rules
is a well-conditioned network: no softmax near one-hot, every attention gate open, sigmoid outputs spread between
about 0.2 and 0.65, so a computation that differs from the official one shows in the outputs.
"""
from __future__ import annotations

import json
import math
import os
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..data.images import normalise
from ..errors import PromptIQAError

RULES_VERSION = 1            # the vector records the rules it was made with (its fill_rules_version)
FIDELITY_TOLERANCE = 1e-5    # absolute, float32, TF32 off; the official model's own run-to-run noise is ~3e-7
VECTOR_FILE = "vector_public.npz"
MANIFEST_FILE = "promptiqa_state_dict_manifest.json"
# what a test vector holds (tests/fixtures/reference/README.md says what each is)
VECTOR_ARRAYS = ("seed", "weights_abs_sum", "loo_images", "loo_scores", "loo_expected", "prompt_images",
                 "prompt_scores", "query_images", "prompt_expected")

TOKEN_STD = 0.1
NORM_WEIGHT_STD = 0.1
RUNNING_MEAN_STD = 0.1
RUNNING_VAR_RANGE = (0.5, 1.5)
GAMMA_RANGE = (0.5, 1.0)
SMALL_STD = 0.02             # biases and any other floating tensor

Entry = Tuple[str, Tuple[int, ...], torch.dtype]


class ReferenceError(PromptIQAError):
    """A manifest or test vector that cannot be used: missing, unreadable, or not in the expected format."""


def _gain(key: str) -> float:
    """The factor on 1/sqrt(fan_in) for a weight of two or more dimensions."""
    parts = key.split(".")
    projection = parts[-2] if len(parts) >= 2 else ""
    # MAL's Self_Attention energies are not scaled by 1/sqrt(d) and its inputs are raw ViT features (std 2-4), so
    # unit-gain query/key projections would make those softmaxes almost one-hot; the fusion MAL sees wider features.
    if projection in ("qConv", "kConv") and "attention_module." in key:
        return 0.25 if "fusion_mal.attention_module." in key else 0.5
    if projection in ("c_q", "c_k") and "feature_attention." in key:
        return 0.5
    return 1.0


def reference_tensor(key: str, shape: Sequence[int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """The reference value of one state-dict entry (the module docstring gives the rules)."""
    shape = tuple(int(n) for n in shape)
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked" or not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    if int(seed) < 0:
        raise ValueError(f"seed {seed}: expected a non-negative integer")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode("utf-8"))]))
    if name == "running_mean":
        values = rng.normal(0.0, RUNNING_MEAN_STD, shape)
    elif name == "running_var":
        values = rng.uniform(*RUNNING_VAR_RANGE, shape)
    elif name == "gamma":
        values = rng.uniform(*GAMMA_RANGE, shape)
    elif name in ("cls_token", "pos_embed", "dist_token"):
        values = rng.normal(0.0, TOKEN_STD, shape)
    elif name == "weight" and len(shape) == 1:
        values = 1.0 + rng.normal(0.0, NORM_WEIGHT_STD, shape)
    elif name == "weight":
        fan_in = math.prod(shape[1:])
        values = rng.normal(0.0, _gain(key) / math.sqrt(fan_in), shape)
    else:   # bias, and any other floating parameter or buffer
        values = rng.normal(0.0, SMALL_STD, shape)
    return torch.from_numpy(np.asarray(values, dtype=np.float64)).to(dtype)


def read_manifest(path: Union[str, os.PathLike]) -> dict:
    """A state-dict manifest (JSON: ``entries``, a list of {key, shape, dtype}); one clear error when it is not one."""
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReferenceError(f"{path}: cannot read the state-dict manifest ({err}); expected a JSON file like "
                             f"tests/fixtures/reference/{MANIFEST_FILE}") from None
    entries = manifest.get("entries") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"key", "shape"} <= set(e) for e in entries):
        raise ReferenceError(f"{path}: not a state-dict manifest: expected an object whose 'entries' list holds "
                             f"{{key, shape, dtype}} objects")
    return manifest


def _dtype(name: str, key: str) -> torch.dtype:
    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype):
        raise ReferenceError(f"manifest entry {key}: unknown dtype {name!r}")
    return dtype


def _entries(source: Any) -> List[Entry]:
    if isinstance(source, nn.Module):
        source = source.state_dict()
    if isinstance(source, (str, os.PathLike)):
        source = read_manifest(source)
    if isinstance(source, Mapping) and isinstance(source.get("entries"), list):
        return [(e["key"], tuple(e["shape"]), _dtype(e.get("dtype", "float32"), e["key"])) for e in source["entries"]]
    if isinstance(source, Mapping) and all(isinstance(v, torch.Tensor) for v in source.values()):
        return [(key, tuple(value.shape), value.dtype) for key, value in source.items()]
    raise TypeError("expected a model, a state dict, a manifest (its path, or the loaded dict with 'entries')")


def reference_state_dict(manifest_or_model: Any, seed: int) -> "OrderedDict[str, torch.Tensor]":
    """The reference weights for every entry of a model, a state dict or a manifest (path or loaded), in its order:
    new CPU tensors for ``model.load_state_dict(..., strict=True)``."""
    return OrderedDict((key, reference_tensor(key, shape, dtype, seed)) for key, shape, dtype in
                       _entries(manifest_or_model))


def weights_abs_sum(state: Mapping[str, torch.Tensor]) -> float:
    """The sum of |w| over a state dict's floating tensors, in float64 (the vector's check of the weights it used)."""
    return sum(float(value.double().abs().sum()) for value in state.values() if value.is_floating_point())


def read_vector(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """A test vector (.npz in vector_public.npz's format) as {name: array}; one clear error when it is not one or
    was made with other weight rules."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            vector = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as err:
        raise ReferenceError(f"{path}: cannot read the test vector ({err}); expected an .npz file like "
                             f"tests/fixtures/reference/{VECTOR_FILE}") from None
    missing = [name for name in VECTOR_ARRAYS if name not in vector]
    if missing:
        raise ReferenceError(f"{path}: not a test vector: {', '.join(missing)} missing (expected the arrays "
                             f"{', '.join(VECTOR_ARRAYS)})")
    version = int(vector.get("fill_rules_version", RULES_VERSION))
    if version != RULES_VERSION:
        raise ReferenceError(f"{path}: made with weight rules version {version}; this code implements version "
                             f"{RULES_VERSION}")
    return vector


def _images(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> the official normalisation, (N, 3, H, W) float32 on ``device``."""
    return normalise(torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().to(device))


def vector_outputs(model: nn.Module, vector: Mapping[str, np.ndarray],
                   device: Optional[torch.device] = None) -> Dict[str, np.ndarray]:
    """The model's outputs for a vector's inputs, float64 on the CPU: the leave-one-out forward over its batch and
    its queries scored under its prompt (``model`` already holds the vector's weights and is in eval mode)."""
    device = torch.device(device or next(model.parameters()).device)
    with torch.no_grad():
        loo = model(_images(vector["loo_images"], device), torch.from_numpy(vector["loo_scores"]).to(device))
        prompt = model.encode_prompt(_images(vector["prompt_images"], device),
                                     torch.from_numpy(vector["prompt_scores"]).to(device))
        query = model.score(_images(vector["query_images"], device), prompt)
    return {"leave-one-out": loo.double().cpu().numpy(), "prompted": query.double().cpu().numpy()}


def vector_errors(model: nn.Module, vector: Mapping[str, np.ndarray],
                  device: Optional[torch.device] = None) -> Dict[str, float]:
    """The largest absolute difference from the vector's expected outputs, per path (leave-one-out, prompted)."""
    got = vector_outputs(model, vector, device)
    expected = {"leave-one-out": vector["loo_expected"], "prompted": vector["prompt_expected"]}
    return {path: float(np.abs(got[path] - expected[path]).max()) for path in got}
