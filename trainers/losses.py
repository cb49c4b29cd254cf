"""Losses of Bootstrapping ViTs: mutual knowledge distillation and the feature hint.

Every loss computes in float32 whatever dtype its inputs arrive in: under bf16/fp16 autocast the
ViT's residual stream is float32 (its class token and position embedding promote it) while the
agent's features are bf16, and a loss fed both would mix them (CUDA's `mse_loss` backward rejects
the mix; CPU kernels accept it silently). Low-precision losses would also round away small terms.

Example:
    >>> import torch
    >>> float(kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=4.0))
    0.0
    >>> hint_weight(10.0, epoch=60, epochs=240, decay="linear")
    7.5
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trainers.errors import ConfigError
from trainers.precision import upcast

__all__ = [
    "HINT_DECAYS",
    "HINT_DISTANCES",
    "HINT_REDUCTIONS",
    "RESAMPLE_METHODS",
    "hint_loss",
    "hint_weight",
    "kd_loss",
    "resample_tokens",
]

RESAMPLE_METHODS = ("avgpool1d", "interp2d")  # released code / paper
HINT_DISTANCES = ("ln_mse", "l2_mse")  # released code / paper eq. 6
HINT_DECAYS = ("linear", "none")
HINT_REDUCTIONS = ("sum", "mean")  # released code / bootstudy before


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(p_teacher || p_student) at temperature T, times T^2 (Hinton et al.), batch mean.

    The teacher is detached: in mutual KD each model is the other's teacher, and each direction
    trains only its student.
    """
    log_p_student = F.log_softmax(upcast(student_logits) / temperature, dim=-1)
    log_p_teacher = F.log_softmax(upcast(teacher_logits.detach()) / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def resample_tokens(
    tokens: torch.Tensor,
    target_n: int,
    grid_hw: tuple[int, int] | None = None,
    target_hw: tuple[int, int] | None = None,
    method: str = "avgpool1d",
) -> torch.Tensor:
    """Resample [B, N, D] raster-order tokens to [B, target_n, D].

    avgpool1d (released code): adaptive 1D average pooling over the raster order, ignoring the 2D
    layout (with N = 4 * target_n on a 2x grid this averages 4 horizontally adjacent tokens, not
    a 2x2 cell). interp2d (paper): back to the (h, w) grid, then "area" interpolation (= adaptive
    average pooling) when shrinking both sides, bilinear otherwise.
    """
    if method not in RESAMPLE_METHODS:
        raise ConfigError(f"unknown resample method {method!r} (known: {list(RESAMPLE_METHODS)})")
    tokens = upcast(tokens)  # averaging in bf16 would round the hint's targets
    if tokens.shape[1] == target_n:
        return tokens
    if method == "avgpool1d":
        return F.adaptive_avg_pool1d(tokens.transpose(1, 2), target_n).transpose(1, 2)
    if grid_hw is None or target_hw is None:
        raise ConfigError("resample interp2d needs grid_hw and target_hw")
    (h, w), (th, tw) = grid_hw, target_hw
    if h * w != tokens.shape[1] or th * tw != target_n:
        raise ValueError(f"grids {grid_hw} -> {target_hw} do not match {tokens.shape[1]} tokens")
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
    mode = "area" if th <= h and tw <= w else "bilinear"
    extra = {} if mode == "area" else {"align_corners": False}
    grid = F.interpolate(grid, size=(th, tw), mode=mode, **extra)
    return grid.flatten(2).transpose(1, 2)


def _ln_mse(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Released code: per-token LayerNorm (here without affine: nothing to learn) on both sides.
    dim = (student.shape[-1],)
    return F.mse_loss(F.layer_norm(upcast(student), dim), F.layer_norm(upcast(target), dim))


def _l2_mse(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Paper eq. 6: each sample's whole [N, D] feature L2-normalised. Scale: the squared distance
    # of two unit vectors is summed per sample (range [0, 4], = 2 - 2 cos), then averaged over
    # the batch. An element-wise mean would divide by N * D (~56k for ViT-S) and make the hint
    # weight meaningless; with the sum, unrelated features give ~2, like ln_mse's ~2.
    s = F.normalize(upcast(student).flatten(1), dim=1)
    t = F.normalize(upcast(target).flatten(1), dim=1)
    return (s - t).pow(2).sum(dim=1).mean()


_DISTANCES = {"ln_mse": _ln_mse, "l2_mse": _l2_mse}


def hint_loss(
    vit_feats: Sequence[torch.Tensor],
    agent_feats: Sequence[torch.Tensor],
    *,
    layers: tuple[int, ...] | None,
    reduce: str = "sum",
    distance: str,
    resample: str,
    vit_grid: tuple[int, int],
    agent_grids: Sequence[tuple[int, int]],
) -> torch.Tensor:
    """Sum (reduce="sum", the released code) or mean over `layers` (None = all) of
    distance(ViT block tokens, detached agent tokens).

    The released code makes each block's hint its own loss term (`*_layer_i`) and weights and sums
    them, so the hint weight is per block and the hint grows with the depth; "mean" divides by the
    number of blocks (what bootstudy did before, weaker by the depth at the same weight).

    When the token counts differ the longer sequence is reduced to the shorter (both methods).
    Only the ViT side carries gradient: the agent is the teacher of the hint.
    """
    if distance not in _DISTANCES:
        raise ConfigError(f"unknown hint distance {distance!r} (known: {list(HINT_DISTANCES)})")
    if reduce not in HINT_REDUCTIONS:
        raise ConfigError(f"unknown hint reduction {reduce!r} (known: {list(HINT_REDUCTIONS)})")
    if len(vit_feats) != len(agent_feats) or len(agent_feats) != len(agent_grids):
        raise ValueError("hint_loss needs one ViT feature, agent feature and agent grid per block")
    layers = tuple(range(len(vit_feats))) if layers is None else tuple(layers)
    if not layers or any(not 0 <= i < len(vit_feats) for i in layers):
        raise ConfigError(f"hint layers {layers} must be within 0..{len(vit_feats) - 1}")
    distances = []
    for i in layers:
        student, target = upcast(vit_feats[i]), upcast(agent_feats[i].detach())
        agent_grid = tuple(agent_grids[i])
        n_student, n_target = student.shape[1], target.shape[1]
        if n_student > n_target:
            student = resample_tokens(student, n_target, tuple(vit_grid), agent_grid, resample)
        elif n_target > n_student:
            target = resample_tokens(target, n_student, agent_grid, tuple(vit_grid), resample)
        distances.append(_DISTANCES[distance](student, target))
    total = sum(distances)
    return total if reduce == "sum" else total / len(layers)


def hint_weight(base: float, epoch: int, epochs: int, decay: str) -> float:
    """The hint weight at 0-based `epoch` of `epochs`: base * (1 - epoch / epochs) for linear
    decay (epoch 0 gets the full weight, as the released DecayStrategy), base for none."""
    if decay == "none":
        return float(base)
    if decay != "linear":
        raise ConfigError(f"unknown hint decay {decay!r} (known: {list(HINT_DECAYS)})")
    if epochs < 1 or not 0 <= epoch <= epochs:
        raise ValueError(f"epoch {epoch} out of range for {epochs} epochs")
    return base * (1.0 - epoch / epochs)
