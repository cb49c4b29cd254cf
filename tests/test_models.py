"""The ViT, the agent CNN built from it, and the generalized convolution, on tiny models."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import SMALL_SHAPE, small_vit
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from trainers.agent import (
    AGENT_DESIGNS,
    AGENT_NORMS,
    AGENT_STEMS,
    AgentDesign,
    SharedAgent,
    StandaloneAgent,
    conv_kernel_size,
    generalized_conv2d,
    generalized_conv_bias,
    head_matrices,
    literal_generalized_conv,
    register_agent_design,
    resnet_stem_strides,
)
from trainers.errors import ConfigError
from trainers.vit import build_vit, vit_forward_features


def randomize_biases(module: nn.Module, seed: int = 1) -> None:
    """timm zero-initialises biases; the conversion must be right with non-zero ones."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def shared(vit, design="base", stem="vit_like", norm="pre") -> SharedAgent:
    return SharedAgent(vit, design=design, stem=stem, norm=norm, num_classes=10, in_chans=1)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------
# ViT


def test_vit_forward_features_matches_timm_exactly():
    vit = small_vit().eval()
    x = torch.randn(3, 1, 16, 16)
    logits, tokens = vit_forward_features(vit, x)
    assert torch.equal(logits, vit(x))
    reference = vit.forward_intermediates(x, norm=False, output_fmt="NLC", intermediates_only=True)
    assert len(tokens) == len(reference) == 2
    for ours, theirs in zip(tokens, reference, strict=True):
        assert ours.shape == (3, 16, 36)  # class token dropped, 4x4 grid
        assert torch.equal(ours, theirs)


def test_vit_is_prenorm_with_class_token_and_qkv_bias():
    vit = small_vit()
    assert vit.cls_token is not None and vit.pos_embed.shape == (1, 17, 36)
    assert vit.blocks[0].attn.qkv.bias is not None
    assert vit.blocks[0].attn.qkv.weight.shape == (3 * 36, 36)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(patch_size=5), "does not divide"),
        (dict(num_heads=5), "not divisible"),
        (dict(drop_rate=1.0), "drop_rate"),
    ],
)
def test_vit_impossible_configs_raise_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_vit(**overrides)


# ----------------------------------------------------------------------------------------------
# Generalized convolution


@pytest.mark.parametrize("num_heads, k", [(1, 1), (4, 2), (6, 3), (9, 3), (10, 4)])
def test_kernel_size_is_ceil_sqrt_heads(num_heads, k):
    assert conv_kernel_size(num_heads) == k


@pytest.mark.parametrize("num_heads", [4, 6, 9, 10])
def test_conv_equals_literal_loops(num_heads):
    # 4 heads: k = 2 (even, offsets -1/0); 6: k = 3 with 3 empty positions; 10: k = 4.
    torch.manual_seed(num_heads)
    dim, grid_hw = 8, (5, 4)  # non-square grid catches row/column mix-ups
    head_mats = torch.randn(num_heads, dim, dim, dtype=torch.float64)
    bias = torch.randn(dim, dtype=torch.float64)
    tokens = torch.randn(2, 20, dim, dtype=torch.float64)
    x = tokens.transpose(1, 2).reshape(2, dim, *grid_hw)
    conv = generalized_conv2d(x, head_mats, bias).flatten(2).transpose(1, 2)
    literal = literal_generalized_conv(tokens, grid_hw, head_mats, bias)
    assert conv.shape == literal.shape == (2, 20, dim)
    torch.testing.assert_close(conv, literal, rtol=0, atol=1e-12)


def test_literal_offsets_by_hand_for_even_kernel():
    # 4 heads, k = 2: head h reads offset (h // 2 - 1, h % 2 - 1); identity M_h isolates each.
    grid = torch.arange(1.0, 10.0).reshape(1, 9, 1)  # 3x3 grid holding 1..9, one channel
    for head, expected in enumerate(
        [[0, 0, 0, 0, 1, 2, 0, 4, 5], [0, 0, 0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 0, 4, 5, 0, 7, 8]]
    ):
        mats = torch.zeros(4, 1, 1)
        mats[head] = 1.0
        out = literal_generalized_conv(grid, (3, 3), mats).flatten().tolist()
        assert out == expected
        conv = generalized_conv2d(grid.reshape(1, 1, 3, 3), mats, None).flatten().tolist()
        assert conv == expected


@pytest.mark.parametrize("num_heads", [4, 6, 9])
def test_agent_attention_is_vit_attention_with_impulse_maps(num_heads):
    """The derivation of M_h and of the bias from timm's own weights: the attention block with
    head h's attention map replaced by the impulse at offset(h), over a zero-padded token grid
    (rows still sum to 1; a padding token is x = 0, whose value is b_v), equals the conv."""
    vit = small_vit(num_heads=num_heads).double()
    randomize_biases(vit)
    attn, agent = vit.blocks[0].attn, shared(vit).double()
    k, height, width, dim = conv_kernel_size(num_heads), 4, 4, 36
    before, after = k // 2, k - 1 - k // 2
    x = torch.randn(2, dim, height, width, dtype=torch.float64)
    x_pad = F.pad(x, (before, after, before, after)).permute(0, 2, 3, 1)  # [B, Hp, Wp, D]
    values = attn.qkv(x_pad)[..., 2 * dim :].unflatten(-1, (num_heads, dim // num_heads))
    heads = [
        values[:, h // k : h // k + height, h % k : h % k + width, h] for h in range(num_heads)
    ]
    expected = attn.proj(torch.cat(heads, dim=-1)).permute(0, 3, 1, 2)
    got = agent.blocks[0].conv_attention(x, agent.block_weights(0))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_bias_includes_value_bias_through_output_projection():
    proj_weight, value_bias, proj_bias = torch.randn(3, 3), torch.randn(3), torch.randn(3)
    bias = generalized_conv_bias(value_bias, proj_weight, proj_bias)
    torch.testing.assert_close(bias, proj_bias + proj_weight @ value_bias)
    assert generalized_conv_bias(None, proj_weight, None) is None


def test_head_matrices_by_hand():
    # 2 heads of dim 1 on D = 2: M_h = W_o[:, h] W_v[h, :] (an outer product).
    value_weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    proj_weight = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    mats = head_matrices(value_weight, proj_weight, num_heads=2)
    assert mats[0].tolist() == [[5.0, 10.0], [7.0, 14.0]]
    assert mats[1].tolist() == [[18.0, 24.0], [24.0, 32.0]]


# ----------------------------------------------------------------------------------------------
# Shared agent


def test_agent_only_step_moves_value_proj_mlp_but_not_query_key_or_patch_embed():
    vit = small_vit()
    agent = shared(vit)
    before = {name: p.detach().clone() for name, p in vit.named_parameters()}
    optimizer = torch.optim.SGD(list(vit.parameters()) + list(agent.parameters()), lr=0.5)
    logits, _ = agent(torch.randn(4, 1, 16, 16))
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    after = dict(vit.named_parameters())
    dim = 36
    for i in range(2):
        qkv_w = f"blocks.{i}.attn.qkv.weight"
        assert torch.equal(after[qkv_w][: 2 * dim], before[qkv_w][: 2 * dim])  # query, key
        assert not torch.equal(after[qkv_w][2 * dim :], before[qkv_w][2 * dim :])  # value
        qkv_b = f"blocks.{i}.attn.qkv.bias"
        assert torch.equal(after[qkv_b][: 2 * dim], before[qkv_b][: 2 * dim])
        assert not torch.equal(after[qkv_b][2 * dim :], before[qkv_b][2 * dim :])
        for name in ("attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"):
            assert not torch.equal(after[f"blocks.{i}.{name}"], before[f"blocks.{i}.{name}"])
    untouched = [n for n in before if n.startswith(("patch_embed", "pos_embed", "cls_token"))]
    untouched += [n for n in before if ".norm" in n or n.startswith(("norm", "head"))]
    for name in untouched:
        assert torch.equal(after[name], before[name]), name
        assert after[name].grad is None, name


def test_agent_does_not_register_vit_parameters():
    vit = small_vit()
    agent = shared(vit, design="res_like", stem="resnet_like")
    vit_ids = {id(p) for p in vit.parameters()}
    assert not vit_ids & {id(p) for p in agent.parameters()}
    pair = nn.ModuleDict({"vit": vit, "agent": agent})
    assert count(pair) == count(vit) + count(agent)
    assert not any(k.startswith("_vit") for k in agent.state_dict())
    assert {id(p) for p in agent.shared_parameters()} <= vit_ids
    assert len(agent.shared_parameters()) == 2 * 8  # qkv, proj, fc1, fc2 (weight, bias) x depth


VIT_S = dict(img_size=224, patch_size=16, in_chans=3, num_classes=100, embed_dim=288, depth=6)


def test_vit_s_parameter_counts_match_paper():
    vit = build_vit(
        **VIT_S, num_heads=9, mlp_ratio=4.0, drop_rate=0.1, attn_drop_rate=0.0, drop_path_rate=0.0
    )
    assert count(vit) == 6_302_404  # paper: ViT-S 6.30M
    own = {
        stem: count(
            SharedAgent(vit, design="res_like", stem=stem, norm="pre", num_classes=100, in_chans=3)
        )
        for stem in AGENT_STEMS
    }
    # Agent own = stem + 2 BN per block + head BN + linear. vit_like: 221,472 + 6,912 + 576 +
    # 28,900; the total 6,560,264 is the paper's "6.30M -> 6.56M". resnet_like (the stem of the
    # released res-like configs): 9,408 + 128 + 166,176 + ... -> 6.51M in total.
    assert own == {"vit_like": 257_860, "resnet_like": 212_100}
    assert count(vit) + own["vit_like"] == 6_560_264


COMBOS = [(d, s, n) for d in ("base", "res_like") for s in AGENT_STEMS for n in AGENT_NORMS]


@pytest.mark.parametrize("design, stem, norm", COMBOS)
def test_every_agent_parameter_gets_a_finite_gradient(design, stem, norm):
    vit = small_vit(num_heads=4)  # k = 2
    agent = shared(vit, design=design, stem=stem, norm=norm)
    logits, features = agent(torch.randn(4, 1, 16, 16))
    assert logits.shape == (4, 10)
    assert [f.shape[1] for f in features] == [h * w for h, w in agent.feature_grids]
    (logits.sum() + sum(f.square().mean() for f in features)).backward()
    for name, param in agent.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    for param in agent.shared_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()


def test_eval_mode_is_deterministic_and_norm_placement_matters():
    vit = small_vit().eval()
    x = torch.randn(4, 1, 16, 16)
    pre, post = shared(vit, norm="pre"), shared(vit, norm="post")
    post.load_state_dict(pre.state_dict())  # same own parameters, only the placement differs
    pre.train()(x), post.train()(x)  # move BN running stats away from the init
    pre.eval(), post.eval()
    with torch.no_grad():
        first, second = pre(x)[0], pre(x)[0]
        assert torch.equal(first, second)
        assert (pre(x)[0] - post(x)[0]).abs().max() > 1e-3


def test_res_like_grid_shrinks_four_times_per_pool():
    vit = small_vit(depth=3)
    agent = shared(vit, design="res_like")
    _, features = agent(torch.randn(2, 1, 16, 16))
    assert agent.feature_grids == ((4, 4), (2, 2), (1, 1))
    assert [f.shape[1] for f in features] == [16, 4, 1]
    base = shared(vit, design="base")
    assert [f.shape[1] for f in base(torch.randn(2, 1, 16, 16))[1]] == [16, 16, 16]


def test_features_are_taken_before_the_blocks_pooling():
    vit = small_vit().eval()
    agent = shared(vit, design="res_like").eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        _, features = agent(x)
        h0 = agent.blocks[0](agent.stem(x), agent.block_weights(0), agent.activation(0))
        h1 = agent.blocks[1](F.avg_pool2d(h0, 2), agent.block_weights(1), agent.activation(1))
    torch.testing.assert_close(features[0], h0.flatten(2).transpose(1, 2), rtol=0, atol=0)
    torch.testing.assert_close(features[1], h1.flatten(2).transpose(1, 2), rtol=0, atol=0)


@pytest.mark.parametrize(
    "patch, strides, img",
    [(2, (2, 1, 1), 16), (4, (2, 2, 1), 16), (8, (2, 2, 2), 16), (16, (2, 2, 2), 32)],
)
def test_resnet_stem_stride_rule(patch, strides, img):
    assert resnet_stem_strides(patch) == strides
    vit = small_vit(patch_size=patch, img_size=img)
    agent = shared(vit, stem="resnet_like")
    stride = strides[0] * strides[1] * strides[2]
    assert agent.feature_grids[0] == (img // stride, img // stride)
    assert agent(torch.randn(1, 1, img, img))[1][0].shape[1] == (img // stride) ** 2
    assert (img // stride) % (img // patch) == 0  # a whole multiple of the ViT's grid


def test_config_errors():
    vit = small_vit(img_size=8)  # 2x2 grid: one pooling fits, a second would go below 1x1
    with pytest.raises(ConfigError, match="below 1x1"):
        shared(vit, design="res_like")
    vit = small_vit()
    for option, value in (("design", "nope"), ("stem", "nope"), ("norm", "sandwich")):
        with pytest.raises(ConfigError, match=f"unknown (agent )?{option} '?{value}"):
            shared(vit, **{option: value})
    with pytest.raises(ConfigError, match="does not divide"):
        StandaloneAgent(
            dataclasses.replace(SMALL_SHAPE, patch_size=3),
            design="base",
            stem="vit_like",
            norm="pre",
        )
    layer_scaled = VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, embed_dim=36, depth=1, num_heads=9, init_values=1e-5
    )
    with pytest.raises(ConfigError, match="layer scale"):
        shared(layer_scaled)
    with pytest.raises(ConfigError, match="depth is 2"):
        AgentDesign("deep", (5,)).pool_blocks(2)


def test_design_registry():
    assert AGENT_DESIGNS["base"].pool_blocks(6) == ()
    assert AGENT_DESIGNS["res_like"].pool_blocks(6) == (0, 1)
    with pytest.raises(ValueError, match="already registered"):
        register_agent_design(AgentDesign("base"))
    try:

        @register_agent_design("pool_last_test")
        def _pool_last(depth):
            return (depth - 1,)

        assert AGENT_DESIGNS["pool_last_test"].pool_blocks(3) == (2,)
        assert shared(small_vit(), design="pool_last_test").feature_grids == ((4, 4), (4, 4))
    finally:
        AGENT_DESIGNS.pop("pool_last_test", None)


# ----------------------------------------------------------------------------------------------
# Standalone agent


def standalone(num_heads=9, norm="pre", conv="factored"):
    shape = dataclasses.replace(SMALL_SHAPE, num_heads=num_heads)
    return StandaloneAgent(shape, design="res_like", stem="vit_like", norm=norm, conv=conv)


@pytest.mark.parametrize("conv", ["dense", "factored"])
@pytest.mark.parametrize("num_heads", [9, 6])
def test_standalone_agent_owns_exactly_what_it_uses(conv, num_heads):
    agent = standalone(num_heads=num_heads, conv=conv)
    dim, hidden, depth = 36, 72, 2
    mlp = (dim * hidden + hidden) + (hidden * dim + dim)
    # dense: a full D x D matrix per head's kernel position (released conv_sl: 9 x 36^2 + 36 =
    # 11,700 per block; conv_manyhead with 6 heads: 7,812); factored: W_v, W_o (2,664)
    attention = num_heads * dim * dim + dim if conv == "dense" else 2 * (dim * dim + dim)
    own_parts = (16 * dim + dim) + depth * 4 * dim + 2 * dim + (dim * 10 + 10)
    assert count(agent) == depth * (attention + mlp) + own_parts
    logits, features = agent(torch.randn(4, 1, 16, 16))
    (logits.sum() + features[-1].square().mean()).backward()
    for name, param in agent.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_standalone_with_the_vits_weights_equals_the_shared_agent():
    vit = small_vit(num_heads=6)
    randomize_biases(vit)
    agent = shared(vit, design="res_like", norm="post").eval()
    alone = standalone(num_heads=6, norm="post", conv="factored").eval()
    alone.load_state_dict(agent.state_dict(), strict=False)
    with torch.no_grad():
        for i, params in enumerate(alone.block_params):
            for target, source in zip(params.weights(), agent.block_weights(i), strict=True):
                if target is not None:  # the dense pair is None on both sides
                    target.copy_(source)
        x = torch.randn(3, 1, 16, 16)
        torch.testing.assert_close(alone(x)[0], agent(x)[0], rtol=0, atol=0)


def test_dense_agent_with_the_vits_head_matrices_equals_the_shared_agent():
    # the dense kernel holding M_h = W_o^h W_v^h (and b_o + W_o b_v) is the shared agent exactly
    vit = small_vit(num_heads=9).double()
    randomize_biases(vit)
    agent = shared(vit, design="res_like", norm="pre").double().eval()
    alone = standalone(num_heads=9, norm="pre", conv="dense").double().eval()
    alone.load_state_dict(agent.state_dict(), strict=False)
    with torch.no_grad():
        for i, params in enumerate(alone.block_params):
            w = agent.block_weights(i)
            params.conv_weight.copy_(head_matrices(w.value_weight, w.proj_weight, 9))
            params.conv_bias.copy_(generalized_conv_bias(w.value_bias, w.proj_weight, w.proj_bias))
            for layer, weight, bias in (
                (params.fc1, w.fc1_weight, w.fc1_bias),
                (params.fc2, w.fc2_weight, w.fc2_bias),
            ):
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
        x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
        torch.testing.assert_close(alone(x)[0], agent(x)[0], rtol=0, atol=1e-12)


def test_dense_nine_head_kernel_is_a_plain_3x3_convolution():
    # the released Agent-S conv_sl is nn.Conv2d(D, D, 3, padding=1): kernel position (r, c) is
    # raster position h = 3r + c, the same cross-correlation as ours
    torch.manual_seed(0)
    agent = standalone(num_heads=9, conv="dense").double()
    params = agent.block_params[0]
    conv = torch.nn.Conv2d(36, 36, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(params.conv_weight.permute(1, 2, 0).reshape(36, 36, 3, 3))
        conv.bias.copy_(params.conv_bias)
    x = torch.randn(2, 36, 5, 5, dtype=torch.float64)
    got = agent.blocks[0].conv_attention(x, params.weights())
    torch.testing.assert_close(got, conv(x), rtol=0, atol=1e-12)


def test_post_norm_is_x_plus_bn_of_the_branch():
    # the released post-norm block (cnn_blocks.py post_forward): x + BN(f(x)) for each branch;
    # post_sum is the classic BN(x + f(x))
    torch.manual_seed(0)
    agent = standalone(norm="post", conv="dense").double().eval()
    block, weights = agent.blocks[0], agent.block_params[0].weights()
    for bn in (block.norm1, block.norm2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 36, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        y = x + block.norm1(block.conv_attention(x, weights))
        expected = y + block.norm2(block.conv_mlp(y, weights, agent.act))
        torch.testing.assert_close(block(x, weights, agent.act), expected, rtol=0, atol=0)
        block.norm = "post_sum"
        y = block.norm1(x + block.conv_attention(x, weights))
        expected = block.norm2(y + block.conv_mlp(y, weights, agent.act))
        torch.testing.assert_close(block(x, weights, agent.act), expected, rtol=0, atol=0)
