"""The agent CNN of Bootstrapping ViTs (Zhang et al., CVPR 2022), built from a ViT's weights.

Each attention block becomes a "generalized convolution": head h contributes the D x D matrix
M_h = W_o^h W_v^h (head h's rows of the value projection, then its columns of the output
projection) at raster position h of a k x k kernel, k = ceil(sqrt(heads)); query and key are unused.
Each MLP becomes two 1x1 convolutions. The agent's own parts are the input stem, one BatchNorm2d
per ViT LayerNorm (pre- or post-norm), optional 2x2 average pooling after chosen blocks, and a head
(BN, GELU, global average pool, linear).

Convention (cross-correlation, as F.conv2d): kernel position h sits at row h // k, column h % k,
and reads the input pixel at offset (h // k - k // 2, h % k - k // 2) from the output pixel, with
zero padding. For odd k the window is centred; for even k (4 heads -> k = 2) it covers offsets
{-1, 0}: the padding is k // 2 before and k - 1 - k // 2 after, so the output keeps the input grid.

`SharedAgent` reads the ViT's weights on every forward (shared mode: gradients of the agent's
loss flow into the ViT's value rows, output projection and MLP); `StandaloneAgent` owns its
weights (agent-alone and joint modes). By default (`conv="dense"`) its attention convolution is
the released code's: a full D x D matrix at each of the first `heads` positions of the k x k
kernel (Agent-S `conv_sl`, a plain 3 x 3 conv when heads = 9; Agent-B `conv_manyhead`); with
`conv="factored"` it is shared mode's W_o shift W_v form with its own W_v, W_o (rank head_dim per
position). Both share all forward code through `AgentCNN`, which asks a subclass only for each
block's `BlockWeights`.

Block layouts (`norm`): pre: x + f(BN(x)); post: x + BN(f(x)) (the released post-norm block,
cnn_blocks.py); post_sum: BN(x + f(x)). Dropout (`drop_rate`) acts after the MLP's activation,
where the released agents have it (the shared agent's MLP is the ViT's, dropout included).

Example:
    >>> import torch
    >>> from trainers.vit import build_vit
    >>> vit = build_vit(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=36,
    ...                 depth=2, num_heads=9, mlp_ratio=2.0, drop_rate=0.0, attn_drop_rate=0.0,
    ...                 drop_path_rate=0.0)
    >>> agent = SharedAgent(vit, design="res_like", stem="vit_like", norm="pre", num_classes=10,
    ...                     in_chans=1)
    >>> logits, features = agent(torch.zeros(2, 1, 16, 16))
    >>> tuple(logits.shape), agent.feature_grids
    ((2, 10), ((4, 4), (2, 2)))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from trainers.errors import ConfigError
from trainers.registry import Registry
from trainers.vit import ViTShape

__all__ = [
    "AGENT_CONVS",
    "AGENT_DESIGNS",
    "AGENT_NORMS",
    "AGENT_STEMS",
    "AgentCNN",
    "AgentDesign",
    "BlockWeights",
    "SharedAgent",
    "StandaloneAgent",
    "conv_kernel_size",
    "factored_generalized_conv2d",
    "shift_kernel",
    "generalized_conv2d",
    "generalized_conv_bias",
    "head_matrices",
    "literal_generalized_conv",
    "register_agent_design",
    "resnet_stem_strides",
]

AGENT_STEMS = ("vit_like", "resnet_like")  # paper: ViT-like patch conv or ResNet-like stem
AGENT_NORMS = ("pre", "post", "post_sum")  # where each block's BatchNorm2d sits (module doc)
AGENT_CONVS = ("dense", "factored")  # the standalone agent's attention convolution
RESNET_STEM_WIDTH = 64  # channels after the 7x7 conv, as ResNet and the released code


# ----------------------------------------------------------------------------------------------
# Designs: which blocks are followed by 2x2 average pooling


@dataclass(frozen=True)
class AgentDesign:
    """A named agent layout: the blocks after which a 2x2 average pooling halves the grid.

    `downsample_after` is a tuple of block indices or a function of the depth returning one.
    """

    name: str
    downsample_after: Callable[[int], tuple[int, ...]] | tuple[int, ...] = ()

    def pool_blocks(self, depth: int) -> tuple[int, ...]:
        after = self.downsample_after
        blocks = tuple(sorted(set(after(depth) if callable(after) else after)))
        outside = [b for b in blocks if not 0 <= b < depth]
        if outside:
            raise ConfigError(
                f"agent design {self.name!r}: pooling after blocks {outside} but depth is {depth}"
            )
        return blocks


AGENT_DESIGNS: Registry[AgentDesign] = Registry("agent design")


def register_agent_design(design: AgentDesign | str):
    """Register an `AgentDesign`, or use as `@register_agent_design("name")` on a function
    `depth -> tuple of block indices`. A duplicate name raises ValueError.

    Example (a design pooling after the last block only):
        @register_agent_design("pool_last")
        def _pool_last(depth):
            return (depth - 1,)
    """

    def add(entry: AgentDesign) -> None:
        AGENT_DESIGNS.add(entry.name, entry)

    if isinstance(design, AgentDesign):
        add(design)
        return design

    def decorator(fn: Callable[[int], tuple[int, ...]]):
        add(AgentDesign(design, fn))
        return fn

    return decorator


register_agent_design(AgentDesign("base", ()))  # the ViT's grid throughout


@register_agent_design("res_like")
def _res_like(depth: int) -> tuple[int, ...]:
    # The paper's ViT-S agent ("res-like"): pool after blocks 0 and 1, like ResNet's stages.
    return tuple(b for b in (0, 1) if b < depth)


@register_agent_design("res_like_b")
def _res_like_b(depth: int) -> tuple[int, ...]:
    # The released ViT-B agent (agent-base-res_like.yaml, 12 blocks): pool after blocks 2 and 8.
    return tuple(b for b in (2, 8) if b < depth)


# ----------------------------------------------------------------------------------------------
# The generalized convolution


class BlockWeights(NamedTuple):
    """One agent block's weights (nn.Linear layout: [out, in]). The attention convolution is
    either factored (value and projection weights: the ViT's, or a factored agent's own) or dense
    (`head_mats`, a dense agent's own); the other pair is None."""

    value_weight: torch.Tensor | None  # [A, D]: the value rows of the fused qkv, A = heads * d_h
    value_bias: torch.Tensor | None  # [A]
    proj_weight: torch.Tensor | None  # [D, A]: the attention's output projection
    proj_bias: torch.Tensor | None  # [D]
    fc1_weight: torch.Tensor  # [hidden, D]
    fc1_bias: torch.Tensor | None
    fc2_weight: torch.Tensor  # [D, hidden]
    fc2_bias: torch.Tensor | None
    head_mats: torch.Tensor | None = None  # [H, D, D]: kernel position h's matrix (dense)
    conv_bias: torch.Tensor | None = None  # [D] (dense)


def conv_kernel_size(num_heads: int) -> int:
    """k = ceil(sqrt(heads)), computed exactly in integers (9 heads -> 3, 4 -> 2, 10 -> 4)."""
    return math.isqrt(num_heads - 1) + 1


def head_matrices(
    value_weight: torch.Tensor, proj_weight: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """[H, D_out, D_in]: M_h = W_o[:, h*d:(h+1)*d] @ W_v[h*d:(h+1)*d, :]."""
    attn_dim, dim_in = value_weight.shape
    dim_out = proj_weight.shape[0]
    head_dim = attn_dim // num_heads
    w_v = value_weight.reshape(num_heads, head_dim, dim_in)
    w_o = proj_weight.reshape(dim_out, num_heads, head_dim).transpose(0, 1)
    return torch.bmm(w_o, w_v)


def generalized_conv_bias(
    value_bias: torch.Tensor | None, proj_weight: torch.Tensor, proj_bias: torch.Tensor | None
) -> torch.Tensor | None:
    """b = b_o + W_o b_v.

    The paper and the released code use the output-projection bias alone. But every attention
    row sums to 1, so head h's output sum_j A_ij (W_v^h x_j + b_v^h) carries b_v^h exactly once,
    and after the projection the value bias adds W_o b_v to every token. The same holds for the
    convolution's zero padding: a padding "token" is x = 0 and its value is b_v. So b_o + W_o b_v
    is what makes the agent the ViT with impulse attention maps; we include it.
    """
    bias = proj_bias
    if value_bias is not None:
        carried = proj_weight @ value_bias
        bias = carried if bias is None else bias + carried
    return bias


def _padding(kernel_size: int) -> tuple[int, int]:
    before = kernel_size // 2
    return before, kernel_size - 1 - before


def generalized_conv2d(
    x: torch.Tensor, head_mats: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Apply the k x k kernel holding M_h at raster position h to x [B, D_in, H, W].

    The kernel is assembled from `head_mats` on every call (so gradients reach whatever they were
    computed from) and applied as one F.conv2d: O(pixels * k^2 * D^2).
    """
    num_heads, dim_out, dim_in = head_mats.shape
    k = conv_kernel_size(num_heads)
    kernel = F.pad(head_mats.permute(1, 2, 0), (0, k * k - num_heads))  # unused positions are 0
    kernel = kernel.reshape(dim_out, dim_in, k, k)
    before, after = _padding(k)
    if before == after:
        return F.conv2d(x, kernel, bias, padding=before)
    return F.conv2d(F.pad(x, (before, after, before, after)), kernel, bias)


def factored_generalized_conv2d(
    x: torch.Tensor,
    value_weight: torch.Tensor,
    proj_weight: torch.Tensor,
    bias: torch.Tensor | None,
    num_heads: int,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """`generalized_conv2d` without assembling the kernel: the same function, ~4.5x fewer FLOPs.

    M_h = W_o^h W_v^h has rank head_dim, so sum_h M_h x[p + off(h)] = W_o concat_h(W_v^h x)[p +
    off(h)]: a 1x1 convolution by W_v, each head's channels shifted by its kernel offset (a
    depthwise convolution with a one-hot kernel, zero padding as the dense kernel's), then a 1x1
    convolution by W_o. Per pixel that is 2 D^2 multiply-adds instead of k^2 D^2 (9 D^2 for 9
    heads). Equal to `generalized_conv2d` up to float rounding (tests/test_models.py). `shift`:
    `shift_kernel(num_heads, head_dim)`, built here when not given (blocks keep it as a buffer).
    """
    attn_dim = value_weight.shape[0]
    k = conv_kernel_size(num_heads)
    values = _conv1x1(x, value_weight, None)
    if shift is None:
        shift = shift_kernel(num_heads, attn_dim // num_heads)
    shift = shift.to(device=values.device, dtype=values.dtype)
    before, after = _padding(k)
    if before == after:
        shifted = F.conv2d(values, shift, padding=before, groups=attn_dim)
    else:
        shifted = F.conv2d(F.pad(values, (before, after, before, after)), shift, groups=attn_dim)
    return _conv1x1(shifted, proj_weight, bias)


def shift_kernel(num_heads: int, head_dim: int) -> torch.Tensor:
    """[heads * head_dim, 1, k, k]: head h's channels hold a 1 at raster position h (a shift)."""
    k = conv_kernel_size(num_heads)
    kernel = torch.zeros(num_heads * head_dim, 1, k * k)
    for head in range(num_heads):
        kernel[head * head_dim : (head + 1) * head_dim, 0, head] = 1.0
    return kernel.view(num_heads * head_dim, 1, k, k)


def literal_generalized_conv(
    x_tokens: torch.Tensor,
    grid_hw: tuple[int, int],
    head_mats: torch.Tensor,
    bias: torch.Tensor | None = None,
    kernel_size: int | None = None,
) -> torch.Tensor:
    """Slow reference: y[p] = bias + sum_h M_h x[p + offset(h)], zero outside the grid, with
    offset(h) = (h // k - k // 2, h % k - k // 2). Explicit loops over pixels and heads; for tests.

    x_tokens: [B, N, D_in] in raster order on `grid_hw`; returns [B, N, D_out].
    """
    height, width = grid_hw
    num_heads, dim_out, _ = head_mats.shape
    k = conv_kernel_size(num_heads) if kernel_size is None else kernel_size
    out = x_tokens.new_zeros(x_tokens.shape[0], height * width, dim_out)
    for row in range(height):
        for col in range(width):
            acc = x_tokens.new_zeros(x_tokens.shape[0], dim_out)
            if bias is not None:
                acc = acc + bias
            for head in range(num_heads):
                src_row, src_col = row + head // k - k // 2, col + head % k - k // 2
                if 0 <= src_row < height and 0 <= src_col < width:
                    acc = acc + x_tokens[:, src_row * width + src_col] @ head_mats[head].T
            out[:, row * width + col] = acc
    return out


def _conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv2d(x, weight[:, :, None, None], bias)


# ----------------------------------------------------------------------------------------------
# The agent's own parts


def resnet_stem_strides(patch_size: int) -> tuple[int, int, int]:
    """Strides of (7x7 conv, 3x3 max-pool, 3x3 conv) in the ResNet-like stem.

    Rule: total stride = gcd(patch_size, 8). When 8 divides the patch this is the paper's stem
    (/2, /2, /2): at 224 px with patch 16 the agent starts on 28x28, twice the ViT's 14x14, as the
    released ViT-S config. Otherwise the later /2s become /1 (patch 4 -> /2, /2, /1 = the ViT's
    grid; patch 2 -> /2, /1, /1). The agent's grid is then (patch / stride) times the ViT's, an
    integer multiple, so hint resampling averages whole patches. We do not push the last conv's
    stride above 2: a 3x3 conv with stride 4 would skip input pixels.
    """
    total = math.gcd(patch_size, 8)
    halvings = total.bit_length() - 1  # total is 1, 2, 4 or 8
    return tuple(2 if i < halvings else 1 for i in range(3))


class _ResNetStem(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        s1, s2, s3 = resnet_stem_strides(patch_size)
        self.stride = s1 * s2 * s3
        self.conv1 = nn.Conv2d(
            in_chans, RESNET_STEM_WIDTH, kernel_size=7, stride=s1, padding=3, bias=False
        )
        self.norm = nn.BatchNorm2d(RESNET_STEM_WIDTH)
        self.act = nn.GELU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=s2, padding=1)
        self.conv2 = nn.Conv2d(RESNET_STEM_WIDTH, embed_dim, kernel_size=3, stride=s3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.maxpool(self.act(self.norm(self.conv1(x)))))


def _build_stem(stem: str, in_chans: int, embed_dim: int, patch_size: int) -> tuple[nn.Module, int]:
    if stem == "vit_like":
        return nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size), patch_size
    module = _ResNetStem(in_chans, embed_dim, patch_size)
    return module, module.stride


class AgentBlock(nn.Module):
    """One ViT block as convolutions; holds only its own two BatchNorm2d layers (and dropout)."""

    def __init__(self, embed_dim: int, num_heads: int, norm: str, drop_rate: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.norm = norm
        self.mlp_drop = nn.Dropout(drop_rate)  # after the MLP's activation, as the released agents
        self.dense_kernel = False  # True: assemble the k x k kernel (the reference, for tests)
        # the fixed one-hot shift of the factored conv; not a parameter, not in state_dict
        shift = shift_kernel(num_heads, embed_dim // num_heads)
        self.register_buffer("shift", shift, persistent=False)
        self.norm1 = nn.BatchNorm2d(embed_dim)  # for the ViT's norm1
        self.norm2 = nn.BatchNorm2d(embed_dim)  # for the ViT's norm2

    def conv_attention(self, x: torch.Tensor, w: BlockWeights) -> torch.Tensor:
        if w.head_mats is not None:  # a dense agent's own kernel
            return generalized_conv2d(x, w.head_mats, w.conv_bias)
        bias = generalized_conv_bias(w.value_bias, w.proj_weight, w.proj_bias)
        if self.dense_kernel:  # the plain path: the paper's kernel, assembled
            mats = head_matrices(w.value_weight, w.proj_weight, self.num_heads)
            return generalized_conv2d(x, mats, bias)
        return factored_generalized_conv2d(
            x, w.value_weight, w.proj_weight, bias, self.num_heads, self.shift
        )

    def conv_mlp(self, x: torch.Tensor, w: BlockWeights, act: nn.Module) -> torch.Tensor:
        hidden = self.mlp_drop(act(_conv1x1(x, w.fc1_weight, w.fc1_bias)))
        return _conv1x1(hidden, w.fc2_weight, w.fc2_bias)

    def forward(self, x: torch.Tensor, w: BlockWeights, act: nn.Module) -> torch.Tensor:
        if self.norm == "pre":
            x = x + self.conv_attention(self.norm1(x), w)
            return x + self.conv_mlp(self.norm2(x), w, act)
        if self.norm == "post":  # the released post-norm block: the norm ends each branch
            x = x + self.norm1(self.conv_attention(x, w))
            return x + self.norm2(self.conv_mlp(x, w, act))
        x = self.norm1(x + self.conv_attention(x, w))  # post_sum
        return self.norm2(x + self.conv_mlp(x, w, act))


class AgentCNN(nn.Module):
    """All agent forward code. Subclasses supply `block_weights(i)` and `activation(i)`.

    `forward(x) -> (logits, features)`: features[i] is block i's output, [B, N_i, D] in raster
    order, taken after the block and before its 2x2 pooling (the released code hooks the block
    module, and its pooling is a separate module); `feature_grids[i]` is that block's (h, w).
    """

    def __init__(
        self, shape: ViTShape, *, design: str, stem: str, norm: str, drop_rate: float = 0.0
    ):
        # shape.mlp_ratio is not read here: only StandaloneAgent owns MLP weights to size.
        super().__init__()
        img_size, patch_size, embed_dim = shape.img_size, shape.patch_size, shape.embed_dim
        depth, num_heads = shape.depth, shape.num_heads
        chosen = AGENT_DESIGNS.lookup(design)  # unknown: one line naming the choices
        if stem not in AGENT_STEMS:
            raise ConfigError(f"agent: unknown stem {stem!r} (known: {list(AGENT_STEMS)})")
        if norm not in AGENT_NORMS:
            raise ConfigError(f"agent: unknown norm {norm!r} (known: {list(AGENT_NORMS)})")
        if not 0.0 <= drop_rate < 1.0:
            raise ConfigError(f"agent: drop_rate must be in [0, 1), got {drop_rate}")
        if img_size % patch_size:
            raise ConfigError(f"agent: patch_size {patch_size} does not divide img_size {img_size}")
        self.design, self.stem_name, self.norm_name = design, stem, norm
        self.num_heads = num_heads
        self.pool_after = chosen.pool_blocks(depth)
        self.stem, stride = _build_stem(stem, shape.in_chans, embed_dim, patch_size)
        self.feature_grids = _feature_grids(img_size // stride, depth, self.pool_after, design)
        self.blocks = nn.ModuleList(
            AgentBlock(embed_dim, num_heads, norm, drop_rate) for _ in range(depth)
        )
        self.head = nn.Sequential(  # for the ViT's final norm, then the classifier
            nn.BatchNorm2d(embed_dim),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(embed_dim, shape.num_classes),
        )

    def block_weights(self, index: int) -> BlockWeights:
        raise NotImplementedError

    def activation(self, index: int) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x, self.block_weights(index), self.activation(index))
            features.append(x.flatten(2).transpose(1, 2))
            if index in self.pool_after:
                x = F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.head(x), features


def _feature_grids(
    grid: int, depth: int, pool_after: tuple[int, ...], design: str
) -> tuple[tuple[int, int], ...]:
    grids = []
    for index in range(depth):
        grids.append((grid, grid))
        if index in pool_after:
            if grid < 2:
                raise ConfigError(
                    f"agent design {design!r}: pooling after block {index} would shrink a "
                    f"{grid}x{grid} grid below 1x1"
                )
            grid //= 2
    return tuple(grids)


# ----------------------------------------------------------------------------------------------
# The two agents


class SharedAgent(AgentCNN):
    """The agent of shared mode: reads the ViT's block weights on every forward.

    The ViT is stored outside the module tree, so `agent.parameters()` are only the agent's own
    (stem, BatchNorms, head) and `nn.ModuleDict({"vit": vit, "agent": agent})` counts each
    parameter once. Consequences: `agent.to(...)`/`agent.train()` do not touch the ViT (move or
    switch the pair together), and `copy.deepcopy(agent)` copies the ViT too, breaking sharing.
    """

    def __init__(
        self,
        vit: VisionTransformer,
        *,
        design: str,
        stem: str,
        norm: str,
        num_classes: int,
        in_chans: int,
        drop_rate: float = 0.0,
    ):
        _check_supported_vit(vit)
        first_block = vit.blocks[0]
        shape = ViTShape(
            img_size=vit.patch_embed.img_size[0],
            patch_size=vit.patch_embed.patch_size[0],
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=vit.embed_dim,
            depth=len(vit.blocks),
            num_heads=first_block.attn.num_heads,
            mlp_ratio=first_block.mlp.fc1.out_features / vit.embed_dim,
        )
        super().__init__(shape, design=design, stem=stem, norm=norm, drop_rate=drop_rate)
        object.__setattr__(self, "_vit", vit)  # not a submodule: see the class docstring

    @property
    def vit(self) -> VisionTransformer:
        return self._vit

    def block_weights(self, index: int) -> BlockWeights:
        block = self._vit.blocks[index]
        qkv, proj, mlp = block.attn.qkv, block.attn.proj, block.mlp
        attn_dim = qkv.out_features // 3
        value_rows = slice(2 * attn_dim, 3 * attn_dim)  # timm's fused layout: q, k, v
        return BlockWeights(
            value_weight=qkv.weight[value_rows],
            value_bias=None if qkv.bias is None else qkv.bias[value_rows],
            proj_weight=proj.weight,
            proj_bias=proj.bias,
            fc1_weight=mlp.fc1.weight,
            fc1_bias=mlp.fc1.bias,
            fc2_weight=mlp.fc2.weight,
            fc2_bias=mlp.fc2.bias,
        )

    def activation(self, index: int) -> nn.Module:
        return self._vit.blocks[index].mlp.act

    def shared_parameters(self) -> list[nn.Parameter]:
        """The ViT parameters this agent reads (whole tensors: qkv also holds query/key rows)."""
        params = []
        for block in self._vit.blocks:
            for layer in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2):
                params.extend(p for p in (layer.weight, layer.bias) if p is not None)
        return params


def _check_supported_vit(vit: VisionTransformer) -> None:
    """The conversion covers timm's plain pre-norm Block; refuse what it would silently drop."""
    img_h, img_w = vit.patch_embed.img_size
    patch_h, patch_w = vit.patch_embed.patch_size
    if img_h != img_w or patch_h != patch_w:
        raise ConfigError("agent: only square images and patches are supported")
    for block in vit.blocks:
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(attn, "qkv") or getattr(attn, "gate", None) is not None:
            raise ConfigError("agent: ViT blocks must use timm's fused-qkv Attention")
        extras = [
            getattr(m, n, nn.Identity())
            for m, n in ((block, "ls1"), (block, "ls2"), (attn, "norm"), (block.mlp, "norm"))
        ]
        if any(not isinstance(m, nn.Identity) for m in extras):
            raise ConfigError("agent: ViT blocks with layer scale or extra norms are unsupported")


class _FactoredBlockWeights(nn.Module):
    """A factored agent block's weights: what shared mode reads from the ViT (no query/key)."""

    def __init__(self, embed_dim: int, hidden_dim: int):
        super().__init__()
        self.value = nn.Linear(embed_dim, embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)
        for layer in (self.value, self.proj, self.fc1, self.fc2):
            # timm's ViT init, so the standalone agent starts like the shared one would
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def weights(self) -> BlockWeights:
        return BlockWeights(
            self.value.weight,
            self.value.bias,
            self.proj.weight,
            self.proj.bias,
            self.fc1.weight,
            self.fc1.bias,
            self.fc2.weight,
            self.fc2.bias,
        )


class _DenseBlockWeights(nn.Module):
    """A dense agent block's weights: a full D x D matrix per used kernel position (the released
    conv_sl / conv_manyhead), then the MLP's two 1x1 convolutions.

    Init as the released code: Xavier-uniform over the whole kernel and the MLP weights, zero
    conv bias. The released MLP biases draw from N(1e-6, 1), std 1 (`nn.init.normal_(b, 1e-6)`
    sets the mean, most likely meant as the std); we start them at zero instead.
    """

    def __init__(self, embed_dim: int, hidden_dim: int, num_heads: int):
        super().__init__()
        kernel = torch.empty(embed_dim, embed_dim, num_heads)  # conv_manyhead's layout
        nn.init.xavier_uniform_(kernel)
        self.conv_weight = nn.Parameter(kernel.permute(2, 0, 1).contiguous())  # [H, D_out, D_in]
        self.conv_bias = nn.Parameter(torch.zeros(embed_dim))
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def weights(self) -> BlockWeights:
        return BlockWeights(
            None,
            None,
            None,
            None,
            self.fc1.weight,
            self.fc1.bias,
            self.fc2.weight,
            self.fc2.bias,
            head_mats=self.conv_weight,
            conv_bias=self.conv_bias,
        )


class StandaloneAgent(AgentCNN):
    """The agent with its own weights (agent-alone and joint modes); `conv`: dense (released) or
    factored (module doc); `drop_rate`: its MLP's dropout."""

    def __init__(
        self,
        shape: ViTShape,
        *,
        design: str,
        stem: str,
        norm: str,
        conv: str = "dense",
        drop_rate: float = 0.0,
    ):
        embed_dim, num_heads = shape.embed_dim, shape.num_heads
        if embed_dim % num_heads:
            raise ConfigError(
                f"agent: embed_dim {embed_dim} is not divisible by num_heads {num_heads}"
            )
        if conv not in AGENT_CONVS:
            raise ConfigError(f"agent: unknown conv {conv!r} (known: {list(AGENT_CONVS)})")
        hidden_dim = int(embed_dim * shape.mlp_ratio)
        if hidden_dim < 1:
            raise ConfigError(
                f"agent: mlp_ratio must give a hidden width >= 1, got {shape.mlp_ratio}"
            )
        super().__init__(shape, design=design, stem=stem, norm=norm, drop_rate=drop_rate)
        self.conv = conv
        self.block_params = nn.ModuleList(
            _DenseBlockWeights(embed_dim, hidden_dim, num_heads)
            if conv == "dense"
            else _FactoredBlockWeights(embed_dim, hidden_dim)
            for _ in range(shape.depth)
        )
        self.act = nn.GELU()  # timm's ViT default activation

    def block_weights(self, index: int) -> BlockWeights:
        return self.block_params[index].weights()

    def activation(self, index: int) -> nn.Module:
        return self.act
