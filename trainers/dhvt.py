"""DHVT's three pieces as drop-in parts of timm's VisionTransformer.

Lu et al., "Bridging the Gap Between Vision Transformers and Convolutional Neural Networks on
Small Datasets" (DHVT, NeurIPS 2022). Each piece has the constructor signature timm calls, so
`build_vit(..., embed_layer=SOPE, mlp_layer=daff_layer(...), attn_layer=HeadTokenAttention)` swaps
it in and everything else of the ViT (blocks, norms, head, the agent's weight sharing) stays.

    SOPE                 sequential overlapping patch embedding: log2(patch) stages of 3x3 stride-2
                         conv + BatchNorm (GELU between stages), with DHVT's learnable affine
                         (per-channel scale and shift) before and after. It carries position
                         information itself, so the ViT gets no absolute position embedding.
    DAFF                 dynamic aggregation feed-forward: 1x1 conv (fc1) + BN + GELU, a
                         depthwise 3x3 conv + BN + GELU on the patch grid with a shortcut, 1x1
                         conv (fc2) + BN.
                         The class token skips the depthwise conv; it is re-weighted by a channel
                         attention (squeeze-excite) computed from the patch tokens' average.
    HeadTokenAttention   one extra token per head: the tokens' average, split into `heads` channel
                         groups, each projected to the full width by one shared linear + GELU. They
                         join the attention; their outputs are averaged into the class token.

BatchNorm, not SyncBatchNorm: a trial runs on one device. Example:

    >>> import torch
    >>> from trainers.vit import build_vit
    >>> vit = build_vit(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=72,
    ...                 depth=2, num_heads=9, mlp_ratio=2.0, drop_rate=0.0, attn_drop_rate=0.0,
    ...                 drop_path_rate=0.0, **dhvt_parts(patch_embed="sope", mlp="daff",
    ...                 head_tokens=True, img_size=28, patch_size=4, pool="cls"))
    >>> tuple(vit(torch.zeros(2, 1, 28, 28)).shape), vit.pos_embed is None
    ((2, 10), True)
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from timm.layers import Attention
from torch import nn

from trainers.errors import ConfigError

__all__ = ["DAFF", "SOPE", "Affine", "HeadTokenAttention", "dhvt_parts", "sope_stages"]

SE_REDUCTION = 4  # DAFF's channel attention: hidden width = channels / 4 (DHVT code)


class Affine(nn.Module):
    """x * alpha + beta per channel (DHVT's affine before and after SOPE), on [B, C, H, W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.alpha + self.beta


def sope_stages(patch_size: int) -> int:
    """Stride-2 stages that make `patch_size`: it must be a power of two >= 2."""
    if patch_size < 2 or patch_size & (patch_size - 1):
        raise ConfigError(
            f"patch_embed=sope downsamples by stride-2 convolutions: patch_size must be a power "
            f"of two >= 2, got {patch_size}"
        )
    return int(math.log2(patch_size))


class SOPE(nn.Module):
    """Sequential overlapping patch embedding, with timm PatchEmbed's constructor and attributes.

    Widths double up to `embed_dim`: a patch of 4 is in -> D/2 -> D, of 16 is in -> D/8 -> D/4 ->
    D/2 -> D (DHVT's layout). Output [B, N, D] in raster order, as PatchEmbed's.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        **_: Any,  # timm passes dynamic_img_pad, device, dtype: not used
    ):
        super().__init__()
        img = img_size if isinstance(img_size, int) else img_size[0]
        patch = patch_size if isinstance(patch_size, int) else patch_size[0]
        stages = sope_stages(patch)
        if img % patch:
            raise ConfigError(f"patch_size {patch} does not divide img_size {img}")
        self.img_size, self.patch_size = (img, img), (patch, patch)
        self.grid_size = (img // patch, img // patch)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten, self.dynamic_img_size = True, False  # what timm reads of a PatchEmbed
        widths = [in_chans] + [embed_dim // 2 ** (stages - 1 - s) for s in range(stages)]
        if min(widths[1:]) < 1:
            raise ConfigError(f"patch_embed=sope: embed_dim {embed_dim} too small for {stages}")
        layers: list[nn.Module] = []
        for s in range(stages):
            layers += [
                nn.Conv2d(widths[s], widths[s + 1], 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(widths[s + 1]),
            ]
            if s < stages - 1:
                layers.append(nn.GELU())
        self.pre_affine = Affine(in_chans)
        self.proj = nn.Sequential(*layers)
        self.post_affine = Affine(embed_dim)

    def feat_ratio(self, as_scalar: bool = True):
        return self.patch_size[0] if as_scalar else self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.post_affine(self.proj(self.pre_affine(x)))
        return x.flatten(2).transpose(1, 2)


def _token_bn(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over channels of tokens [B, N, C] (statistics over batch and tokens)."""
    return bn(x.transpose(1, 2)).transpose(1, 2)


class DAFF(nn.Module):
    """Dynamic aggregation feed-forward; `fc1`/`fc2` are nn.Linear (1x1 convs on tokens)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
        *,
        grid: tuple[int, int],
        prefix_tokens: int,
        **_: Any,  # timm passes norm_layer (for scale_mlp_norm, unused), device, dtype
    ):
        super().__init__()
        hidden = hidden_features or in_features
        self.grid, self.prefix_tokens = tuple(grid), prefix_tokens
        self.fc1 = nn.Linear(in_features, hidden, bias=bias)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.act = act_layer()
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.se = (
            nn.Sequential(
                nn.Linear(hidden, max(1, hidden // SE_REDUCTION)),
                nn.GELU(),
                nn.Linear(max(1, hidden // SE_REDUCTION), hidden),
                nn.Sigmoid(),
            )
            if prefix_tokens
            else None
        )
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, in_features, bias=bias)
        self.bn3 = nn.BatchNorm1d(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(_token_bn(self.bn1, self.fc1(x)))
        prefix, tokens = x[:, : self.prefix_tokens], x[:, self.prefix_tokens :]
        b, n, c = tokens.shape
        grid = tokens.transpose(1, 2).reshape(b, c, *self.grid)
        grid = grid + self.act(self.bn2(self.dwconv(grid)))  # shortcut around the depthwise conv
        tokens = grid.flatten(2).transpose(1, 2)
        if self.se is not None:  # the class token, re-weighted by the patches' channel attention
            prefix = prefix * self.se(tokens.mean(dim=1)).unsqueeze(1)
            tokens = torch.cat([prefix, tokens], dim=1)
        x = self.drop(tokens)
        return _token_bn(self.bn3, self.fc2(x))


class HeadTokenAttention(Attention):
    """timm Attention plus DHVT head tokens; qkv and proj are timm's (the agent shares them).

    Needs a class token at position 0: the head tokens' outputs are averaged into it.
    """

    def __init__(self, dim: int, num_heads: int = 8, **kwargs: Any):
        super().__init__(dim, num_heads=num_heads, **kwargs)
        self.head_proj = nn.Linear(dim // num_heads, dim)  # shared by the heads' channel groups
        self.head_act = nn.GELU()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_) -> torch.Tensor:
        b, n, c = x.shape
        groups = x.mean(dim=1).reshape(b, self.num_heads, c // self.num_heads)
        head_tokens = self.head_act(self.head_proj(groups))  # [B, heads, C]
        out = super().forward(torch.cat([x, head_tokens], dim=1), attn_mask=attn_mask)
        tokens, heads = out[:, :n], out[:, n:]
        cls = tokens[:, :1] + heads.mean(dim=1, keepdim=True)
        return torch.cat([cls, tokens[:, 1:]], dim=1)


def dhvt_parts(
    *, patch_embed: str, mlp: str, head_tokens: bool, img_size: int, patch_size: int, pool: str
) -> dict[str, Any]:
    """`build_vit` keyword arguments for the chosen DHVT pieces (empty for a plain ViT)."""
    parts: dict[str, Any] = {}
    if patch_embed == "sope":
        sope_stages(patch_size)
        parts["embed_layer"] = SOPE
        parts["pos_embed"] = "none"  # SOPE's overlapping convolutions carry position (DHVT)
    if mlp == "daff":
        grid = (img_size // patch_size, img_size // patch_size)
        prefix = 1 if pool == "cls" else 0
        parts["mlp_layer"] = functools.partial(DAFF, grid=grid, prefix_tokens=prefix)
    if head_tokens:
        if pool != "cls":
            raise ConfigError("head_tokens needs pool=cls: the head tokens feed the class token")
        parts["attn_layer"] = HeadTokenAttention
    return parts
