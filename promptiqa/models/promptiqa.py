"""PromptIQA (Chen et al., ECCV 2024): a MoNet visual encoder, an ISP prompt encoder, ISPP fusion and image-prompt fusion.

References: Z. Chen et al., "PromptIQA: Boosting the Performance and Generalization for No-Reference Image Quality
Assessment via Prompts", ECCV 2024 (arXiv:2403.04993); the official implementation, github.com/chencn2020/PromptIQA,
whose layer sizes and parameter names this file reproduces (tests/test_model_fidelity.py: within 1e-5 of it).
MoNet, the visual encoder, is the mean-opinion network of Z. Chen et al., "GMC-IQA: Exploiting Global-correlation and
Mean-opinion Consistency for No-reference Image Quality Assessment" (arXiv:2401.10511); its attention between rows
(layers.RowAttention) is MANIQA's Transposed Attention Block (arXiv:2204.08958).

Module and parameter names follow the official release (``vit``, ``MALs``, ``fusion_mal``, ``block``, ``cnn``,
``i_p_fusion``, ``mlp``, ``prompt_fusion``, ``blocks``, ``norm``, ``score_block``), so its checkpoints load with
``strict=True``. The official configuration is a timm ViT-B/8 at 224 px (a 28x28 patch grid); any timm ViT works,
which is how tests and CPU demos run a small configuration of the same model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.images import DEFAULT_IMAGE_SIZE
from ..errors import ConfigError, PromptIQAError
from .layers import MAL, Block

DEFAULT_BACKBONE = "vit_base_patch8_224"
# timm 0.5.4, which the official code trained from, gave this tag for the name; current timm defaults to augreg2.
OFFICIAL_PRETRAINED_TAGS = {"vit_base_patch8_224": "augreg_in21k_ft_in1k"}
HEAD_GRID = 28          # the official CNN head reduces exactly a 28x28 map to 1x1
NUM_VIEWS = 4           # hooked backbone blocks
NUM_MALS = 3
FEATURE_DIM = 128       # image feature / prompt token width
# The official head sizes, named: MoNet's CNN head, the prompt encoder's MLP, the transformer stacks after MoNet.
CNN_WIDTHS = (256, 128)                 # the first two conv layers of the CNN head (the third gives FEATURE_DIM)
CNN_KERNELS = (5, 3, 3)                 # their kernels; each is followed by BatchNorm, ReLU and 2x2/2x2/3x3 pooling
PROMPT_MLP_HIDDEN = 64                  # the prompt encoder's MLP: FEATURE_DIM -> 64 -> FEATURE_DIM
PROMPT_BLOCKS = 3                       # i_p_fusion (per-ISP encoding) and prompt_fusion (ISPP fusion): 3 blocks each
FUSION_BLOCKS = 8                       # image-prompt fusion before the regressor
HEAD_HEADS = 4                          # attention heads of every FEATURE_DIM-wide block

# Named configurations of the same model: the official one, and small ones for CPU demos and tests.
PRESETS = {
    "official": dict(backbone=DEFAULT_BACKBONE, image_size=DEFAULT_IMAGE_SIZE),       # grid 28, 318M parameters
    "tiny": dict(backbone="vit_tiny_patch16_224", image_size=112),                    # grid 7, ~18M parameters
    "micro": dict(backbone="vit_tiny_patch16_224", image_size=64,                     # grid 8, ~4M, for tests
                  backbone_kwargs=dict(depth=4, embed_dim=32, num_heads=2, patch_size=8)),
}


class BackboneWeightsError(PromptIQAError, RuntimeError):
    """The backbone's pretrained weights could not be loaded (offline machine, missing or foreign file)."""


def hooked_blocks(depth: int) -> list:
    """Indices of the backbone blocks that feed MoNet: 2, 5, 8, 11 for depth 12, spread the same way otherwise."""
    if depth < NUM_VIEWS:
        raise ConfigError(f"the backbone needs at least {NUM_VIEWS} blocks for MoNet's {NUM_VIEWS} views, got {depth}")
    return [(k + 1) * depth // NUM_VIEWS - 1 for k in range(NUM_VIEWS)]


def create_backbone(name: str, pretrained: Union[bool, str] = False, image_size: Optional[int] = None,
                    **kwargs: Any) -> nn.Module:
    """A timm VisionTransformer without final norm and head; ``pretrained`` is False, True (hub) or a local file."""
    import timm

    kwargs = dict(kwargs)
    if image_size is not None:
        kwargs["img_size"] = image_size
    model_name = name
    if pretrained:
        if "." not in name and name in OFFICIAL_PRETRAINED_TAGS:
            model_name = f"{name}.{OFFICIAL_PRETRAINED_TAGS[name]}"
        if isinstance(pretrained, (str, bytes)) or hasattr(pretrained, "__fspath__"):
            import os

            path = os.fspath(pretrained)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"pretrained backbone file not found: {path} (expected a timm state dict "
                                        f"for {model_name}, .pth/.bin/.safetensors)")
            kwargs["pretrained_cfg_overlay"] = dict(file=path)
    try:
        vit = timm.create_model(model_name, pretrained=bool(pretrained), num_classes=0, **kwargs)
    except Exception as err:  # network, hub or cache failures all surface here
        if not pretrained:
            raise
        source = kwargs.get("pretrained_cfg_overlay", {}).get("file", "the Hugging Face hub")
        raise BackboneWeightsError(
            f"could not load ImageNet weights for backbone '{model_name}' from {source}: {err}\n"
            f"On an offline machine, download them elsewhere (timm.create_model('{model_name}', pretrained=True) "
            f"caches them under ~/.cache/huggingface) and pass the file instead: pretrained_backbone='path/to/"
            f"model.safetensors' (--pretrained_backbone PATH), or start from random weights with "
            f"pretrained_backbone=False."
        ) from err
    if not hasattr(vit, "forward_intermediates") or not hasattr(vit, "blocks"):
        raise ConfigError(f"backbone '{name}' is not a timm VisionTransformer (needs blocks and forward_intermediates)")
    vit.norm = nn.Identity()
    vit.head = nn.Identity()
    return vit


@dataclass(frozen=True)
class Architecture:
    """What a model is, as checkpoints record it (``model.config``): the architecture's name, the timm backbone, its
    input size and extra backbone arguments. Set once when the model is built; never changed afterwards."""

    arch: str
    backbone: str
    image_size: int
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        """The checkpoint's ``config`` entry (its key order, as before)."""
        return {"backbone": self.backbone, "image_size": self.image_size,
                "backbone_kwargs": dict(self.backbone_kwargs), "arch": self.arch}


class MoNet(nn.Module):
    """The MoNet visual encoder: backbone views -> 3 MALs -> fusion MAL -> ViT block -> CNN head -> (B, 128).

    Subclasses name their ``arch`` and add what follows the image path in ``_build_head`` (PromptIQA: the prompt
    encoder, ISPP fusion and regressor; the w/o-prompt ablation: the regressor), so the three share one constructor.
    """

    arch = "monet"

    def __init__(self, backbone: str = DEFAULT_BACKBONE, pretrained_backbone: Union[bool, str] = False,
                 image_size: Optional[int] = None, backbone_kwargs: Optional[Dict[str, Any]] = None,
                 drop: float = 0.1):
        super().__init__()
        backbone_kwargs = dict(backbone_kwargs or {})
        self.vit = create_backbone(backbone, pretrained_backbone, image_size, **backbone_kwargs)
        self.image_size = int(self.vit.patch_embed.img_size[0])
        self.grid = int(self.vit.patch_embed.grid_size[0])
        if tuple(self.vit.patch_embed.grid_size) != (self.grid, self.grid):
            raise ConfigError(f"backbone '{backbone}' must use square images, got grid {self.vit.patch_embed.grid_size}")
        width = int(self.vit.embed_dim)
        heads = int(self.vit.blocks[0].attn.num_heads)
        self.view_blocks = hooked_blocks(len(self.vit.blocks))
        pixels = self.grid * self.grid

        self.MALs = nn.ModuleList(MAL(width, NUM_VIEWS, pixels, drop) for _ in range(NUM_MALS))
        self.fusion_mal = MAL(width, NUM_MALS, pixels, drop)
        self.block = Block(width, heads)
        self.cnn = nn.Sequential(
            nn.Conv2d(width, CNN_WIDTHS[0], CNN_KERNELS[0]), nn.BatchNorm2d(CNN_WIDTHS[0]), nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
            nn.Conv2d(CNN_WIDTHS[0], CNN_WIDTHS[1], CNN_KERNELS[1]), nn.BatchNorm2d(CNN_WIDTHS[1]),
            nn.ReLU(inplace=True), nn.AvgPool2d(2),
            nn.Conv2d(CNN_WIDTHS[1], FEATURE_DIM, CNN_KERNELS[2]), nn.BatchNorm2d(FEATURE_DIM), nn.ReLU(inplace=True),
            nn.AvgPool2d(3),
        )
        self._build_head(drop)
        self.architecture = Architecture(self.arch, backbone, self.image_size, backbone_kwargs)

    @property
    def config(self) -> Dict[str, Any]:
        """The architecture as a checkpoint's ``config`` entry (a fresh dict: editing it changes nothing)."""
        return self.architecture.as_dict()

    def _build_head(self, drop: float) -> None:
        """Modules after the image path (a subclass's); registered after MoNet's, as in the official order."""

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images normalised to [-1, 1] -> (B, 128) quality features."""
        views = self.vit.forward_intermediates(images, indices=self.view_blocks, norm=False, stop_early=True,
                                               output_fmt="NCHW", intermediates_only=True)
        opinions = [mal(views) for mal in self.MALs]                      # 3 x (B, C, H*W)
        B, C, _ = opinions[0].shape
        opinions = [o.reshape(B, C, self.grid, self.grid) for o in opinions]
        x = self.block(self.fusion_mal(opinions).transpose(1, 2))        # (B, H*W, C)
        x = x.transpose(1, 2).reshape(B, C, self.grid, self.grid)
        if self.grid != HEAD_GRID:
            # Small configurations: the official head only fits a 28x28 map, so other grids are resized to it.
            x = F.interpolate(x, size=(HEAD_GRID, HEAD_GRID), mode="bilinear", align_corners=False)
        return self.cnn(x).flatten(1)

    def _add_regressor(self, drop: float) -> None:
        """Image-prompt fusion blocks, LayerNorm and the score regressor (registered last, as in the official order)."""
        self.blocks = nn.Sequential(*[Block(FEATURE_DIM, HEAD_HEADS, qkv_bias=True, eps=1e-6)
                                      for _ in range(FUSION_BLOCKS)])
        self.norm = nn.LayerNorm(FEATURE_DIM)
        self.score_block = nn.Sequential(
            nn.Linear(FEATURE_DIM, FEATURE_DIM // 2), nn.ReLU(), nn.Dropout(drop),
            nn.Linear(FEATURE_DIM // 2, 1), nn.Sigmoid(),
        )

    def _regress(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1+n, 128) tokens, image token first -> (B,) scores in (0, 1)."""
        x = self.blocks(tokens)
        return self.score_block(self.norm(x[:, 0])).view(-1)


def _leave_one_out(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """(B, D) -> (B, B/groups - 1, D): row i holds the other rows of its group, in their original order."""
    g = x.shape[0] // groups
    j = torch.arange(g - 1, device=x.device)
    idx = j[None, :] + (j[None, :] >= torch.arange(g, device=x.device)[:, None]).long()     # (g, g-1)
    idx = idx.repeat(groups, 1) + torch.arange(groups, device=x.device).repeat_interleave(g)[:, None] * g
    return x[idx]


class PromptIQA(MoNet):
    """PromptIQA: scores images under the assessment requirement that an ISP prompt (image-score pairs) expresses."""

    arch = "promptiqa"

    def _build_head(self, drop: float) -> None:
        self.i_p_fusion = nn.Sequential(*[Block(FEATURE_DIM, HEAD_HEADS) for _ in range(PROMPT_BLOCKS)])
        self.mlp = nn.Sequential(nn.Linear(FEATURE_DIM, PROMPT_MLP_HIDDEN), nn.GELU(),
                                 nn.Linear(PROMPT_MLP_HIDDEN, FEATURE_DIM))
        self.prompt_fusion = nn.Sequential(*[Block(FEATURE_DIM, HEAD_HEADS) for _ in range(PROMPT_BLOCKS)])
        self._add_regressor(drop)

    def _isp_features(self, features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Prompt encoder: per ISP, [image feature, score expanded to 128] -> 3 blocks -> token mean -> MLP."""
        # Tokens are stacked in the weights' dtype: under bf16 autocast the features arrive in bf16, but a score in
        # bf16 keeps about 3 significant digits; in float32 the residual stream carries it on unrounded.
        dtype = self.norm.weight.dtype
        scores = scores.reshape(-1, 1).to(dtype).expand(-1, FEATURE_DIM)
        pair = self.i_p_fusion(torch.stack([features.to(dtype), scores], dim=1))
        return self.mlp(pair.mean(dim=1)).to(dtype)

    def encode_prompt(self, images: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Encode n image-score pairs into a prompt (1, n, 128); scores in [0, 1]."""
        return self.encode_prompt_features(self.image_features(images), scores)

    def encode_prompt_features(self, features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``encode_prompt`` from precomputed ``image_features`` (n, 128): the features can serve again, e.g. for
        ``score_leave_one_out``."""
        return self._isp_features(features, scores).unsqueeze(0)

    def score(self, images: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Score (B, 3, S, S) images under ``prompt``: (1, n, 128) shared by the batch or (B, n, 128) per image."""
        return self.score_features(self.image_features(images), prompt)

    def score_features(self, features: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """``score`` from precomputed ``image_features`` (B, 128): lets one encoding serve many prompts."""
        if prompt.dim() != 3 or prompt.shape[-1] != FEATURE_DIM or prompt.shape[0] not in (1, features.shape[0]):
            raise ValueError(f"prompt must be (1, n, {FEATURE_DIM}) or ({features.shape[0]}, n, {FEATURE_DIM}), "
                             f"got {tuple(prompt.shape)}")
        # ISPP fusion works per prompt, so a shared prompt is fused once and broadcast.
        # The prompt enters in the weights' dtype (a float32 prompt is not rounded to bf16 under autocast).
        fused = self.prompt_fusion(prompt.to(self.norm.weight.dtype)).expand(features.shape[0], -1, -1)
        return self._regress(torch.cat([features.unsqueeze(1), fused], dim=1))

    def forward(self, images: torch.Tensor, scores: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """Training-style forward: image i is scored with the other B-1 image-score pairs as its prompt -> (B,).

        With ``groups`` > 1 the batch is that many equal prompt groups, each image prompted by the others of its own
        group. (BatchNorm statistics are the BatchNorm layers' business: the training engine gives each group its
        own, as separate processes would have them.)
        """
        if images.shape[0] % groups or images.shape[0] // groups < 2:
            raise ValueError(f"the training-style forward needs groups of at least 2 images (each is prompted by "
                             f"the others), got {images.shape[0]} images in {groups} group(s)")
        features = self.image_features(images)
        return self.score_leave_one_out(features, self._isp_features(features, scores), groups)

    def score_leave_one_out(self, features: torch.Tensor, pairs: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """Image i scored with the other encoded pairs of its group as its prompt: (B, 128) ``image_features`` and
        their (B, 128) encoded pairs (a prompt's rows) -> (B,). How well a prompt's own images come out under the
        rest of it tells whether the model follows that requirement."""
        prompts = self.prompt_fusion(_leave_one_out(pairs.to(self.norm.weight.dtype), groups))
        return self._regress(torch.cat([features.unsqueeze(1), prompts], dim=1))


class PromptIQAWithoutPrompt(MoNet):
    """The paper's "w/o prompt" ablation (the official ``monet_wo_prompt``): MoNet, the 8 fusion blocks over the image
    token alone, LayerNorm and the regressor."""

    arch = "promptiqa_wo_prompt"

    def _build_head(self, drop: float) -> None:
        self._add_regressor(drop)

    def forward(self, images: torch.Tensor, scores: Optional[torch.Tensor] = None, groups: int = 1) -> torch.Tensor:
        """(B, 3, S, S) -> (B,) scores; ``scores`` and ``groups`` are accepted and ignored so both models share one
        training step."""
        return self._regress(self.image_features(images).unsqueeze(1))

    def score(self, images: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores without a prompt (any prompt given is ignored)."""
        return self.forward(images)

    def score_features(self, features: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``score`` from precomputed ``image_features`` (B, 128)."""
        return self._regress(features.unsqueeze(1))


ARCHITECTURES = {cls.arch: cls for cls in (PromptIQA, PromptIQAWithoutPrompt)}
WRAPPERS = ("module", "_orig_mod")   # where DistributedDataParallel and torch.compile keep the model they wrap


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself inside DistributedDataParallel / torch.compile wrappers (any nesting); others as given."""
    for attr in WRAPPERS:
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module):
            return unwrap(inner)
    return model


def uses_prompt(model: nn.Module) -> bool:
    """The model's kind: True for PromptIQA (it encodes prompts), False for the w/o-prompt ablation; wrappers seen
    through."""
    return hasattr(unwrap(model), "encode_prompt")


def build_model(arch: str = "promptiqa", preset: Optional[str] = None, **kwargs: Any) -> MoNet:
    """Build ``"promptiqa"`` or ``"promptiqa_wo_prompt"``, from a named ``preset`` and/or constructor kwargs."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown model '{arch}'; choose one of {sorted(ARCHITECTURES)}")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown model preset '{preset}'; choose one of {sorted(PRESETS)}")
        kwargs = {**PRESETS[preset], **kwargs}
    return ARCHITECTURES[arch](**kwargs)
