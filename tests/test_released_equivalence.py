"""bootstudy's defaults are the released method: equal, to 1e-10 in float64, to what the released
code (zhfeing/Bootstrapping-ViTs-pytorch @85f12e9, cv-lib @bootstrapping_vits) computed on the
same weights and inputs.

The fixture (tests/fixtures/released_bootstrapping_vits.pt; how it was made: README.md beside it)
holds small random-weight models built by the reference from its released YAML configs (shrunk),
their inputs, and the reference's outputs: logits, every loss term by the reference's own name,
the weighted totals at epoch 0 and at epoch 120 of 240, their gradients w.r.t. every parameter,
and the BatchNorm running stats after the forward. The project keeps no reference code: only
these numbers. Here each case is built through bootstudy's public builders from a `TrainConfig`
that states the sizes and layout and leaves everything else (loss weights, hint reduction, the
agent's convolution, the post-norm block) at its default, the reference's weights are loaded by
a name map, and every quantity is compared:

    vit     config/cifar100/vit/vit-small.yaml                    ViT logits
    shared  config/cifar100/shared/agent-small-res_like-vit-small  9 heads, pre-norm, ResNet stem
    joint   config/cifar100/joint/agent-base-res_like-vit-base     6 heads, post-norm, dense agent
    agent   config/cifar100/cnn/agent-small.yaml (conv_sl, ViT-like stem) and
            config/cifar100/cnn/agent-base-res_like.yaml (conv_manyhead, post-norm)

The ViT grid is 4x4 and the ResNet stem's 8x8, the agent pools after blocks 0 and 1: block 0's
hint averages the agent's tokens, block 2's the ViT's (the released avg-pool resampling, both
ways).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from trainers.config import TrainConfig
from trainers.losses import hint_loss
from trainers.modes import Mode, build_mode, used_fields

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

FIXTURE = Path(__file__).parent / "fixtures" / "released_bootstrapping_vits.pt"
TOL = 1e-10  # measured agreement <= 1.5e-14; each released choice flipped differs by >= 0.1


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def unpack(group: dict) -> dict[str, torch.Tensor]:
    """The fixture stores each set of tensors as one flat tensor with names and shapes."""
    sizes = [int(torch.Size(s).numel()) for s in group["shapes"]]
    chunks = torch.split(group["values"], sizes)
    return {n: c.view(s) for n, c, s in zip(group["names"], chunks, group["shapes"], strict=True)}


# --- reference parameter names -> bootstudy's (name, layout) --------------------------------------

Layout = Callable[[torch.Tensor], torch.Tensor]
SAME: Layout = lambda t: t  # noqa: E731

_VIT_BLOCK = {  # the reference's EncoderLayer -> timm's Block
    "attention.linear_qkv": "attn.qkv",  # both fused as q, k, v rows, heads contiguous
    "attention.linear_out": "attn.proj",
    "mlp.linear1": "mlp.fc1",
    "mlp.linear2": "mlp.fc2",
    "norm1": "norm1",
    "norm2": "norm2",
}
_VIT_TOP = {
    "patch_embed.proj": "patch_embed.proj",
    "transformer.norm": "norm",
    "cls_head": "head",
}


def vit_name(ref_name: str) -> tuple[str, Layout]:
    """A reference ViT tensor's timm name and layout."""
    if ref_name == "pos_embed.pos_embed":  # the reference's sequences are [N, B, D]
        return "pos_embed", lambda t: t.transpose(0, 1)
    if ref_name == "cls_token":
        return "cls_token", SAME
    block = re.fullmatch(r"transformer\.layers\.(\d+)\.(.+)\.(weight|bias)", ref_name)
    if block:
        index, part, leaf = block.groups()
        return f"blocks.{index}.{_VIT_BLOCK[part]}.{leaf}", SAME
    part, leaf = ref_name.rsplit(".", 1)
    return f"{_VIT_TOP[part]}.{leaf}", SAME


_AGENT_TOP = {  # the reference's CNN / MutualCNN -> bootstudy's AgentCNN
    "input_proj.conv1": "stem.conv1",  # resnet_like stem
    "input_proj.norm": "stem.norm",
    "input_proj.conv2": "stem.conv2",
    "input_proj": "stem",  # vit_like stem: the patch conv itself
    "bn": "head.0",
    "linear": "head.4",
}
_AGENT_BLOCK: dict[str, tuple[str, Layout]] = {
    "norm1.": ("blocks.{i}.norm1.", SAME),
    "norm2.": ("blocks.{i}.norm2.", SAME),
    # conv_sl: a 3x3 Conv2d [D, D, 3, 3]; kernel position h = raster index, as conv_weight[h]
    "cnn_block.conv.weight": (
        "block_params.{i}.conv_weight",
        lambda t: t.flatten(2).permute(2, 0, 1),
    ),
    "cnn_block.conv.bias": ("block_params.{i}.conv_bias", SAME),
    # conv_manyhead: [D, D, H], position h's matrix last
    "cnn_block.weight": ("block_params.{i}.conv_weight", lambda t: t.permute(2, 0, 1)),
    "cnn_block.bias": ("block_params.{i}.conv_bias", SAME),
    # the MLP's 1x1 convolutions [out, in, 1, 1] as nn.Linear
    "mlp_block.conv1.weight": ("block_params.{i}.fc1.weight", lambda t: t[:, :, 0, 0]),
    "mlp_block.conv1.bias": ("block_params.{i}.fc1.bias", SAME),
    "mlp_block.conv2.weight": ("block_params.{i}.fc2.weight", lambda t: t[:, :, 0, 0]),
    "mlp_block.conv2.bias": ("block_params.{i}.fc2.bias", SAME),
}


def agent_name(ref_name: str) -> tuple[str, Layout]:
    """A reference agent tensor's bootstudy name and layout."""
    block = re.fullmatch(r"layers\.(\d+)\.(.+)", ref_name)
    if block:
        index, rest = block.groups()
        for part, (target, layout) in _AGENT_BLOCK.items():
            if rest.startswith(part):
                return target.format(i=index) + rest[len(part) :], layout
        raise KeyError(ref_name)
    part, leaf = ref_name.rsplit(".", 1)
    return f"{_AGENT_TOP[part]}.{leaf}", SAME


def load(module: torch.nn.Module, weights: dict, rename: Callable[[str], tuple[str, Layout]]):
    """Copy the reference's tensors into `module` (float64); every parameter must be covered."""
    targets = dict(module.named_parameters())
    targets |= {n: b for n, b in module.named_buffers() if "running" in n}
    filled = set()
    with torch.no_grad():
        for ref_name, value in unpack(weights).items():
            name, layout = rename(ref_name)
            if name not in targets:
                pytest.fail(f"bootstudy has no {name} for the reference's {ref_name}")
            value = layout(value.double())
            assert targets[name].shape == value.shape, (name, targets[name].shape, value.shape)
            targets[name].copy_(value)
            filled.add(name)
        for name, buffer in module.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.fill_(7)  # as the fixture's (a momentum BN does not read it)
    assert filled == set(targets), f"not from the reference: {sorted(set(targets) - filled)}"


# --- bootstudy's side -------------------------------------------------------------------------


def config(mode: str, size: dict, **layout) -> TrainConfig:
    """The released defaults at the fixture's size: only shapes and the agent's layout stated
    (the tiny preset has no dropout, as the fixture's models; `build` checks)."""
    values = {
        "mode": mode,
        "preset": "tiny",
        "embed_dim": size["embed_dim"],
        "num_heads": size["num_heads"],
        "mlp_ratio": size["dim_feedforward"] / size["embed_dim"],
        "depth": 3,
        "patch_size": 16,
        "img_size": 64,
        "epochs": 240,
        **layout,
    }
    return TrainConfig.from_dict(used_fields(mode, values))


def build(cfg: TrainConfig, ref: dict) -> Mode:
    meta = ref["meta"]
    mode = build_mode(cfg, meta["num_classes"], meta["in_chans"], meta["img_size"])
    for network in mode.networks.values():
        network.double().train()
        rates = [m.p for m in network.modules() if isinstance(m, torch.nn.Dropout)]
        assert not any(rates), f"the fixture's models have no dropout, got rates {rates}"
    return mode


def inputs(ref: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return ref["inputs"]["x"].double(), ref["inputs"]["y"]


def max_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return (actual.detach().double() - expected.double()).abs().max().item()


def running_diffs(agent: torch.nn.Module, expected: dict) -> dict[str, float]:
    buffers = dict(agent.named_buffers())
    diffs = {}
    for ref_name, value in unpack(expected).items():
        name, _ = agent_name(ref_name)
        diffs[f"running {name}"] = max_diff(buffers[name], value)
    counts = [int(b) for n, b in buffers.items() if n.endswith("num_batches_tracked")]
    diffs["num_batches_tracked"] = float(max(abs(c - 8) for c in counts))
    return diffs


def assert_close(diffs: dict[str, float]) -> None:
    bad = sorted(((v, k) for k, v in diffs.items() if not v <= TOL), reverse=True)
    worst = ", ".join(f"{k}: {v:.3g}" for v, k in bad[:6])
    if bad:
        pytest.fail(f"{len(bad)} of {len(diffs)} quantities differ from the released code: {worst}")


# --- the cases --------------------------------------------------------------------------------

# bootstudy's weighted term -> (the reference's loss key, its weight_dict key), per mode
TERMS = {
    "shared": {
        "cls_vit": ("joint.cls_vit", "cls_vit"),
        "cls_agent": ("joint.cls_cnn", "cls_cnn"),
        "kd_vit": ("joint.kd_vit.cnn", "kd_vit"),
        "kd_agent": ("joint.kd_cnn.vit", "kd_cnn"),
        "hint": ("joint.hint_vit.cnn_layer_{i}", "hint_vit"),
    },
    "joint": {
        "cls_vit": ("vit.cls", "cls"),
        "cls_agent": ("cnn.cls", "cls"),
        "kd_vit": ("vit.kd.cnn", "kd"),
        "kd_agent": ("cnn.kd.vit", "kd"),
        "hint": ("vit.hint_vit.cnn_layer_{i}", "hint_vit"),
    },
}
PAIRS = {  # mode -> (ViT weights, agent weights, size, agent layout)
    "shared": ("vit_s", "agent_shared", "size_s", {"agent_norm": "pre"}),
    "joint": ("vit_b", "agent_b", "size_b", {"agent_norm": "post"}),
}
RESNET_RES_LIKE = {"agent_stem": "resnet_like", "agent_design": "res_like"}


def pair_diffs(ref: dict, mode_name: str) -> dict[str, float]:
    """Every quantity of one shared/joint case: max |bootstudy - released|."""
    vit_key, agent_key, size_key, layout = PAIRS[mode_name]
    case, depth = ref[mode_name], ref["meta"]["depth"]
    cfg = config(mode_name, ref["meta"][size_key], **RESNET_RES_LIKE, **layout)
    mode = build(cfg, ref)
    vit, agent = mode.networks["vit"], mode.networks["agent"]
    load(vit, ref["weights"][vit_key], vit_name)
    load(agent, ref["weights"][agent_key], agent_name)
    x, y = inputs(ref)
    outputs = mode.forward(x)

    diffs = {
        "logits vit": max_diff(outputs["vit_logits"], case["logits_vit"]),
        "logits agent": max_diff(outputs["agent_logits"], case["logits_agent"]),
    }
    diffs |= running_diffs(agent, case["running"])
    raw, weights = case["losses"], ref["configs"][mode_name]["loss"]["weight_dict"]
    for i in range(depth):  # each block's hint, unweighted
        own = hint_loss(
            outputs["vit_features"],
            outputs["agent_features"],
            layers=(i,),
            distance=cfg.hint_distance,
            resample=cfg.resample,
            vit_grid=mode.grids[0],
            agent_grids=mode.grids[1],
        )
        diffs[f"hint block {i}"] = max_diff(own, raw[TERMS[mode_name]["hint"][0].format(i=i)])

    named = {f"vit.{n}": p for n, p in vit.named_parameters()}
    named |= {f"agent.{n}": p for n, p in agent.named_parameters()}
    epochs = ref["meta"]["epochs"]
    for epoch in (0, ref["meta"]["mid_epoch"]):
        terms = mode.loss_terms(outputs, y, epoch)
        decay = 1.0 - epoch / epochs  # the released DecayStrategy, on hint_vit only
        for term, (key, weight_key) in TERMS[mode_name].items():
            if term == "hint":
                layers = [raw[key.format(i=i)] for i in range(depth)]
                expected = weights[weight_key] * decay * sum(layers)
            else:
                expected = weights[weight_key] * raw[key]
            diffs[f"{term} @{epoch}"] = max_diff(terms[term], expected)
        total = sum(terms.values())
        diffs[f"total @{epoch}"] = max_diff(total, case["totals"][str(epoch)])
        if mode_name == "joint":  # the released trainer steps each network on its own sum
            per_network = case[f"per_model_{epoch}"]
            vit_sum = sum(v for k, v in terms.items() if k in mode.vit_terms)
            agent_sum = sum(v for k, v in terms.items() if k not in mode.vit_terms)
            diffs[f"vit objective @{epoch}"] = max_diff(vit_sum, per_network["vit"])
            diffs[f"agent objective @{epoch}"] = max_diff(agent_sum, per_network["cnn"])
        diffs |= grad_diffs(total, named, case["grads"], epoch)
    return diffs


def grad_diffs(total, named: dict, grads: dict, epoch: int) -> dict[str, float]:
    """The gradient of `total` w.r.t. every parameter against the reference's. The fixture holds
    the agent's at epoch 0 only: they do not depend on the hint weight (its targets are
    detached)."""
    expected = unpack(grads["0"])
    if epoch:
        expected |= unpack(grads[str(epoch)])
    got = torch.autograd.grad(total, list(named.values()), retain_graph=True, allow_unused=True)
    got = dict(zip(named, got, strict=True))
    diffs, covered = {}, set()
    for ref_name, value in expected.items():
        network, rest = ref_name.split(".", 1)
        name, layout = (vit_name if network == "vit" else agent_name)(rest)
        grad = got[f"{network}.{name}"]
        grad = torch.zeros_like(value) if grad is None else grad
        diffs[f"grad {network}.{name} @{epoch}"] = max_diff(grad, layout(value))
        covered.add(f"{network}.{name}")
    assert covered == set(named), f"no reference gradient for {sorted(set(named) - covered)}"
    return diffs


def vit_diffs(ref: dict) -> dict[str, float]:
    mode = build(config("vit", ref["meta"]["size_s"]), ref)
    load(mode.networks["vit"], ref["weights"]["vit_s"], vit_name)
    x, _ = inputs(ref)
    return {"logits vit": max_diff(mode.forward(x)["vit_logits"], ref["vit"]["logits"])}


AGENTS = {  # fixture case -> (weights, size, agent layout)
    "agent_s": ("agent_s", "size_s", {"agent_stem": "vit_like", "agent_design": "base"}),
    "agent_b": ("agent_b", "size_b", {**RESNET_RES_LIKE, "agent_norm": "post"}),
}


def agent_diffs(ref: dict, case: str) -> dict[str, float]:
    weights, size_key, layout = AGENTS[case]
    mode = build(config("agent", ref["meta"][size_key], **layout), ref)
    agent = mode.networks["agent"]
    load(agent, ref["weights"][weights], agent_name)
    x, _ = inputs(ref)
    diffs = {"logits agent": max_diff(mode.forward(x)["agent_logits"], ref[case]["logits"])}
    return diffs | running_diffs(agent, ref[case]["running"])


# --- the tests --------------------------------------------------------------------------------


def test_vit_logits_equal_the_released_vit(ref):
    assert_close(vit_diffs(ref))


@pytest.mark.parametrize("mode_name", ["shared", "joint"])
def test_pair_mode_equals_the_released_method(ref, mode_name):
    """Logits, BN running stats, each block's hint, every weighted loss term and the total at
    epochs 0 and 120 of 240, and the gradients of both totals w.r.t. every parameter."""
    diffs = pair_diffs(ref, mode_name)
    assert len([k for k in diffs if k.startswith("grad")]) > 40  # not vacuous
    assert_close(diffs)


@pytest.mark.parametrize("case", list(AGENTS))
def test_agent_alone_equals_the_released_agent(ref, case):
    assert_close(agent_diffs(ref, case))


def test_fixture_is_small_and_from_the_stated_reference(ref):
    assert FIXTURE.stat().st_size < 750_000
    assert ref["meta"]["reference"] == "zhfeing/Bootstrapping-ViTs-pytorch@85f12e9"
    assert ref["meta"]["cv_lib"] == "zhfeing/cv-lib-PyTorch@bootstrapping_vits"
