"""The ViT being bootstrapped: a plain timm VisionTransformer, plus a forward pass that also
returns every block's patch tokens (the feature-hint targets of Bootstrapping ViTs).

Example:
    >>> import torch
    >>> vit = build_vit(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=36,
    ...                 depth=2, num_heads=9, mlp_ratio=2.0, drop_rate=0.0, attn_drop_rate=0.0,
    ...                 drop_path_rate=0.0)
    >>> logits, tokens = vit_forward_features(vit, torch.zeros(2, 1, 16, 16))
    >>> tuple(logits.shape), len(tokens), tuple(tokens[0].shape)
    ((2, 10), 2, (2, 16, 36))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from trainers.errors import ConfigError

__all__ = ["POOLS", "ViTShape", "build_vit", "vit_forward_features"]

POOLS = ("cls", "gap")  # class token (the paper's ViT) | global average pooling, no class token


@dataclass(frozen=True)
class ViTShape:
    """The numbers that fix a ViT's layers: `build_vit`'s first arguments (as keywords:
    ``build_vit(**dataclasses.asdict(shape), ...)``), and what the agent built to match that ViT
    is sized by (trainers.agent)."""

    img_size: int
    patch_size: int
    in_chans: int
    num_classes: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float


def build_vit(
    *,
    img_size: int,
    patch_size: int,
    in_chans: int,
    num_classes: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    drop_rate: float,
    attn_drop_rate: float,
    drop_path_rate: float,
    pos_drop_rate: float = 0.0,
    pool: str = "cls",
    pos_embed: str = "learn",
    embed_layer: Callable[..., nn.Module] | None = None,
    mlp_layer: Callable[..., nn.Module] | None = None,
    attn_layer: Callable[..., nn.Module] | None = None,
) -> VisionTransformer:
    """A timm ViT: class token (or global average pooling), learnable position embedding, pre-norm.

    `drop_rate` is the released code's "dropout" outside the attention map: after the attention
    output and inside the MLP (timm's proj_drop_rate); `attn_drop_rate` drops the attention map
    (the released code uses the same rate for both); `pos_drop_rate` drops after the position
    embedding (the released code: none; timm <= 0.6's single drop_rate did). The classifier head
    gets no dropout.
    `pool`: `cls` classifies from a class token (the paper's ViT); `gap` has no class token and
    averages the patch tokens (what the impulse init needs). `embed_layer`, `mlp_layer` and
    `attn_layer` swap timm's parts for others with their constructor signature (trainers.dhvt).
    Raises ConfigError for shapes timm would reject with an assert or silently truncate.
    """
    for name, value in (
        ("img_size", img_size),
        ("patch_size", patch_size),
        ("in_chans", in_chans),
        ("num_classes", num_classes),
        ("embed_dim", embed_dim),
        ("depth", depth),
        ("num_heads", num_heads),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"vit: {name} must be a positive integer, got {value!r}")
    if img_size % patch_size:
        raise ConfigError(f"vit: patch_size {patch_size} does not divide img_size {img_size}")
    if embed_dim % num_heads:
        raise ConfigError(f"vit: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if mlp_ratio <= 0 or int(embed_dim * mlp_ratio) < 1:
        raise ConfigError(f"vit: mlp_ratio must give a hidden width >= 1, got {mlp_ratio}")
    for name, rate in (
        ("drop_rate", drop_rate),
        ("attn_drop_rate", attn_drop_rate),
        ("drop_path_rate", drop_path_rate),
        ("pos_drop_rate", pos_drop_rate),
    ):
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"vit: {name} must be in [0, 1), got {rate}")
    if pool not in POOLS:
        raise ConfigError(f"vit: pool must be one of {', '.join(POOLS)}, got {pool!r}")
    parts = {
        name: layer
        for name, layer in (
            ("embed_layer", embed_layer),
            ("mlp_layer", mlp_layer),
            ("attn_layer", attn_layer),
        )
        if layer is not None
    }
    vit = VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        global_pool="token" if pool == "cls" else "avg",
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        class_token=pool == "cls",
        pos_embed=pos_embed,  # "none" with SOPE, which carries position itself
        pos_drop_rate=pos_drop_rate,
        proj_drop_rate=drop_rate,
        drop_rate=0.0,  # head dropout: not in the paper's ViT
        attn_drop_rate=attn_drop_rate,
        drop_path_rate=drop_path_rate,
        **parts,
    )
    for block in vit.blocks:  # SDPA (flash / memory-efficient kernels), whatever TIMM_FUSED_ATTN
        if hasattr(block.attn, "fused_attn"):  # says; the same math as softmax(q k^T/sqrt(d)) v
            block.attn.fused_attn = True
    return vit


def vit_forward_features(
    vit: VisionTransformer, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and each block's output tokens in one pass.

    Replicates `VisionTransformer.forward_features` + `forward_head` (timm 1.0) but iterates the
    blocks itself. Tokens are the residual stream after each block (before the final norm) with
    the prefix (class/register) tokens dropped: [B, N, D], N = grid_h * grid_w in raster order.
    """
    x = vit.patch_embed(x)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    block_tokens = []
    for block in vit.blocks:
        x = block(x)
        block_tokens.append(x[:, vit.num_prefix_tokens :])
    x = vit.norm(x)
    return vit.forward_head(x), block_tokens
