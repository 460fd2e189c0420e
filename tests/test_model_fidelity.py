"""The official configuration against the official model's outputs (tests/fixtures/reference, in the repository):
state-dict keys and shapes, the reference weights, and both forward paths within 1e-5."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptiqa.models import PromptIQA
from promptiqa.models.reference_weights import (FIDELITY_TOLERANCE, MANIFEST_FILE, VECTOR_FILE, read_vector,
                                                reference_state_dict, vector_errors, weights_abs_sum)
from promptiqa.resources import REFERENCE_FIXTURES

FIXTURES = Path(__file__).resolve().parents[1] / REFERENCE_FIXTURES
pytestmark = pytest.mark.slow   # the full-size official model: deselect with -m 'not slow' for a quick loop


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FIXTURES / MANIFEST_FILE).read_text())


@pytest.fixture(scope="module")
def vector() -> dict:
    return read_vector(FIXTURES / VECTOR_FILE)


@pytest.fixture(scope="module")
def official_model(vector):
    model = PromptIQA(pretrained_backbone=False)
    model.load_state_dict(reference_state_dict(model, int(vector["seed"])), strict=True)
    return model.eval()


def test_state_dict_equals_manifest(manifest, official_model):
    state = official_model.state_dict()
    assert list(state) == [e["key"] for e in manifest["entries"]]
    assert [list(v.shape) for v in state.values()] == [e["shape"] for e in manifest["entries"]]
    assert [str(v.dtype).replace("torch.", "") for v in state.values()] == [e["dtype"] for e in manifest["entries"]]
    assert sum(p.numel() for p in official_model.parameters()) == manifest["num_parameters"] == 318_159_200


def test_reference_weights_are_the_vectors(vector, official_model):
    """The weights the official model was run with to make the vector: the sum of |w| it recorded."""
    assert weights_abs_sum(official_model.state_dict()) == pytest.approx(float(vector["weights_abs_sum"]), rel=1e-9)


def test_public_vector(vector, official_model):
    errors = vector_errors(official_model, vector)
    print("max abs error:", {path: f"{error:.1e}" for path, error in errors.items()})
    assert max(errors.values()) <= FIDELITY_TOLERANCE, errors
    # the official 28x28 grid goes through the exact official head, with no resize
    assert official_model.grid == 28 and official_model.view_blocks == [2, 5, 8, 11]
