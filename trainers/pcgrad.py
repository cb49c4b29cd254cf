"""Gradient alignment of the paper's Algorithm 1 (PCGrad-style, Yu et al. 2020).

On the weights the ViT and its agent share, the agent's gradient is projected onto the normal
plane of the ViT's gradient when the two conflict (negative dot product), so the agent's loss never
pushes the shared weights against the ViT's. The released code just sums the two losses; this
module is the paper's version, switchable by the trainer.

Example:
    >>> import torch
    >>> project_conflicting(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    tensor([0.5000, 0.5000])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from trainers.precision import upcast

__all__ = ["GradientAlignment", "aligned_backward", "project_conflicting"]


class GradientAlignment(NamedTuple):
    """What happened on the shared weights in one `aligned_backward` (worth logging).

    0-dim tensors on the gradients' device, so the step never waits for the device to answer.
    """

    cosine: torch.Tensor  # cos(g_agent, g_vit) before projection; 0 if either is zero
    projected: torch.Tensor  # bool: they conflicted and g_agent was projected


def project_conflicting(g_agent: torch.Tensor, g_vit: torch.Tensor) -> torch.Tensor:
    """g_agent - (g_agent . g_vit / |g_vit|^2) g_vit if g_agent . g_vit < 0, else g_agent.

    Branch-free (`torch.where`), so no host sync: a conflict implies |g_vit| > 0.
    """
    g_agent, g_vit = upcast(g_agent), upcast(g_vit)
    dot = torch.dot(g_agent, g_vit)
    norm_sq = torch.dot(g_vit, g_vit)
    coefficient = torch.where(dot < 0, dot / norm_sq.clamp_min(_TINY), torch.zeros_like(dot))
    return g_agent - coefficient * g_vit


_TINY = torch.finfo(torch.float32).tiny


def _grads(
    loss: torch.Tensor, params: Sequence[torch.Tensor], retain_graph: bool
) -> list[torch.Tensor]:
    # float32 whatever the parameters' dtype: the dot products of the projection sum millions of
    # products, which bf16/fp16 would round to nonsense
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [
        upcast(torch.zeros_like(p)) if g is None else upcast(g)
        for p, g in zip(params, grads, strict=True)
    ]


def aligned_backward(
    loss_vit: torch.Tensor,
    loss_agent: torch.Tensor,
    shared_params: Sequence[torch.Tensor],
    other_params: Sequence[torch.Tensor],
) -> GradientAlignment:
    """Accumulate into `.grad` (as `backward()` would) the gradient of loss_vit + loss_agent,
    with the agent's part on `shared_params` aligned to the ViT's first.

    The projection is over the concatenation of all shared parameters (Algorithm 1: one vector).
    `other_params` (e.g. the agent's own BatchNorms, the ViT's patch embedding) get the plain
    sum. Pass whole tensors: `SharedAgent.shared_parameters()` includes qkv, whose query/key
    rows have zero agent gradient but may receive a component of the projection along g_vit.
    Frees the graph, like `backward()`.
    """
    shared, other = list(shared_params), list(other_params)
    if {id(p) for p in shared} & {id(p) for p in other}:
        raise ValueError("a parameter is listed both as shared and as other")
    params = shared + other
    grads_vit = _grads(loss_vit, params, retain_graph=True)
    grads_agent = _grads(loss_agent, params, retain_graph=False)
    n = len(shared)
    device = params[0].device if params else None
    empty = torch.zeros(0, dtype=torch.float32, device=device)
    g_vit = torch.cat([g.reshape(-1) for g in grads_vit[:n]]) if n else empty
    g_agent = torch.cat([g.reshape(-1) for g in grads_agent[:n]]) if n else empty
    norms = g_vit.norm() * g_agent.norm()
    dot = torch.dot(g_agent, g_vit)
    cosine = torch.where(norms > 0, dot / norms.clamp_min(_TINY), torch.zeros_like(dot))
    aligned = project_conflicting(g_agent, g_vit) if n else g_agent
    offset = 0
    for param, g_v in zip(shared, grads_vit[:n], strict=True):
        g_a = aligned[offset : offset + param.numel()].view_as(param)
        offset += param.numel()
        _accumulate(param, g_v + g_a)
    for param, g_v, g_a in zip(other, grads_vit[n:], grads_agent[n:], strict=True):
        _accumulate(param, g_v + g_a)
    return GradientAlignment(cosine=cosine, projected=dot < 0)


def _accumulate(param: torch.Tensor, grad: torch.Tensor) -> None:
    grad = grad.detach().to(param.dtype)
    if param.grad is None:
        param.grad = grad.clone()
    else:
        param.grad.add_(grad)
