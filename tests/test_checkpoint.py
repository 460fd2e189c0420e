"""Checkpoint formats: the official release layout, plain state dicts, our self-describing files, and bad files."""
from __future__ import annotations

import pytest
import torch

from promptiqa.models import (CheckpointError, PRESETS, build_model, checkpoint_config, load_checkpoint, load_model,
                              read_checkpoint, save_checkpoint)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(3)
    return torch.rand(4, 3, 64, 64, generator=g) * 2 - 1, torch.rand(4, generator=g)


def _outputs(model, inputs):
    with torch.no_grad():
        return model.eval()(*inputs)


def test_official_layout_round_trip(tmp_path, inputs):
    torch.manual_seed(0)
    source = build_model(preset="micro")
    # exactly what the official train.py writes from its DistributedDataParallel wrapper
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}, "prompt_num": 10},
               tmp_path / "best_model.pth.tar")
    torch.manual_seed(1)
    target = build_model(preset="micro")
    meta = load_checkpoint(target, tmp_path / "best_model.pth.tar")
    assert meta == {"prompt_num": 10}
    torch.testing.assert_close(_outputs(target, inputs), _outputs(source, inputs), atol=0, rtol=0)


def test_plain_state_dict_and_in_memory_state(inputs):
    torch.manual_seed(0)
    source = build_model(preset="micro")
    torch.manual_seed(1)
    target = build_model(preset="micro")
    assert load_checkpoint(target, source.state_dict()) == {}
    torch.testing.assert_close(_outputs(target, inputs), _outputs(source, inputs), atol=0, rtol=0)


def test_official_file_with_another_backbone_infers_the_image_size(tmp_path):
    torch.manual_seed(0)
    kwargs = dict(backbone="vit_tiny_patch16_224", image_size=96, backbone_kwargs=None)
    source = build_model(**kwargs)
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}, "prompt_num": 4},
               tmp_path / "official.pth.tar")
    model, info = load_model(tmp_path / "official.pth.tar", backbone="vit_tiny_patch16_224", device="cpu",
                             with_info=True)
    assert model.image_size == 96 and info["prompt_num"] == 4 and info["config"] is None
    images, scores = torch.rand(3, 3, 96, 96) * 2 - 1, torch.rand(3)
    torch.testing.assert_close(_outputs(model, (images, scores)), _outputs(source, (images, scores)), atol=0, rtol=0)


def test_own_checkpoint_is_self_describing(tmp_path, inputs):
    torch.manual_seed(0)
    source = build_model("promptiqa", preset="micro")
    config = checkpoint_config(source, prompt_num=3, label_norm="official")
    path = save_checkpoint(tmp_path / "run" / "best_model.pth.tar", source, config=config)
    raw = read_checkpoint(path)
    assert all(k.startswith("module.") for k in raw["state_dict"])     # the official code can load it too
    assert raw["prompt_num"] == 3
    assert raw["config"]["arch"] == "promptiqa" and raw["config"]["backbone_kwargs"] == PRESETS["micro"]["backbone_kwargs"]
    assert set(raw["config"]) >= {"arch", "backbone", "image_size", "prompt_num", "label_norm", "version"}
    assert list(tmp_path.joinpath("run").iterdir()) == [path]           # atomic write leaves no temp file
    model, info = load_model(path, device="cpu", with_info=True)
    assert not model.training and info["prompt_num"] == 3 and info["config"]["label_norm"] == "official"
    torch.testing.assert_close(_outputs(model, inputs), _outputs(source, inputs), atol=0, rtol=0)


def test_load_model_rebuilds_the_without_prompt_variant(tmp_path, inputs):
    torch.manual_seed(0)
    source = build_model("promptiqa_wo_prompt", preset="micro")
    save_checkpoint(tmp_path / "wo.pth.tar", source, prompt_num=None)
    model = load_model(tmp_path / "wo.pth.tar", device="cpu")
    assert type(model).__name__ == "PromptIQAWithoutPrompt"
    torch.testing.assert_close(_outputs(model, inputs), _outputs(source, inputs), atol=0, rtol=0)


def test_mismatch_lists_missing_and_unexpected_keys():
    model = build_model(preset="micro")
    state = dict(model.state_dict())
    state.pop("norm.weight")
    state["extra.weight"] = torch.zeros(1)
    state["score_block.3.bias"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, {"state_dict": state})
    text = str(err.value)
    assert "missing keys (1): norm.weight" in text
    assert "unexpected keys (1): extra.weight" in text
    assert "score_block.3.bias (2,)" in text
    wo = build_model("promptiqa_wo_prompt", preset="micro")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(\d+\): i_p_fusion"):
        load_checkpoint(wo, model.state_dict())


def test_files_that_are_not_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_model(tmp_path / "nothing.pth", device="cpu")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt is not a readable PromptIQA checkpoint"):
        read_checkpoint(tmp_path / "notes.txt")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"epoch": 3, "state_dict": {"a": 1}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a PromptIQA checkpoint"):
        load_model(tmp_path / "other.pth", device="cpu")
    torch.save({"state_dict": {"module.vit.cls_token": torch.zeros(1, 1, 32)}}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(tmp_path / "partial.pth", backbone="vit_tiny_patch16_224", device="cpu")
    path = save_checkpoint(tmp_path / "micro.pth.tar", build_model(preset="micro"), prompt_num=2)
    with pytest.raises(CheckpointError, match="records backbone"):
        load_model(path, backbone="vit_base_patch8_224", device="cpu")
