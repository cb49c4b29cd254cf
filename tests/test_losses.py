"""KD, feature hint, hint-weight decay and gradient alignment, with numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import small_vit

from trainers.agent import SharedAgent
from trainers.errors import ConfigError
from trainers.losses import hint_loss, hint_weight, kd_loss, resample_tokens
from trainers.pcgrad import aligned_backward, project_conflicting
from trainers.vit import vit_forward_features

# ----------------------------------------------------------------------------------------------
# Knowledge distillation


def test_kd_is_zero_for_equal_logits():
    logits = torch.randn(5, 7)
    assert kd_loss(logits, logits.clone(), temperature=4.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_equals_t_squared_kl_by_hand():
    # Row 1: teacher (ln 3, 0) -> at T = 2 p_t = (sqrt3, 1) / (sqrt3 + 1); student uniform.
    # Row 2: teacher uniform, student (0, ln 4) -> p_s = (1/3, 2/3) at T = 2.
    student = torch.tensor([[0.0, 0.0], [0.0, math.log(4.0)]], dtype=torch.float64)
    teacher = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    r3 = math.sqrt(3.0)
    p1 = (r3 / (r3 + 1), 1 / (r3 + 1))
    kl1 = sum(p * math.log(p / 0.5) for p in p1)
    kl2 = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    expected = 4.0 * (kl1 + kl2) / 2  # T^2 x batch mean
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.190465, abs=1e-6)


def test_kd_is_kl_teacher_to_student_not_reverse():
    student = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 1.0, 0.5]], dtype=torch.float64)
    p_s, p_t = student.softmax(-1), teacher.softmax(-1)
    forward_kl = (p_t * (p_t / p_s).log()).sum().item()
    assert kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(forward_kl, rel=1e-12)


def test_kd_teacher_gets_no_gradient():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    kd_loss(student, teacher, temperature=4.0).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Resampling and the feature hint


def test_avgpool1d_averages_raster_neighbours_by_hand():
    tokens = torch.arange(1.0, 9.0).reshape(1, 8, 1)  # 8 tokens, one channel
    out = resample_tokens(tokens, 4, method="avgpool1d")
    assert out.flatten().tolist() == [1.5, 3.5, 5.5, 7.5]


def test_interp2d_area_averages_2x2_cells_unlike_avgpool1d():
    tokens = torch.arange(1.0, 17.0).reshape(1, 16, 1)  # 4x4 grid holding 1..16
    area = resample_tokens(tokens, 4, (4, 4), (2, 2), method="interp2d")
    assert area.flatten().tolist() == [3.5, 5.5, 11.5, 13.5]  # e.g. mean(1, 2, 5, 6)
    pooled = resample_tokens(tokens, 4, (4, 4), (2, 2), method="avgpool1d")
    assert pooled.flatten().tolist() == [2.5, 6.5, 10.5, 14.5]  # mean(1..4): a raster row


def test_resample_shapes_and_identity():
    tokens = torch.randn(2, 49, 8)
    assert resample_tokens(tokens, 9, (7, 7), (3, 3), method="interp2d").shape == (2, 9, 8)
    assert resample_tokens(tokens, 9, method="avgpool1d").shape == (2, 9, 8)
    up = resample_tokens(torch.randn(2, 4, 8), 16, (2, 2), (4, 4), method="interp2d")
    assert up.shape == (2, 16, 8)
    assert resample_tokens(tokens, 49, (7, 7), (7, 7), method="interp2d") is tokens
    with pytest.raises(ConfigError, match="unknown resample"):
        resample_tokens(tokens, 9, method="nearest")


def feats(*shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=generator, dtype=torch.float64) for s in shapes]


def hint(
    vit_feats,
    agent_feats,
    distance="ln_mse",
    resample="avgpool1d",
    layers=None,
    grids=None,
    reduce="sum",
):
    grids = grids or [(4, 4)] * len(agent_feats)
    return hint_loss(
        vit_feats,
        agent_feats,
        layers=layers,
        reduce=reduce,
        distance=distance,
        resample=resample,
        vit_grid=(4, 4),
        agent_grids=grids,
    )


@pytest.mark.parametrize("distance", ["ln_mse", "l2_mse"])
def test_hint_of_identical_features_is_zero(distance):
    a = feats((2, 16, 8), (2, 16, 8))
    assert hint(a, [t.clone() for t in a], distance).item() == pytest.approx(0.0, abs=1e-12)


def test_ln_mse_is_invariant_to_per_token_affine_scaling():
    (vit,) = feats((2, 16, 8))
    (agent,) = feats((2, 16, 8), seed=1)
    scale = torch.rand(2, 16, 1, dtype=torch.float64) * 5 + 1.0
    shift = torch.randn(2, 16, 1, dtype=torch.float64) * 3
    reference = hint([vit], [agent]).item()
    # Exact up to LayerNorm's eps = 1e-5 added to the variance (~1 here).
    assert hint([vit * scale + shift], [agent]).item() == pytest.approx(reference, rel=1e-5)
    assert hint([vit], [agent * scale - shift]).item() == pytest.approx(reference, rel=1e-5)


def test_ln_mse_by_hand():
    (vit,) = feats((2, 16, 8))
    (agent,) = feats((2, 16, 8), seed=1)
    normed = [
        (x - x.mean(-1, keepdim=True)) / (x.var(-1, False, True) + 1e-5).sqrt()
        for x in (vit, agent)
    ]
    expected = (normed[0] - normed[1]).square().mean().item()
    assert hint([vit], [agent]).item() == pytest.approx(expected, rel=1e-9)


def test_l2_mse_is_invariant_to_global_scaling_and_has_unit_scale():
    (vit,) = feats((2, 16, 8))
    (agent,) = feats((2, 16, 8), seed=1)
    reference = hint([vit], [agent], "l2_mse").item()
    scale = torch.tensor([3.0, 0.01], dtype=torch.float64).view(2, 1, 1)  # one per sample
    assert hint([vit * scale], [agent * 7.0], "l2_mse").item() == pytest.approx(reference, rel=1e-9)
    # Scale: per-sample squared distance of unit vectors (2 - 2 cos): opposite -> 4, orthogonal
    # -> 2, not divided by N * D.
    assert hint([vit], [-vit], "l2_mse").item() == pytest.approx(4.0, rel=1e-12)
    e0, e1 = torch.zeros(1, 16, 8), torch.zeros(1, 16, 8)
    e0[0, 0, 0], e1[0, 3, 5] = 2.0, 0.5
    assert hint([e0], [e1], "l2_mse").item() == pytest.approx(2.0, rel=1e-6)


def test_hint_gradient_reaches_vit_only_and_layers_are_summed():
    # The released code weights each block's hint as its own term and sums them (mutual_loss.py
    # keys *_layer_i); reduce="mean" divides by the number of blocks (bootstudy before).
    vit_feats = [t.requires_grad_() for t in feats((2, 16, 8), (2, 16, 8), (2, 16, 8))]
    agent_feats = [t.requires_grad_() for t in feats((2, 16, 8), (2, 16, 8), (2, 16, 8), seed=3)]
    summed = hint(vit_feats, agent_feats)
    summed.backward()
    assert all(t.grad is not None for t in vit_feats)
    assert all(t.grad is None for t in agent_feats)
    one = [hint(vit_feats, agent_feats, layers=(i,)).item() for i in range(3)]
    assert summed.item() == pytest.approx(sum(one), rel=1e-12)
    mean = hint(vit_feats, agent_feats, reduce="mean").item()
    assert mean == pytest.approx(sum(one) / 3, rel=1e-12)
    assert hint(vit_feats, agent_feats, layers=(0, 2)).item() == pytest.approx(one[0] + one[2])


def test_hint_reduces_the_longer_side_either_way():
    vit_tokens, agent_small, agent_big = feats((2, 16, 8), (2, 4, 8), (2, 64, 8))
    # agent 2x2 < ViT 4x4: the ViT side is pooled to 4 tokens
    got = hint([vit_tokens], [agent_small], resample="interp2d", grids=[(2, 2)])
    pooled = F.adaptive_avg_pool2d(vit_tokens.transpose(1, 2).reshape(2, 8, 4, 4), 2)
    expected = hint([pooled.flatten(2).transpose(1, 2)], [agent_small], grids=[(2, 2)])
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    # agent 8x8 > ViT 4x4: the agent side is pooled to 16 tokens (1D over raster order)
    got = hint([vit_tokens], [agent_big], resample="avgpool1d", grids=[(8, 8)])
    pooled = agent_big.reshape(2, 16, 4, 8).mean(2)
    assert got.item() == pytest.approx(hint([vit_tokens], [pooled]).item(), rel=1e-12)


def test_hint_config_errors():
    a = feats((2, 16, 8))
    with pytest.raises(ConfigError, match="distance"):
        hint(a, a, distance="cosine")
    with pytest.raises(ConfigError, match="layers"):
        hint(a, a, layers=(3,))


def test_hint_weight_exact_values():
    assert hint_weight(10.0, 0, 240, "linear") == 10.0
    assert hint_weight(10.0, 60, 240, "linear") == 7.5
    assert hint_weight(10.0, 120, 240, "linear") == 5.0
    assert hint_weight(5.0, 239, 240, "linear") == pytest.approx(5.0 / 240)
    assert hint_weight(5.0, 239, 240, "none") == 5.0
    with pytest.raises(ConfigError, match="decay"):
        hint_weight(5.0, 0, 240, "cosine")


# ----------------------------------------------------------------------------------------------
# Gradient alignment (paper Algorithm 1)


def test_project_conflicting_by_hand():
    out = project_conflicting(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    assert out.tolist() == [0.5, 0.5]
    assert torch.dot(out, torch.tensor([-1.0, 1.0])).item() == 0.0
    g_agent = torch.tensor([1.0, 2.0])
    assert project_conflicting(g_agent, torch.tensor([1.0, -0.5])).tolist() == [1.0, 2.0]
    assert project_conflicting(g_agent, torch.zeros(2)).tolist() == [1.0, 2.0]


def test_aligned_backward_projects_over_the_concatenation_of_shared_params():
    # g_vit = (-1, 1) and g_agent = (1, 0) spread over two scalar tensors a and b. Projecting the
    # concatenation gives agent (0.5, 0.5); per tensor it would give (0, 0). u is not shared.
    a, b, u = (torch.tensor(v, requires_grad=True) for v in (0.3, -0.2, 1.5))
    loss_vit = -a + b + 2 * u
    loss_agent = a + 3 * u
    alignment = aligned_backward(loss_vit, loss_agent, [a, b], [u])
    assert (a.grad.item(), b.grad.item(), u.grad.item()) == (-0.5, 1.5, 5.0)
    assert alignment.projected and float(alignment.cosine) == pytest.approx(-1 / math.sqrt(2))


def test_aligned_backward_without_conflict_is_the_plain_sum_and_accumulates():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    u = torch.tensor(0.5, requires_grad=True)
    w.grad = torch.tensor([10.0, 10.0])  # accumulates like backward()
    loss_vit = (w * torch.tensor([1.0, 1.0])).sum()
    loss_agent = (w * torch.tensor([2.0, -1.0])).sum() + u * u  # dot = 1 > 0: no projection
    alignment = aligned_backward(loss_vit, loss_agent, [w], [u])
    assert w.grad.tolist() == [13.0, 10.0]
    assert u.grad.item() == 1.0
    assert not alignment.projected


def test_aligned_backward_on_the_shared_agent_never_opposes_the_vit():
    vit = small_vit(num_classes=5)  # seeded 0
    agent = SharedAgent(vit, design="base", stem="vit_like", norm="pre", num_classes=5, in_chans=1)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 5, (8,))
    shared = agent.shared_parameters()
    other = [p for p in vit.parameters() if all(p is not s for s in shared)]
    other += list(agent.parameters())

    def losses():
        vit_logits, _ = vit_forward_features(vit, x)
        agent_logits, _ = agent(x)
        return F.cross_entropy(vit_logits, y), F.cross_entropy(agent_logits, y)

    loss_vit, _ = losses()
    g_vit = torch.cat([g.flatten() for g in torch.autograd.grad(loss_vit, shared)])
    aligned_backward(*losses(), shared, other)
    g_total = torch.cat([p.grad.flatten() for p in shared])
    assert torch.dot(g_total - g_vit, g_vit).item() >= -1e-6 * g_vit.square().sum().item()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in other + shared)
