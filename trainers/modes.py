"""Training modes: each is one registered class owning its networks, its forward, its named loss
terms, its per-epoch metrics and the `TrainConfig` fields it uses. The training loop
(`trainers.training`) knows no mode by name: it builds `MODES[cfg.mode](cfg, ...)`, steps on the
sum of `loss_terms`, and evaluates each network the mode owns.

    vit     the ViT alone, from scratch: the baseline
    agent   the agent CNN alone, with its own (unshared) weights
    shared  the agent built from the ViT's weights, one optimizer, one summed loss (paper Sec. 3.2)
    joint   separate agent and ViT, two AdamW optimizers, mutual KD + feature hint (paper Sec. 3.3)

Adding a mode is one class (README, "Adding a mode"):

    @register_mode("vit_ls")
    class VitLabelSmoothed(VitMode):
        description = "the ViT alone with label smoothing 0.1 built in"

        def loss_terms(self, outputs, y, epoch):
            return {"cls": cross_entropy(outputs["vit_logits"], y, 0.1)}

A mode's `fields` are the mode-specific `TrainConfig` fields it reads. A field that some mode
claims is mode-specific; a config that sets such a field away from its default for a mode that
does not claim it is rejected (`check_fields`), so a study never silently ignores a setting.

This module imports no torch at import time (the config and the command lines read the registry
without paying for torch): the methods import what they need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from trainers.errors import ConfigError
from trainers.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trainers.config import TrainConfig

__all__ = [
    "MODES",
    "AGENT_FIELDS",
    "JOINT_RELEASED",
    "OWN_AGENT_FIELDS",
    "PAIR_FIELDS",
    "SHARED_RELEASED",
    "VIT_FIELDS",
    "AgentMode",
    "JointMode",
    "Mode",
    "PairMode",
    "SharedMode",
    "VitMode",
    "build_mode",
    "check_fields",
    "cross_entropy",
    "mode_specific_fields",
    "register_mode",
    "used_fields",
    "agent_from_config",
    "vit_from_config",
]

# Field groups the built-in modes claim (a mode states the union of those it reads).
VIT_FIELDS = frozenset(  # the ViT's dropouts and the sibling methods' switches (trainers.methods)
    {
        "drop_rate",
        "vit_dropout",
        "attn_drop_rate",
        "drop_path_rate",
        "init",
        "impulse_window",
        "pool",
        "patch_embed",
        "mlp",
        "head_tokens",
        "ssl_init",
        "ssl_epochs",
        "ssl_lr",
        "ssl_local_crops",
        "ssl_global_scale",
        "ssl_local_scale",
        "ssl_teacher_temp",
        "ssl_momentum",
    }
)
AGENT_FIELDS = frozenset({"agent_design", "agent_stem", "agent_norm"})  # the agent CNN's layout
# the agent with its own weights (agent and joint modes): its convolution and its MLP's dropout
OWN_AGENT_FIELDS = frozenset({"agent_conv", "agent_drop_rate"})
PAIR_FIELDS = frozenset(  # the losses coupling a ViT and an agent
    {
        "cls_vit",
        "cls_agent",
        "kd_vit",
        "kd_agent",
        "kd_temp",
        "hint",
        "hint_reduce",
        "hint_distance",
        "hint_layers",
        "hint_decay",
        "resample",
    }
)


# The released configs' loss weights (config/cifar100/{shared,joint}/*.yaml `weight_dict`). The
# hint weight applies to each block's hint, and the blocks' hints are summed (hint_reduce=sum).
SHARED_RELEASED = {"cls_vit": 0.5, "cls_agent": 0.5, "kd_vit": 0.5, "kd_agent": 0.5, "hint": 5.0}
JOINT_RELEASED = {"cls_vit": 1.0, "cls_agent": 1.0, "kd_vit": 1.0, "kd_agent": 1.0, "hint": 10.0}


class Mode:
    """One way of training. Subclass, state what differs, and `@register_mode("name")` it.

    A subclass gives `build` (its networks by name), `forward` (named outputs) and `loss_terms`
    (named, weighted float32 losses whose sum is minimised); optionally `metrics` (per-epoch
    extras for the report), `optimizer_groups` (default: one AdamW over every network) and
    `backward` (default: backward of the sum). Networks named "vit" and "agent" fill the result's
    `params_vit` / `params_agent_own`; each network's accuracy is `val_acc_<name>` (`val_acc` is
    the `primary` network's, the study's objective).
    """

    name: ClassVar[str] = ""  # the registry key, set by register_mode
    description: ClassVar[str] = ""  # one line for --help, listings and reports
    fields: ClassVar[frozenset[str]] = frozenset()  # mode-specific TrainConfig fields it reads
    primary: ClassVar[str] = "vit"  # the network whose accuracy is `val_acc`
    # What the released code does for this mode, for the TrainConfig fields left at None: every
    # mode states every such field (a mode that does not read the loss weights still resolves
    # them, to the shared mode's, so its stored config is complete and comparable).
    released: ClassVar[dict[str, Any]] = {"clip_grad": 0.0, **SHARED_RELEASED}

    def __init__(self, cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int):
        """Build the networks; their random init comes from torch's global RNG (seed it first)."""
        self.cfg = cfg
        self.networks: dict[str, nn.Module] = self.build(num_classes, in_chans, img_size)
        if self.primary not in self.networks:
            raise ValueError(f"mode '{self.name}': primary network '{self.primary}' not built")

    # --- what a mode states ---------------------------------------------------------------------

    def build(self, num_classes: int, in_chans: int, img_size: int) -> dict[str, nn.Module]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """Named outputs of one training forward (run under the precision's autocast)."""
        raise NotImplementedError

    def loss_terms(
        self, outputs: dict[str, Any], y: torch.Tensor, epoch: int
    ) -> dict[str, torch.Tensor]:
        """Named, weighted float32 loss terms (run outside autocast); the step minimises the sum
        and the report shows each as `loss_<name>`. `epoch` is 0-based."""
        raise NotImplementedError

    def metrics(self, epoch: int) -> dict[str, float]:
        """Per-epoch values for the report besides the losses (e.g. the hint weight in force)."""
        return {}

    def optimizer_groups(self) -> list[list[str]]:
        """Network names per AdamW optimizer: default one optimizer over every network."""
        return [list(self.networks)]

    def backward(self, terms: dict[str, torch.Tensor]) -> None:
        """Accumulate the gradient of the terms' sum into `.grad` (terms may arrive loss-scaled)."""
        sum(terms.values()).backward()

    # --- shared by every mode -------------------------------------------------------------------

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each network's logits on an evaluation batch (no features)."""
        out = {}
        for name, module in self.networks.items():
            logits = module(x)
            out[name] = logits[0] if isinstance(logits, tuple) else logits
        return out

    def parameter_counts(self) -> dict[str, int]:
        """`params_vit`, `params_agent_own`: shared weights count once, for the ViT."""

        def count(name: str) -> int:
            module = self.networks.get(name)
            return sum(p.numel() for p in module.parameters()) if module is not None else 0

        return {"params_vit": count("vit"), "params_agent_own": count("agent")}


MODES: Registry[type[Mode]] = Registry("mode")


def register_mode(name: str):
    """Class decorator: register a `Mode` subclass under `name` (a duplicate is an error)."""

    def add(cls: type[Mode]) -> type[Mode]:
        if not (isinstance(cls, type) and issubclass(cls, Mode)):
            raise TypeError(f"register_mode('{name}') expects a Mode subclass, got {cls!r}")
        cls.name = name
        MODES.add(name, cls)
        return cls

    return add


def build_mode(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> Mode:
    """The mode of `cfg` with its networks built (seed torch's global RNG first)."""
    return MODES.lookup(cfg.mode)(cfg, num_classes, in_chans, img_size)


def mode_specific_fields() -> frozenset[str]:
    """Fields some registered mode claims; the others are common to every mode."""
    return frozenset().union(*(mode.fields for mode in MODES.values()))


def used_fields(mode: str, values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the mode-specific fields `mode` does not use: one dict of settings for
    many modes (a bench, a test grid) becomes what each mode accepts."""
    unused = mode_specific_fields() - MODES.lookup(mode).fields
    return {name: value for name, value in values.items() if name not in unused}


def check_fields(mode: str, values: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Reject fields set away from their default that `mode` does not use (one line, all named).

    `defaults` are the effective defaults: the dataclass's, with the model preset's filled in.
    """
    cls = MODES.lookup(mode)
    foreign = sorted(
        name
        for name in mode_specific_fields() - cls.fields
        if name in values and values[name] != defaults[name]
    )
    if foreign:
        shown = ", ".join(f"{name}={values[name]!r}" for name in foreign)
        users = {name: sorted(m for m, c in MODES.items() if name in c.fields) for name in foreign}
        where = "; ".join(f"{name}: {', '.join(users[name])}" for name in foreign)
        raise ConfigError(
            f"mode '{mode}' does not use {shown} (modes that do: {where}); leave them at "
            "their defaults"
        )


# --- the built-in modes ---------------------------------------------------------------------------


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy in float32 whatever the logits' dtype (see trainers.losses)."""
    import torch.nn.functional as F

    from trainers.precision import upcast

    return F.cross_entropy(upcast(logits), y, label_smoothing=smoothing)


def vit_from_config(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """The run's ViT: timm's, with the pooling, DHVT parts and attention init of `cfg`."""
    from trainers.methods import build_method_vit

    return build_method_vit(cfg, num_classes, in_chans, img_size)


def _agent_options(cfg: TrainConfig) -> dict:
    return dict(design=cfg.agent_design, stem=cfg.agent_stem, norm=cfg.agent_norm)


def agent_from_config(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int):
    """The standalone agent, shaped as the run's ViT would be."""
    from trainers.agent import StandaloneAgent
    from trainers.methods import vit_shape

    return StandaloneAgent(
        vit_shape(cfg, num_classes, in_chans, img_size),
        **_agent_options(cfg),
        conv=cfg.agent_conv,
        drop_rate=cfg.agent_drop_rate,
    )


@register_mode("vit")
class VitMode(Mode):
    description = "the ViT alone, from scratch (the baseline)"
    fields = VIT_FIELDS
    released = {**Mode.released, "clip_grad": 0.1}  # config/cifar100/vit/vit-*.yaml, every step

    def build(self, num_classes, in_chans, img_size):
        return {"vit": vit_from_config(self.cfg, num_classes, in_chans, img_size)}

    def forward(self, x):
        return {"vit_logits": self.networks["vit"](x)}

    def loss_terms(self, outputs, y, epoch):
        return {"cls": cross_entropy(outputs["vit_logits"], y, self.cfg.label_smoothing)}


@register_mode("agent")
class AgentMode(Mode):
    description = "the agent CNN alone, with its own weights"
    fields = AGENT_FIELDS | OWN_AGENT_FIELDS
    primary = "agent"

    def build(self, num_classes, in_chans, img_size):
        return {"agent": agent_from_config(self.cfg, num_classes, in_chans, img_size)}

    def forward(self, x):
        logits, _ = self.networks["agent"](x)
        return {"agent_logits": logits}

    def loss_terms(self, outputs, y, epoch):
        return {"cls": cross_entropy(outputs["agent_logits"], y, self.cfg.label_smoothing)}


class PairMode(Mode):
    """A ViT and an agent CNN trained together: CE for each, mutual KD, the feature hint.

    Subclasses build the agent (`build_agent`); the losses and the report are the same.
    """

    fields = VIT_FIELDS | AGENT_FIELDS | PAIR_FIELDS
    vit_terms: ClassVar[tuple[str, ...]] = ("cls_vit", "kd_vit", "hint")  # the ViT's objective

    def build_agent(self, vit: nn.Module, num_classes: int, in_chans: int, img_size: int):
        raise NotImplementedError

    def build(self, num_classes, in_chans, img_size):
        vit = vit_from_config(self.cfg, num_classes, in_chans, img_size)
        agent = self.build_agent(vit, num_classes, in_chans, img_size)
        self.grids = (tuple(vit.patch_embed.grid_size), agent.feature_grids)
        return {"vit": vit, "agent": agent}

    def forward(self, x):
        from trainers.vit import vit_forward_features

        vit_logits, vit_features = vit_forward_features(self.networks["vit"], x)
        agent_logits, agent_features = self.networks["agent"](x)
        return {
            "vit_logits": vit_logits,
            "vit_features": vit_features,
            "agent_logits": agent_logits,
            "agent_features": agent_features,
        }

    def hint_weight(self, epoch: int) -> float:
        from trainers.losses import hint_weight

        cfg = self.cfg
        return hint_weight(cfg.hint, epoch, cfg.epochs, cfg.hint_decay)

    def metrics(self, epoch):
        return {"hint_weight": self.hint_weight(epoch)}

    def loss_terms(self, outputs, y, epoch):
        """cls_vit, cls_agent (CE), kd_vit, kd_agent (mutual KD against the detached other),
        hint (ViT tokens regress the detached agent features); zero weights drop their term."""
        from trainers.losses import hint_loss, kd_loss

        cfg, smooth = self.cfg, self.cfg.label_smoothing
        vit_logits, agent_logits = outputs["vit_logits"], outputs["agent_logits"]
        terms = {
            "cls_vit": cfg.cls_vit * cross_entropy(vit_logits, y, smooth),
            "cls_agent": cfg.cls_agent * cross_entropy(agent_logits, y, smooth),
        }
        if cfg.kd_vit > 0:
            terms["kd_vit"] = cfg.kd_vit * kd_loss(vit_logits, agent_logits, cfg.kd_temp)
        if cfg.kd_agent > 0:
            terms["kd_agent"] = cfg.kd_agent * kd_loss(agent_logits, vit_logits, cfg.kd_temp)
        weight = self.hint_weight(epoch)
        if weight > 0:
            terms["hint"] = weight * hint_loss(
                outputs["vit_features"],
                outputs["agent_features"],
                layers=cfg.hint_layers,
                reduce=cfg.hint_reduce,
                distance=cfg.hint_distance,
                resample=cfg.resample,
                vit_grid=self.grids[0],
                agent_grids=self.grids[1],
            )
        return terms


@register_mode("shared")
class SharedMode(PairMode):
    description = "the agent built from the ViT's weights, one summed loss (paper's bootstrapping)"
    fields = PairMode.fields | {"grad_align"}

    def build_agent(self, vit, num_classes, in_chans, img_size):
        from trainers.agent import SharedAgent

        cfg = self.cfg
        # the released shared agent's MLP is the ViT's, dropout included (joint_model.SharedMLP)
        mlp_drop = cfg.drop_rate if cfg.vit_dropout == "released" else 0.0
        return SharedAgent(
            vit,
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=mlp_drop,
            **_agent_options(cfg),
        )

    def backward(self, terms):
        """grad_align=pcgrad: the agent's gradient on the shared weights is projected off the
        ViT's where they conflict (paper Alg. 1); none: the plain sum (released code)."""
        if self.cfg.grad_align != "pcgrad":
            return super().backward(terms)
        from trainers.pcgrad import aligned_backward

        shared = self.networks["agent"].shared_parameters()
        shared_ids = {id(p) for p in shared}
        params = [p for m in self.networks.values() for p in m.parameters()]
        unshared = [p for p in params if id(p) not in shared_ids]
        loss_vit = sum(v for k, v in terms.items() if k in self.vit_terms)
        loss_agent = sum(v for k, v in terms.items() if k not in self.vit_terms)
        aligned_backward(loss_vit, loss_agent, shared, unshared)
        return None


@register_mode("joint")
class JointMode(PairMode):
    description = "a separate agent and the ViT, two optimizers, mutual KD + hint (paper Sec. 3.3)"
    fields = PairMode.fields | OWN_AGENT_FIELDS
    released = {**Mode.released, **JOINT_RELEASED}

    def build_agent(self, vit, num_classes, in_chans, img_size):
        return agent_from_config(self.cfg, num_classes, in_chans, img_size)

    def optimizer_groups(self):
        return [["vit"], ["agent"]]
