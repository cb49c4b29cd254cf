"""Attention initialisations that give a ViT a convolution's bias before it sees any data.

    trunc_normal  timm's default (weights ~ N(0, 0.02) truncated): the baseline.
    mimetic       Trockman & Kolter, "Mimetic initialization of self-attention layers" (ICML 2023):
                  per head W_q W_k^T ~ a1 Z + b1 I (tokens attend to themselves and similar
                  tokens), and per block W_v W_o ~ a2 Z - b2 I; Z has N(0, 1/d) entries and each
                  product is split into its two factors by an SVD.
    impulse       Zheng, Li & Lucey, "Structured initialization for attention in vision
                  transformers" (arXiv 2404.01139; NeurIPS 2025 version arXiv 2505.19985): head h's
                  attention map on the position embeddings is an impulse at one offset of an f x f
                  window, so every block starts as a convolution. Q and K are solved in closed form
                  so that softmax(P W_q W_k^T P^T / sqrt(d_h)) ~ the shift matrix of that offset,
                  with P = LayerNorm(position embeddings).

Conventions: "W_q W_k^T" is the paper's row-vector notation (logits = x W_q W_k^T x^T). timm stores
nn.Linear weights as [out, in], so the bilinear form of head h is `qkv.weight[q rows of h].T @
qkv.weight[k rows of h]`; `qk_form` and `vo_form` return exactly the matrices the papers write.

Example:
    >>> import torch
    >>> from trainers.vit import build_vit
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> vit = build_vit(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=72,
    ...                 depth=2, num_heads=9, mlp_ratio=2.0, drop_rate=0.0, attn_drop_rate=0.0,
    ...                 drop_path_rate=0.0, pool="gap")
    >>> apply_init(vit, "impulse", impulse_window=3)
    >>> maps = position_attention(vit, block=0)  # [heads, tokens, tokens]
    >>> centre = 3 * 7 + 3  # token (3, 3) of the 7 x 7 grid; head 0's offset is (-1, -1)
    >>> int(maps[0, centre].argmax()) == 2 * 7 + 2
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer

from trainers.errors import ConfigError
from trainers.registry import Registry

__all__ = [
    "IMPULSE_WINDOWS",
    "INIT_SCHEMES",
    "apply_init",
    "impulse_offsets",
    "impulse_qk",
    "mimetic_factors",
    "position_attention",
    "qk_form",
    "register_init",
    "vo_form",
]

IMPULSE_WINDOWS = (3, 5)  # the paper's f: 3x3 or 5x5 windows
MIMETIC_QK = (0.7, 0.7)  # (alpha1, beta1) of the mimetic authors' code, and of the impulse code
MIMETIC_VO = (0.4, 0.4)  # (alpha2, beta2): W_v W_o ~ 0.4 Z - 0.4 I
# The solved logits are scaled so that, on interior tokens, the target's logit exceeds the best
# other token's by this margin on average: e^-6 ~ 0.0025, so the dozen tokens sharing the target's
# row or column (the next-best, see `impulse_qk`) take ~3% together. Larger margins only saturate
# the softmax (vanishing gradients into Q and K).
IMPULSE_MARGIN = 6.0
# Position embeddings start as 2D sin-cos (deterministic, so the solve is cached per shape) scaled
# so that they dominate the patch embedding at init: timm's default patch conv gives content of
# RMS ~0.6 on normalised images, sin-cos has RMS 0.71; x4 makes the pseudo-input P what the first
# LayerNorm actually sees. The released code scales its position embeddings up likewise (x18 on
# N(0, 0.02) embeddings). The embeddings stay learnable.
IMPULSE_POS_SCALE = 4.0
# Sin-cos embeddings of a small grid are nearly collinear (P's singular values fall from 1 to 1e-9
# of the largest): a plain pseudo-inverse reaches the target through those directions with
# weights of ~10^3-10^4. Tikhonov damping, 1/s -> s / (s^2 + 1e-3 s_max^2), keeps the factors'
# Frobenius norm per head at ~11-16 (ViT-tiny to ViT-B shapes) for a target share that measured
# the same (0.96-0.98 minimum over interior tokens and heads, vs 0.93-0.96 undamped).
IMPULSE_DAMPING = 1e-3

InitFn = Callable[..., None]
INIT_SCHEMES: Registry[InitFn] = Registry("init scheme")
register_init = INIT_SCHEMES.register


def apply_init(vit: VisionTransformer, scheme: str, *, impulse_window: int = 3) -> None:
    """Re-initialise `vit`'s attention in place with a registered scheme (global torch RNG)."""
    fn = INIT_SCHEMES.lookup(scheme)
    with torch.no_grad():
        fn(vit, impulse_window=impulse_window)


# ----------------------------------------------------------------------------------------------
# Reading the bilinear forms back (what the tests and the README measure)


def _head_rows(vit: VisionTransformer, block: int, part: int, head: int) -> torch.Tensor:
    """Head `head`'s rows of the q (part 0), k (1) or v (2) projection: [d_h, D]."""
    attn = vit.blocks[block].attn
    dim = attn.qkv.weight.shape[1]
    d_h = dim // attn.num_heads
    start = part * dim + head * d_h
    return attn.qkv.weight[start : start + d_h]


def qk_form(vit: VisionTransformer, block: int, head: int) -> torch.Tensor:
    """W_q W_k^T of one head, [D, D]: the attention logit of tokens x, y is x W_q W_k^T y^T."""
    return _head_rows(vit, block, 0, head).T @ _head_rows(vit, block, 1, head)


def vo_form(vit: VisionTransformer, block: int) -> torch.Tensor:
    """W_v W_o of one block, all heads, [D, D]: a token's value path into the residual stream."""
    attn = vit.blocks[block].attn
    dim = attn.qkv.weight.shape[1]
    return attn.qkv.weight[2 * dim :].T @ attn.proj.weight.T


@torch.no_grad()
def position_attention(vit: VisionTransformer, block: int = 0) -> torch.Tensor:
    """[heads, N, N]: block `block`'s attention when its input is the position embeddings alone.

    softmax(P W_q W_k^T P^T / sqrt(d_h)) with P = the block's LayerNorm of the patch tokens'
    position embeddings (prefix tokens dropped), biases included: what the impulse init aims at.
    """
    prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    pos = vit.pos_embed[0, prefix:]
    blk = vit.blocks[block]
    q, k, _ = blk.attn.qkv(blk.norm1(pos)).chunk(3, dim=-1)
    heads = blk.attn.num_heads
    q = q.reshape(len(pos), heads, -1).transpose(0, 1)
    k = k.reshape(len(pos), heads, -1).transpose(0, 1)
    return torch.softmax(q @ k.transpose(1, 2) * blk.attn.scale, dim=-1)


# ----------------------------------------------------------------------------------------------
# The schemes


@register_init("trunc_normal")
def _trunc_normal(vit: VisionTransformer, **_) -> None:
    """timm already initialised the model this way (Linear ~ trunc N(0, 0.02), zero biases)."""


def mimetic_factors(dim: int, alpha: float, beta: float, rank: int) -> tuple[torch.Tensor, ...]:
    """(L [dim, rank], R [rank, dim]) with L R the best rank-`rank` approximation of aZ + bI.

    Z has N(0, 1/dim) entries (the mimetic paper's 1/sqrt(d) scaling); the SVD U S V^T splits the
    product evenly: L = U sqrt(S), R = sqrt(S) V^T, so neither factor is larger than the other.
    """
    z = torch.randn(dim, dim) / math.sqrt(dim)
    u, s, vh = torch.linalg.svd(alpha * z + beta * torch.eye(dim))
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def _set_vo(vit: VisionTransformer, alpha: float, beta: float) -> None:
    """Every block's W_v W_o ~ alpha Z - beta I (one draw per block, all heads together)."""
    for blk in vit.blocks:
        dim = blk.attn.proj.weight.shape[0]
        left, right = mimetic_factors(dim, alpha, -beta, dim)
        blk.attn.qkv.weight[2 * dim :] = left.T  # timm rows: x W_v^T = x L
        blk.attn.proj.weight.copy_(right.T)  # then (x L) W_o^T = x L R


@register_init("mimetic")
def _mimetic(vit: VisionTransformer, **_) -> None:
    alpha, beta = MIMETIC_QK
    for blk in vit.blocks:
        dim = blk.attn.proj.weight.shape[0]
        heads = blk.attn.num_heads
        d_h = dim // heads
        for h in range(heads):
            # Each head its own Z: rank-d_h factors of a1 Z + b1 I (the authors' per-head split)
            left, right = mimetic_factors(dim, alpha, beta, d_h)
            blk.attn.qkv.weight[h * d_h : (h + 1) * d_h] = left.T
            blk.attn.qkv.weight[dim + h * d_h : dim + (h + 1) * d_h] = right
    _set_vo(vit, *MIMETIC_VO)


def impulse_offsets(num_heads: int, window: int) -> list[tuple[int, int]]:
    """Head h's (dy, dx) offset: the f x f window's offsets in raster order, spread evenly.

    With heads >= f^2 every offset is used (in order, then again); with fewer heads, evenly spaced
    raster positions, which always include the centre when heads is odd: 9 heads in a 3x3 window
    take all nine, 9 heads in a 5x5 window take every third position of 25.
    """
    if window not in IMPULSE_WINDOWS:
        raise ConfigError(f"impulse_window must be one of {IMPULSE_WINDOWS}, got {window}")
    cells = window * window
    half = window // 2
    if num_heads >= cells:
        positions = [h % cells for h in range(num_heads)]
    else:
        positions = [round(h * (cells - 1) / max(1, num_heads - 1)) for h in range(num_heads)]
    return [(p // window - half, p % window - half) for p in positions]


def _shift_matrices(grid: tuple[int, int], offsets: list[tuple[int, int]]) -> torch.Tensor:
    """[heads, N, N] with S[h, i, j] = 1 when token j sits at token i + offset h (zero padding)."""
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    out = torch.zeros(len(offsets), gh * gw, gh * gw)
    for h, (dy, dx) in enumerate(offsets):
        ty, tx = ys + dy, xs + dx
        inside = (ty >= 0) & (ty < gh) & (tx >= 0) & (tx < gw)
        rows = torch.arange(gh * gw)[inside]
        out[h, rows, (ty * gw + tx)[inside]] = 1.0
    return out


def _impulse_pos(grid: tuple[int, int], dim: int) -> torch.Tensor:
    return build_sincos2d_pos_embed(list(grid), dim).float() * IMPULSE_POS_SCALE


@functools.lru_cache(maxsize=32)
def impulse_qk(
    grid: tuple[int, int], dim: int, num_heads: int, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_q, W_k) in timm's row layout, [D, D] each: head h's rows make its impulse map.

    Solved once per shape (cached): P = LayerNorm(sin-cos position embeddings) [N, D] (unit gain,
    no bias: the block's LayerNorm at init); per head, W = P^+ S_h P^+T solves P W P^T = S_h (the
    shift matrix) in the least-squares sense, with a damped pseudo-inverse (IMPULSE_DAMPING); the
    SVD of W truncated to rank
    d_h gives W_q W_k^T, split evenly as in `mimetic_factors`. Finally one scale for all heads puts
    the interior tokens' mean target margin (target logit minus the best other) at
    IMPULSE_MARGIN, after the 1/sqrt(d_h) of the attention.

    Why sin-cos P: its features are separable in y and x, so P W P^T can hold "same row shifted"
    plus "same column shifted" terms, whose sum peaks exactly at the target (2 vs 1 elsewhere on the
    cross); a random P of rank N would need rank N logits, far beyond d_h.
    """
    d_h = dim // num_heads
    offsets = impulse_offsets(num_heads, window)
    p = F.layer_norm(_impulse_pos(grid, dim), (dim,)).double()
    u, s, vh = torch.linalg.svd(p, full_matrices=False)
    damped = s / (s**2 + IMPULSE_DAMPING * s[0] ** 2)  # 1/s for large s, -> 0 for tiny ones
    p_pinv = (vh.T * damped) @ u.T  # [D, N]
    targets = _shift_matrices(grid, offsets).double()
    w_q = torch.zeros(dim, dim, dtype=torch.double)
    w_k = torch.zeros(dim, dim, dtype=torch.double)
    for h in range(num_heads):
        w = p_pinv @ targets[h] @ p_pinv.T
        uu, ss, vv = torch.linalg.svd(w)
        root = ss[:d_h].sqrt()
        w_q[h * d_h : (h + 1) * d_h] = (uu[:, :d_h] * root).T
        w_k[h * d_h : (h + 1) * d_h] = root[:, None] * vv[:d_h]
    logits = _head_logits(p, w_q, w_k, num_heads) / math.sqrt(d_h)
    margin = _mean_interior_margin(logits, targets, grid, window)
    if not margin > 0:
        raise ConfigError(
            f"impulse init: no solution for grid {grid}, dim {dim}, {num_heads} heads"
        )
    scale = math.sqrt(IMPULSE_MARGIN / margin)  # logits are bilinear: scale each factor by sqrt
    return (w_q * scale).float(), (w_k * scale).float()


def _head_logits(p: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, heads: int):
    q = (p @ w_q.T).reshape(len(p), heads, -1).transpose(0, 1)
    k = (p @ w_k.T).reshape(len(p), heads, -1).transpose(0, 1)
    return q @ k.transpose(1, 2)


def interior_tokens(grid: tuple[int, int], window: int) -> torch.Tensor:
    """Indices of tokens whose whole f x f window lies inside the grid."""
    gh, gw = grid
    half = window // 2
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    inside = (ys >= half) & (ys < gh - half) & (xs >= half) & (xs < gw - half)
    return inside.flatten().nonzero().flatten()


def _mean_interior_margin(logits, targets, grid, window) -> float:
    rows = interior_tokens(grid, window)
    if len(rows) == 0:
        raise ConfigError(
            f"impulse init: a {grid[0]}x{grid[1]} token grid has no token whose {window}x{window} "
            "window fits inside; use a smaller patch or impulse_window"
        )
    lg, tg = logits[:, rows], targets[:, rows].bool()
    target = lg.masked_fill(~tg, -math.inf).amax(-1)
    other = lg.masked_fill(tg, -math.inf).amax(-1)
    return float((target - other).mean())


@register_init("impulse")
def _impulse(vit: VisionTransformer, *, impulse_window: int = 3, **_) -> None:
    if vit.cls_token is not None or vit.global_pool != "avg":
        raise ConfigError("init=impulse needs pool=gap: no class token (as Zheng et al.)")
    grid = tuple(vit.patch_embed.grid_size)
    dim = vit.pos_embed.shape[-1]
    heads = vit.blocks[0].attn.num_heads
    w_q, w_k = impulse_qk(grid, dim, heads, impulse_window)
    vit.pos_embed.copy_(_impulse_pos(grid, dim)[None])
    for blk in vit.blocks:
        blk.attn.qkv.weight[:dim] = w_q
        blk.attn.qkv.weight[dim : 2 * dim] = w_k
        if blk.attn.qkv.bias is not None:
            blk.attn.qkv.bias[: 2 * dim] = 0.0  # logits from positions only
    # Values and output projection as the released code: mimetic W_v W_o ~ 0.4 Z - 0.4 I
    _set_vo(vit, *MIMETIC_VO)
