"""The reference weights (promptiqa/models/reference_weights.py): a pure function of (seed, key, shape), drawn by the
rules the official model's test vector was made with, bit for bit; and the one-line errors of its file readers."""
from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from promptiqa.models import build_model
from promptiqa.models.reference_weights import (MANIFEST_FILE, RULES_VERSION, VECTOR_FILE, ReferenceError,
                                                read_manifest, read_vector, reference_state_dict, reference_tensor)
from promptiqa.resources import REFERENCE_FIXTURES

FIXTURES = Path(__file__).resolve().parents[1] / REFERENCE_FIXTURES


def _bits(tensor: torch.Tensor) -> bytes:
    """The tensor's bytes: equal bits, not merely equal values (0.0 and -0.0 differ)."""
    return tensor.contiguous().numpy().tobytes()


@pytest.fixture(scope="module")
def micro_state():
    return build_model("promptiqa", preset="micro", pretrained_backbone=False).state_dict()


@pytest.fixture(scope="module")
def official_filler(shared_dir):
    """The official material's filler (../shared/reference/fill_weights.py): only the bit-for-bit comparison needs it."""
    path = shared_dir / "reference" / "fill_weights.py"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    spec = importlib.util.spec_from_file_location("fill_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.RULES_VERSION == RULES_VERSION
    return module


def test_each_tensor_is_a_function_of_seed_key_and_shape_only(micro_state):
    filled = reference_state_dict(micro_state, seed=3)
    assert list(filled) == list(micro_state)
    assert all(v.shape == micro_state[k].shape and v.dtype == micro_state[k].dtype for k, v in filled.items())
    # neither the order of the keys nor the other keys change a tensor
    backwards = reference_state_dict(dict(reversed(list(micro_state.items()))), seed=3)
    alone = {key: reference_tensor(key, value.shape, value.dtype, 3) for key, value in micro_state.items()}
    assert all(_bits(filled[k]) == _bits(backwards[k]) == _bits(alone[k]) for k in filled)
    # another seed, or the same shape under another key, gives other values
    other = reference_state_dict(micro_state, seed=4)
    floating = [k for k, v in filled.items() if v.is_floating_point()]
    assert all(not torch.equal(filled[k], other[k]) for k in floating)
    assert not torch.equal(reference_tensor("a.bias", (64,), torch.float32, 3),
                           reference_tensor("b.bias", (64,), torch.float32, 3))
    # float64 draws, cast to the entry's dtype
    assert _bits(reference_tensor("mlp.0.weight", (8, 8), torch.float64, 3).float()) == \
        _bits(reference_tensor("mlp.0.weight", (8, 8), torch.float32, 3))
    with pytest.raises(ValueError, match="non-negative"):
        reference_tensor("mlp.0.weight", (2, 2), torch.float32, -1)


@pytest.mark.parametrize("key, gain", [("fusion_mal.attention_module.0.qConv.weight", 0.25),
                                       ("MALs.1.attention_module.2.kConv.weight", 0.5),
                                       ("MALs.0.feature_attention.c_q.weight", 0.5),
                                       ("fusion_mal.feature_attention.c_k.weight", 0.5),
                                       ("MALs.0.channel_attention.c_q.weight", 1.0),
                                       ("MALs.0.attention_module.0.vConv.weight", 1.0),
                                       ("vit.blocks.0.attn.qkv.weight", 1.0)])
def test_weights_have_the_std_of_their_gain_over_sqrt_fan_in(key, gain):
    shape = (200, 75, 2, 2)   # fan_in 300
    w = reference_tensor(key, shape, torch.float32, 0).double()
    assert abs(w.mean().item()) < 0.02 * gain / math.sqrt(300)
    assert w.std().item() == pytest.approx(gain / math.sqrt(300), rel=0.02)


def test_the_rules_by_key_name():
    def draw(key, shape=(20000,), dtype=torch.float32):
        return reference_tensor(key, shape, dtype, 0).double()

    assert torch.equal(reference_tensor("cnn.1.num_batches_tracked", (), torch.int64, 0), torch.tensor(0))
    assert torch.equal(reference_tensor("x.count", (3,), torch.int32, 0), torch.zeros(3, dtype=torch.int32))
    var, gamma = draw("cnn.1.running_var"), draw("MALs.0.attention_module.0.gamma")
    assert 0.5 <= var.min() and var.max() <= 1.5 and var.mean().item() == pytest.approx(1.0, abs=0.01)
    assert 0.5 <= gamma.min() and gamma.max() <= 1.0      # every Self_Attention gate open
    for key, mean, std in (("cnn.1.running_mean", 0.0, 0.1), ("vit.pos_embed", 0.0, 0.1), ("norm.weight", 1.0, 0.1),
                           ("vit.blocks.0.norm1.bias", 0.0, 0.02), ("some.other_parameter", 0.0, 0.02)):
        values = draw(key)
        assert values.mean().item() == pytest.approx(mean, abs=std / 20), key
        assert values.std().item() == pytest.approx(std, rel=0.03), key


def test_bit_identical_to_the_official_filler_on_the_micro_model(official_filler, shared_dir, micro_state):
    """Every rule the micro model's keys reach (its keys are the official names at smaller shapes), two seeds; and
    tests/fixtures/reference holds the same bytes as the material it was copied from."""
    for name in (VECTOR_FILE, MANIFEST_FILE):
        assert (FIXTURES / name).read_bytes() == (shared_dir / "reference" / name).read_bytes(), name
    for seed in (0, 2024):
        ours = reference_state_dict(micro_state, seed)
        theirs = official_filler.fill_state_dict(micro_state, seed)
        assert list(ours) == list(theirs)
        assert [k for k in ours if ours[k].dtype != theirs[k].dtype or _bits(ours[k]) != _bits(theirs[k])] == []


@pytest.mark.slow
def test_bit_identical_to_the_official_filler_on_the_official_manifest(official_filler):
    """All 505 entries of the official model (318M values), seed 0 (the public vector's) and seed 7, tensor by
    tensor so that only one pair is in memory at a time."""
    manifest = read_manifest(FIXTURES / MANIFEST_FILE)
    for seed in (0, 7):
        differ = []
        for entry in manifest["entries"]:
            dtype = getattr(torch, entry["dtype"])
            ours = reference_tensor(entry["key"], entry["shape"], dtype, seed)
            theirs = official_filler.fill_tensor(entry["key"], entry["shape"], dtype, seed)
            if ours.dtype != theirs.dtype or ours.shape != theirs.shape or _bits(ours) != _bits(theirs):
                differ.append(entry["key"])
        assert differ == [], f"seed {seed}"


def test_a_manifest_or_vector_that_is_not_one_is_one_clear_error(tmp_path):
    with pytest.raises(ReferenceError, match=re.escape(f"{tmp_path / 'none.json'}: cannot read the state-dict manifest")):
        read_manifest(tmp_path / "none.json")
    (tmp_path / "list.json").write_text(json.dumps({"entries": [{"key": "a"}]}))
    with pytest.raises(ReferenceError, match=r"list\.json: not a state-dict manifest: expected an object whose "
                                             r"'entries' list holds \{key, shape, dtype\} objects"):
        read_manifest(tmp_path / "list.json")
    (tmp_path / "dtype.json").write_text(json.dumps({"entries": [{"key": "a", "shape": [2], "dtype": "float99"}]}))
    with pytest.raises(ReferenceError, match="manifest entry a: unknown dtype 'float99'"):
        reference_state_dict(tmp_path / "dtype.json", 0)

    with pytest.raises(ReferenceError, match=re.escape(f"{tmp_path / 'none.npz'}: cannot read the test vector")):
        read_vector(tmp_path / "none.npz")
    vector = read_vector(FIXTURES / VECTOR_FILE)
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in vector.items() if k not in ("seed", "loo_expected")})
    with pytest.raises(ReferenceError, match=r"partial\.npz: not a test vector: seed, loo_expected missing"):
        read_vector(tmp_path / "partial.npz")
    np.savez(tmp_path / "v2.npz", **{**vector, "fill_rules_version": np.int64(2)})
    with pytest.raises(ReferenceError, match=r"v2\.npz: made with weight rules version 2; this code implements "
                                             r"version 1"):
        read_vector(tmp_path / "v2.npz")
