"""Building blocks shared by MoNet and PromptIQA: a pre-norm ViT block and MoNet's Multi-view Attention Learning.

Attribute names follow the official release so that its state_dict loads without renaming; where the official
computation has a quirk that trained weights depend on (an un-transposing reshape, an unscaled softmax), it is
reproduced and the comment says so.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, the ViT feed-forward layer."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention over tokens, through fused scaled-dot-product attention."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block (timm 0.5.4's ``Block`` without dropout, which the official model never enables).

    Written here rather than taken from timm because timm's defaults moved (its ``Block`` now uses LayerNorm eps
    1e-6): the official model's own blocks use ``eps`` 1e-5 except the 8 fusion blocks (1e-6).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, eps: float = 1e-5, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PixelSelfAttention(nn.Module):
    """Self-attention between the pixels of one view (1x1-conv q/k/v) with a learnt residual gate ``gamma``."""

    def __init__(self, dim: int):
        super().__init__()
        self.qConv = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.kConv = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.vConv = nn.Conv2d(dim, dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        # one head (B, 1, H*W, d) with a unit last stride, as fused SDPA kernels take it
        q, k, v = (conv(x).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
                   for conv in (self.qConv, self.kConv, self.vConv))
        # The official energies are not scaled by 1/sqrt(d): scale=1 keeps trained weights valid. Unscaled, they are
        # large, and bf16 would round them before the softmax: under autocast the attention itself runs in float32.
        with torch.autocast(x.device.type, enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=1.0)
        return x + self.gamma * out.squeeze(1).transpose(1, 2).reshape(B, C, H, W)


class RowAttention(nn.Module):
    """Attention between the rows of a (B, R, D) matrix, linear q/k/v over D: MAL's channel- and pixel-wise attention.

    The design (and the official parameter names c_q, c_k, c_v) is MANIQA's Transposed Attention Block (Yang et al.,
    "MANIQA: Multi-dimension Attention Network for No-Reference Image Quality Assessment", CVPRW 2022,
    arXiv:2204.08958; one head, softmax scaled by D ** -0.5, dropout on the output, a residual), which MoNet's
    Multi-view Attention Learning took over (Chen et al., GMC-IQA, arXiv:2401.10511), and PromptIQA with MoNet."""

    def __init__(self, dim: int, drop: float = 0.1):
        super().__init__()
        self.c_q = nn.Linear(dim, dim)
        self.c_k = nn.Linear(dim, dim)
        self.c_v = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, R, D = x.shape
        # one head (B, 1, R, D), as fused SDPA kernels take it (unsqueezing is free)
        out = F.scaled_dot_product_attention(self.c_q(x).unsqueeze(1), self.c_k(x).unsqueeze(1),
                                             self.c_v(x).unsqueeze(1)).squeeze(1)
        # The official block reshapes the (B, D, R) transpose straight to (B, R, D) instead of transposing it
        # back, which scrambles rows and columns; the released weights were trained with it, so it stays.
        out = out.transpose(1, 2).reshape(B, R, D)
        return x + self.proj_drop(out)


class MAL(nn.Module):
    """Multi-view Attention Learning: fuses V views (B, C, H, W) into one (B, C, H*W) map."""

    def __init__(self, dim: int, num_views: int, num_pixels: int, drop: float = 0.1):
        super().__init__()
        self.channel_attention = RowAttention(dim * num_views, drop)
        self.feature_attention = RowAttention(num_pixels * num_views, drop)
        self.attention_module = nn.ModuleList(PixelSelfAttention(dim) for _ in range(num_views))

    def forward(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        x = torch.stack([att(v) for att, v in zip(self.attention_module, views)], dim=1)
        B, V, C, H, W = x.shape
        x = x.reshape(B, V * C, H * W)  # rows are view-major channels
        # Pixel-wise branch: the official rearrange regroups the V*C rows as (C, V), which is a plain reshape and
        # so interleaves the views' channels; its inverse is the reshape back.
        pixel = self.feature_attention(x.reshape(B, C, V * H * W)).reshape(B, V * C, H * W)
        channel = self.channel_attention(x.transpose(1, 2)).transpose(1, 2)
        return ((pixel + channel) / 2).reshape(B, V, C, H * W).mean(dim=1)
