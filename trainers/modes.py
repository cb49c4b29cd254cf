"""Training modes: which networks exist, which losses apply, how many optimizers step.

A mode is one small builder registered by name; the training loop is the same for all of them.

    vit     the ViT alone, from scratch: the baseline
    agent   the agent CNN alone, with its own (unshared) weights
    joint   separate agent and ViT, two AdamW optimizers, mutual KD + feature hint (paper Sec. 3.3)
    shared  the agent built from the ViT's weights, one optimizer, one summed loss (paper Sec. 3.2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from trainers.agent import SharedAgent, StandaloneAgent
from trainers.config import TrainConfig
from trainers.registry import Registry
from trainers.vit import build_vit

__all__ = ["Networks", "MODES", "register_mode", "build_networks", "list_modes"]


@dataclass
class Networks:
    """The networks of one training run.

    `primary` is the model whose accuracy is the objective (`val_acc`): the ViT when there is one.
    """

    vit: nn.Module | None
    agent: nn.Module | None
    separate_optimizers: bool  # joint mode: the agent and the ViT each have their own AdamW

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {name: m for name, m in (("vit", self.vit), ("agent", self.agent)) if m is not None}

    @property
    def shared(self) -> bool:
        return isinstance(self.agent, SharedAgent)

    def parameter_counts(self) -> tuple[int, int]:
        """(ViT parameters, the agent's own parameters); shared weights count once, for the ViT."""
        vit = sum(p.numel() for p in self.vit.parameters()) if self.vit is not None else 0
        agent = sum(p.numel() for p in self.agent.parameters()) if self.agent is not None else 0
        return vit, agent


MODES: Registry[Callable[[TrainConfig, int, int, int], Networks]] = Registry("mode")
register_mode = MODES.register
list_modes = MODES.names


def build_networks(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> Networks:
    """Build the mode's networks; the random init comes from torch's global RNG (seed it first)."""
    return MODES.lookup(cfg.mode)(cfg, num_classes, in_chans, img_size)


def _vit(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return build_vit(
        img_size=img_size,
        patch_size=cfg.patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        drop_rate=cfg.drop_rate,
        attn_drop_rate=cfg.attn_drop_rate,
        drop_path_rate=cfg.drop_path_rate,
    )


def _agent_options(cfg: TrainConfig, num_classes: int, in_chans: int) -> dict:
    return dict(
        design=cfg.agent_design,
        stem=cfg.agent_stem,
        norm=cfg.agent_norm,
        num_classes=num_classes,
        in_chans=in_chans,
    )


def _standalone_agent(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int):
    return StandaloneAgent(
        img_size=img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        **_agent_options(cfg, num_classes, in_chans),
    )


@register_mode("vit")
def _vit_mode(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> Networks:
    return Networks(_vit(cfg, num_classes, in_chans, img_size), None, separate_optimizers=False)


@register_mode("agent")
def _agent_mode(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> Networks:
    agent = _standalone_agent(cfg, num_classes, in_chans, img_size)
    return Networks(None, agent, separate_optimizers=False)


@register_mode("joint")
def _joint_mode(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> Networks:
    vit = _vit(cfg, num_classes, in_chans, img_size)
    agent = _standalone_agent(cfg, num_classes, in_chans, img_size)
    return Networks(vit, agent, separate_optimizers=True)


@register_mode("shared")
def _shared_mode(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> Networks:
    vit = _vit(cfg, num_classes, in_chans, img_size)
    agent = SharedAgent(vit, **_agent_options(cfg, num_classes, in_chans))
    return Networks(vit, agent, separate_optimizers=False)


def shared_parameters(networks: Networks) -> list[torch.Tensor]:
    """The ViT parameters the shared agent reads (value/output projections and MLP weights).

    Found by identity: whatever the agent's forward touches of the ViT is what `pcgrad` aligns.
    """
    if not networks.shared:
        return []
    return list(networks.agent.shared_parameters())
