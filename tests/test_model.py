"""Behaviour of PromptIQA that a user relies on, on small configurations of the same model."""
from __future__ import annotations

import pytest
import torch

from promptiqa.models import PRESETS, BackboneWeightsError, PromptIQA, build_model, create_backbone, hooked_blocks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("promptiqa", preset="micro").eval()


@pytest.fixture(scope="module")
def batch(model):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(6, 3, model.image_size, model.image_size, generator=g) * 2 - 1
    scores = torch.rand(6, generator=g)
    return images, scores


def test_hooked_blocks_spread_like_the_official_ones():
    assert hooked_blocks(12) == [2, 5, 8, 11]
    assert hooked_blocks(4) == [0, 1, 2, 3]
    assert hooked_blocks(6) == [0, 2, 3, 5]
    with pytest.raises(ValueError, match="at least 4 blocks"):
        hooked_blocks(3)


def test_leave_one_out_semantics(model, batch):
    images, scores = batch
    with torch.no_grad():
        base = model(images, scores)
        own = scores.clone()
        own[2] = 1 - own[2]
        changed = model(images, own)
    assert base.shape == (6,)
    assert changed[2] == pytest.approx(base[2].item(), abs=1e-6)  # image 2's own score is not in its prompt
    others = torch.arange(6) != 2
    assert (changed[others] - base[others]).abs().min() > 1e-6      # it is in everybody else's


def test_training_forward_equals_explicit_prompts(model, batch):
    images, scores = batch
    with torch.no_grad():
        loo = model(images, scores)
        for i in (0, 3, 5):
            keep = torch.arange(6) != i
            prompt = model.encode_prompt(images[keep], scores[keep])
            assert model.score(images[i:i + 1], prompt).item() == pytest.approx(loo[i].item(), abs=1e-5)


def test_prediction_invariant_to_prompt_order(model, batch):
    images, scores = batch
    with torch.no_grad():
        prompt = model.encode_prompt(images[:5], scores[:5])
        perm = torch.tensor([3, 0, 4, 2, 1])
        shuffled = model.encode_prompt(images[perm], scores[perm])
        torch.testing.assert_close(shuffled, prompt[:, perm], atol=1e-6, rtol=0)
        torch.testing.assert_close(model.score(images[5:], shuffled), model.score(images[5:], prompt),
                                   atol=1e-6, rtol=0)


def test_eval_score_independent_of_batch_companions(model, batch):
    images, scores = batch
    with torch.no_grad():
        prompt = model.encode_prompt(images[:4], scores[:4])
        alone = model.score(images[4:5], prompt)
        together = model.score(images[[4, 0, 5]], prompt)
    assert together[0].item() == pytest.approx(alone.item(), abs=1e-6)


def test_shared_prompt_equals_per_image_prompt(model, batch):
    images, scores = batch
    with torch.no_grad():
        prompt = model.encode_prompt(images[:4], scores[:4])
        shared = model.score(images, prompt)
        per_image = model.score(images, prompt.expand(len(images), -1, -1).clone())
        other = model.encode_prompt(images[:4], 1 - scores[:4])
        mixed = model.score(images[:2], torch.cat([prompt, other]))
    torch.testing.assert_close(shared, per_image, atol=1e-6, rtol=0)
    assert mixed[0].item() == pytest.approx(shared[0].item(), abs=1e-6)
    assert mixed[1].item() != pytest.approx(shared[1].item(), abs=1e-6)
    with pytest.raises(ValueError, match="prompt must be"):
        model.score(images, torch.cat([prompt, prompt]))


def test_scores_shape_and_repeatability(model, batch):
    images, scores = batch
    with torch.no_grad():
        a = model(images, scores.view(-1, 1))
        b = model(images, scores)   # (B,) and (B, 1) scores are the same thing
        c = model(images, scores)   # no state accumulates across calls
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(b, c, atol=0, rtol=0)
    assert ((a > 0) & (a < 1)).all()
    with pytest.raises(ValueError, match="groups of at least 2 images"):
        model(images[:1], scores[:1])


def test_cpu_bf16_autocast(model, batch):
    images, scores = batch
    with torch.no_grad():
        full = model(images, scores)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(images, scores)
            prompt = model.encode_prompt(images[:4], scores[:4])
            query = model.score(images[4:], prompt)
    assert torch.isfinite(half.float()).all() and torch.isfinite(query.float()).all()
    assert (half.float() - full).abs().max() < 0.05


def test_training_step_updates_promptiqa():
    torch.manual_seed(0)
    model = build_model("promptiqa", preset="micro").train()
    images, scores = torch.rand(5, 3, 64, 64) * 2 - 1, torch.rand(5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.l1_loss(model(images, scores), scores)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    optimiser.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("i_p_fusion.") for k in changed) and any(k.startswith("MALs.") for k in changed)
    assert "cnn.1.running_mean" in changed  # BatchNorm trains on the group's statistics


def test_without_prompt_variant_trains_a_step_and_ignores_scores():
    torch.manual_seed(0)
    model = build_model("promptiqa_wo_prompt", preset="micro").train()
    assert not any(k.startswith(("i_p_fusion.", "mlp.", "prompt_fusion.")) for k in model.state_dict())
    assert {k.split(".")[0] for k in model.state_dict()} == {"vit", "MALs", "fusion_mal", "block", "cnn", "blocks",
                                                             "norm", "score_block"}
    images, scores = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model.score_block[0].weight.clone()
    loss = torch.nn.functional.l1_loss(model(images, scores), scores)
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.score_block[0].weight)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), model(images, 1 - scores), atol=0, rtol=0)
        assert model(images[:1]).shape == (1,)  # one image is enough without a prompt


@pytest.mark.parametrize("image_size, grid", [(224, 14), (112, 7)])
def test_small_configurations_at_other_grids(image_size, grid):
    torch.manual_seed(0)
    model = build_model("promptiqa", backbone="vit_tiny_patch16_224", image_size=image_size,
                        backbone_kwargs=dict(depth=4, embed_dim=48, num_heads=3)).eval()
    assert model.grid == grid
    assert model.MALs[0].feature_attention.c_q.in_features == grid * grid * 4     # pixel attention: grid^2 x views
    assert model.MALs[0].channel_attention.c_q.in_features == 48 * 4               # channel attention: width x views
    images = torch.rand(3, 3, image_size, image_size) * 2 - 1
    with torch.no_grad():
        assert model.image_features(images).shape == (3, 128)   # the head's resize-to-28 rule keeps 128-d features
        out = model(images, torch.rand(3))
    assert out.shape == (3,) and torch.isfinite(out).all()


def test_presets_build():
    assert set(PRESETS) >= {"official", "tiny", "micro"}
    model = build_model(preset="micro")
    assert model.config == dict(arch="promptiqa", **PRESETS["micro"])
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model(preset="huge")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("monet")


def test_pretrained_backbone_requests_the_official_tag_and_explains_failures(monkeypatch):
    import timm

    asked = []

    def offline(name, pretrained=False, **kwargs):
        asked.append((name, pretrained))
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(BackboneWeightsError, match="pretrained_backbone=.path/to/") as err:
        create_backbone("vit_base_patch8_224", pretrained=True)
    assert asked == [("vit_base_patch8_224.augreg_in21k_ft_in1k", True)]
    assert "pretrained_backbone=False" in str(err.value)


def test_pretrained_backbone_from_a_local_file(tmp_path):
    kwargs = PRESETS["micro"]
    vit = create_backbone(kwargs["backbone"], False, kwargs["image_size"], **kwargs["backbone_kwargs"])
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    model = build_model(preset="micro", pretrained_backbone=str(tmp_path / "vit.pth"))
    for key, value in vit.state_dict().items():
        assert torch.equal(model.vit.state_dict()[key], value), key
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_model(preset="micro", pretrained_backbone=str(tmp_path / "missing.pth"))


def test_the_architecture_is_set_once_and_both_models_share_one_constructor(model):
    """model.config is read from a frozen Architecture (what checkpoints record); editing the dict changes nothing,
    and PromptIQA and its ablation take MoNet's constructor arguments by the same names."""
    import dataclasses
    import inspect

    from promptiqa.models import Architecture, MoNet, PromptIQAWithoutPrompt

    config = model.config
    config["arch"], config["image_size"] = "other", 1
    assert model.config == dict(arch="promptiqa", **PRESETS["micro"])
    assert isinstance(model.architecture, Architecture)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.architecture.arch = "other"
    names = ["backbone", "pretrained_backbone", "image_size", "backbone_kwargs", "drop"]
    for cls in (MoNet, PromptIQA, PromptIQAWithoutPrompt):
        assert list(inspect.signature(cls).parameters) == names
    ablation = build_model("promptiqa_wo_prompt", preset="micro")
    assert ablation.config["arch"] == "promptiqa_wo_prompt" and not hasattr(ablation, "prompt_fusion")


def test_bf16_autocast_leaves_the_pixel_attention_energies_unrounded():
    from promptiqa.models.layers import PixelSelfAttention

    torch.manual_seed(0)
    att = PixelSelfAttention(32)
    with torch.no_grad():
        att.gamma.fill_(1.0)
        for conv in (att.qConv, att.kConv):
            conv.weight.mul_(8)               # large unscaled energies, as the official q/k make them
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = att(x)
        q, k, v = (conv(x).flatten(2).transpose(1, 2) for conv in (att.qConv, att.kConv, att.vConv))
    assert q.dtype == k.dtype == v.dtype == torch.bfloat16          # the 1x1 convolutions stay under autocast
    energies = q.float() @ k.float().transpose(1, 2)
    assert energies.abs().max() > 100                                 # where bf16 rounds by 0.5 or more
    attended = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=1.0)
    expected = x + attended.transpose(1, 2).reshape(x.shape)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_keeps_the_prompt_scores_in_float32(model, batch):
    images, _ = batch
    low, high = torch.tensor([0.5, 0.25]), torch.tensor([0.5009765625 + 1e-6, 0.25])
    assert torch.equal(low.bfloat16(), high.bfloat16())                # bf16 cannot tell them apart
    tokens = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: tokens.setdefault(m, []).append(args[0]))
             for m in (model.i_p_fusion, model.prompt_fusion)]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            prompts = [model.encode_prompt(images[:2], s) for s in (low, high)]
            float32_prompt = prompts[1].float() + 1e-4                # e.g. one encoded in float32 or saved
            model.score(images[2:4], float32_prompt)
    finally:
        for h in hooks:
            h.remove()
    stacked, fused = tokens[model.i_p_fusion][1], tokens[model.prompt_fusion][0]    # `high`'s pairs; the scoring
    assert stacked.dtype == torch.float32 and torch.equal(stacked[:, 1], high[:, None].expand(-1, 128))
    assert not torch.equal(prompts[0][0, 0], prompts[1][0, 0])          # the two scores encode differently
    assert fused.dtype == torch.float32 and torch.equal(fused, float32_prompt)   # not rounded to bf16 for scoring


def test_attention_kernels_names_the_backend_each_attention_takes(model):
    from promptiqa.models.kernels import NO_SDPA, SDPA_KERNELS, attention_kernels

    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = attention_kernels(model)
    assert {"Attention", "RowAttention", "PixelSelfAttention"} <= set(report)
    assert all(set(kernels.split("+")) <= {*SDPA_KERNELS.values(), NO_SDPA} for kernels in report.values())
    # On a CPU the one-head MAL attentions take a fused kernel where their head sizes allow: q, k and v of one width
    # (RowAttention); the pixel attention's v is 8 times wider than its q and k, so it takes the math path.
    assert (report["RowAttention"], report["PixelSelfAttention"]) == ("flash_cpu", "math")
    assert attention_kernels(model, amp="bf16", training=True)["PixelSelfAttention"] == "math"
    assert not model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
