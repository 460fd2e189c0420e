"""The official configuration against the reference contract in ../shared/reference: keys, shapes and outputs."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from promptiqa.models import PromptIQA

TOLERANCE = 1e-5  # absolute, float32, TF32 off (the official model's own noise is ~3e-7)
pytestmark = pytest.mark.slow   # the full-size official model: deselect with -m 'not slow' for a quick loop


@pytest.fixture(scope="module")
def reference(shared_dir):
    ref = shared_dir / "reference"
    spec = importlib.util.spec_from_file_location("fill_weights", ref / "fill_weights.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    manifest = json.loads((ref / "promptiqa_state_dict_manifest.json").read_text())
    return fill, manifest, np.load(ref / "vector_public.npz")


@pytest.fixture(scope="module")
def official_model(reference):
    fill, manifest, vector = reference
    model = PromptIQA(pretrained_backbone=False)
    model.load_state_dict(fill.fill_state_dict(manifest, int(vector["seed"])), strict=True)
    return model.eval()


def _images(array: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB -> the official normalisation (x/255 - 0.5)/0.5, CHW."""
    return torch.from_numpy(array).float().div(255).sub(0.5).div(0.5).permute(0, 3, 1, 2).contiguous()


def test_state_dict_equals_manifest(reference, official_model):
    _, manifest, _ = reference
    state = official_model.state_dict()
    assert list(state) == [e["key"] for e in manifest["entries"]]
    assert [list(v.shape) for v in state.values()] == [e["shape"] for e in manifest["entries"]]
    assert sum(p.numel() for p in official_model.parameters()) == manifest["num_parameters"]


def test_filled_weights_match_the_vector(reference, official_model):
    _, _, vector = reference
    total = sum(float(v.double().abs().sum()) for v in official_model.state_dict().values() if v.is_floating_point())
    assert total == pytest.approx(float(vector["weights_abs_sum"]), rel=1e-9)


def test_public_vector(reference, official_model):
    _, _, vector = reference
    with torch.no_grad():
        loo = official_model(_images(vector["loo_images"]), torch.from_numpy(vector["loo_scores"]))
        prompt = official_model.encode_prompt(_images(vector["prompt_images"]),
                                              torch.from_numpy(vector["prompt_scores"]))
        query = official_model.score(_images(vector["query_images"]), prompt)
    assert prompt.shape == (1, len(vector["prompt_scores"]), 128)
    np.testing.assert_allclose(loo.double().numpy(), vector["loo_expected"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(query.double().numpy(), vector["prompt_expected"], rtol=0, atol=TOLERANCE)
    # the official 28x28 grid goes through the exact official head, with no resize
    assert official_model.grid == 28 and official_model.view_blocks == [2, 5, 8, 11]
