"""`TrainConfig`: every knob of one training, typed, frozen, with the reason for each default.

Defaults are the released code's method (Zhang et al., CVPR 2022; zhfeing/Bootstrapping-ViTs-pytorch
configs) on the `tiny` CPU preset. Three layers fill the fields left at None, each only where the
one before left a gap: what is passed explicitly, then the model preset (`MODEL_PRESETS`: sizes,
dropout, the agent's layout), then the mode's released settings (`trainers.modes.Mode.released`:
loss weights, clipping). Every place bootstudy departs from the released code is a named field
whose default is the released behaviour (docs: "Differences from the released code").

    >>> cfg = TrainConfig.from_dict({"mode": "vit", "data_fraction": 0.1, "preset": "vit_s"})
    >>> cfg.embed_dim, cfg.depth
    (288, 6)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from trainers.errors import ConfigError
from trainers.modes import MODES, check_fields

__all__ = [
    "MAX_EPOCHS",
    "TrainConfig",
    "MODEL_PRESETS",
    "strict_from_dict",
    "config_hash",
    "field_choices",
]

MAX_EPOCHS = 10_000  # the paper trains 240-300 epochs; a typo such as 10**30 is refused at once
InitScheme = Literal["trunc_normal", "mimetic", "impulse"]  # trainers.init_schemes.INIT_SCHEMES
Pool = Literal["cls", "gap"]  # trainers.vit.POOLS
PatchEmbed = Literal["linear", "sope"]
Mlp = Literal["linear", "daff"]
SslInit = Literal["none", "dino"]

# Model sizes. `tiny` keeps native resolution so a CPU trains several hundred images/s in shared
# mode; `vit_s`/`vit_b` are the paper's CIFAR models (Sec. 4.1), by default at native 32 px with
# patch 4 instead of the paper's 224 px / patch 16 upsampling (set img_size=224, patch_size=16).
# The paper's CIFAR ViT-S (depth 6, dim 288, 9 heads, MLP 4x) with the agent the released code uses
# at that size; the other presets state only what differs from it.
_VIT_S: dict[str, Any] = dict(
    embed_dim=288,
    depth=6,
    num_heads=9,
    mlp_ratio=4.0,
    patch_size=4,
    drop_rate=0.1,
    agent_design="res_like",
    agent_stem="resnet_like",
    agent_norm="pre",  # released S configs: pre_norm True
    agent_drop_rate=0.1,  # released agent-small: the MLP drops 0.1 after its activation
)
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {  # a CPU size: narrow, shallow, no dropout, the plain agent
        **_VIT_S,
        "embed_dim": 72,
        "depth": 4,
        "mlp_ratio": 2.0,
        "drop_rate": 0.0,
        "agent_design": "base",
        "agent_stem": "vit_like",
        "agent_drop_rate": 0.0,
    },
    # between the two: the scale study's middle size (depth of vit_s, half its width)
    "mid": {**_VIT_S, "embed_dim": 144},
    "vit_s": dict(_VIT_S),
    # the released ViT-B shared config (config/cifar100/shared/agent-base-res_like-vit-base.yaml):
    # no ViT dropout, agent pooling after blocks 2 and 8, post-norm agent (the agent-base configs
    # keep 0.1 dropout in the separate agent's MLP)
    "vit_b": {
        **_VIT_S,
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
        "drop_rate": 0.0,
        "agent_design": "res_like_b",
        "agent_norm": "post",
    },
}


@dataclass(frozen=True)
class TrainConfig:
    # --- what is trained -------------------------------------------------------------------------
    mode: str = "shared"  # a registered mode (trainers.modes); shared: the paper's bootstrapping
    preset: str = "tiny"  # model size preset (MODEL_PRESETS); explicit fields override it

    # --- data -------------------------------------------------------------------------------------
    dataset: str = "fashion_mnist"  # offline-available on every machine of ours (Debian package)
    data_dir: str | None = None  # None: the dataset's own lookup order (see trainers.datasets)
    data_fraction: float = 1.0  # class-balanced round(n_c * fraction) per class (paper Sec. 4.3)
    split_seed: int = 0  # picks the fraction's images; independent of `seed` so arms see the same
    val_fraction: float = 0.1  # fixed class-balanced validation split carved from train: searches
    #                            select on it, test is only for final reporting
    img_size: int | None = None  # None: native; 224 reproduces the paper's upsampling

    # --- model (filled from the preset) -----------------------------------------------------------
    patch_size: int | None = None  # paper: 16 at 224 px; 4 at native 28/32 px keeps 49/64 tokens
    embed_dim: int | None = None  # ViT-S 288, ViT-B 384 (paper Sec. 4.1)
    depth: int | None = None  # ViT-S 6, ViT-B 12
    num_heads: int | None = None  # 9 heads fill a 3x3 generalized-conv kernel exactly
    mlp_ratio: float | None = None  # paper: 4 (1152 = 4 x 288)
    drop_rate: float | None = None  # released "dropout" (ViT-S 0.1, ViT-B none); where it acts:
    #                                 vit_dropout
    vit_dropout: Literal["released", "pos_embed"] = "released"  # released: the attention map,
    #   the attention output and the MLP (transformer/mha.py), nothing after the position
    #   embedding; pos_embed: timm <= 0.6's placement (after the position embedding, the attention
    #   output and the MLP; no attention-map dropout), bootstudy's default before
    attn_drop_rate: float | None = None  # None: drop_rate under vit_dropout=released, else 0
    drop_path_rate: float = 0.0  # paper uses none; small-data ViTs sometimes like 0.1

    # --- agent CNN --------------------------------------------------------------------------------
    agent_design: str | None = None  # base | res_like (2x2 pool after blocks 0, 1: paper's best) |
    #                                  res_like_b (after 2, 8: the released ViT-B agent)
    agent_stem: str | None = None  # vit_like (patch conv) | resnet_like (conv-BN-GELU-pool-conv)
    agent_norm: Literal["pre", "post", "post_sum"] | None = None  # preset; pre: BN before each
    #   branch (as the ViT's LayerNorms); post: x + BN(f(x)) (the released post-norm block, ViT-B);
    #   post_sum: BN(x + f(x)), the classic post-norm bootstudy used before
    agent_conv: Literal["dense", "factored"] = "dense"  # the separate agent's (agent, joint
    #   modes) attention convolution: dense k x k, a full D x D matrix per kernel position (the
    #   released Agent-S conv_sl / Agent-B conv_manyhead); factored: W_o shift W_v, rank head_dim
    #   per position, 4x fewer parameters (shared mode's form, where it is exact)
    agent_drop_rate: float | None = None  # preset; the separate agent's MLP dropout after its
    #   activation (released agent configs: 0.1); the shared agent uses the ViT's (drop_rate)
    resample: Literal["avgpool1d", "interp2d"] = "avgpool1d"  # released code / paper, when the
    #                                                          agent's token count differs

    # --- losses -----------------------------------------------------------------------------------
    # None: the mode's released weight (Mode.released)
    cls_vit: float | None = None  # the ViT's cross-entropy; none: shared 0.5, joint 1
    cls_agent: float | None = None  # the agent's cross-entropy; none: shared 0.5, joint 1
    kd_vit: float | None = None  # the ViT learns from the agent's logits; none: shared 0.5,
    #                              joint 1 (paper alpha = 1)
    kd_agent: float | None = None  # the agent learns from the ViT's logits (mutual); none:
    #                                shared 0.5, joint 1
    kd_temp: float = 4.0  # paper: T = 4, loss scaled by T^2
    hint: float | None = None  # feature-hint weight per block; none: shared 5, joint 10
    hint_reduce: Literal["sum", "mean"] = "sum"  # over blocks: the released code weights each
    #   block's hint as its own term and sums them; mean divides by the depth (bootstudy before)
    hint_distance: Literal["ln_mse", "l2_mse"] = "ln_mse"  # released code / paper eq. 6
    hint_layers: tuple[int, ...] | None = None  # None: every block
    hint_decay: Literal["linear", "none"] = "linear"  # weight x (1 - epoch/epochs): paper Table 4
    grad_align: Literal["none", "pcgrad"] = "none"  # paper Alg. 1 projects the agent's gradient;
    #                                                 the released code just sums (none)

    # --- optimisation -----------------------------------------------------------------------------
    epochs: int = 10  # paper: 240 on CIFAR; studies set this through ASHA's max_t
    batch_size: int = 64  # paper: 64
    lr: float = 1e-3  # paper: AdamW 1e-3
    weight_decay: float = 0.05  # paper: 0.05
    weight_decay_exclude: Literal["none", "norms_biases_tokens"] = "none"  # released: every
    #   tensor decays; norms_biases_tokens: timm/DeiT's habit (norms, biases, class token and
    #   position embedding take none), bootstudy's default before
    warmup_epochs: float = 0.0  # paper: none; fractional epochs allowed
    min_lr: float = 1e-5  # cosine floor, ~lr/100
    label_smoothing: float = 0.0  # paper: none
    clip_grad: float | None = None  # max grad norm, every step; 0 = none. None: the mode's
    #   released clipping: vit 0.1 (the released ViT configs), the others none (the S configs do
    #   not clip; the B configs' mutual trainer clips only the first step, a bug we read as none)
    clip_scope: Literal["per_network", "all"] = "per_network"  # joint mode: one norm per
    #   network, as the released trainer; all: one norm over both (bootstudy before)

    # --- run --------------------------------------------------------------------------------------
    seed: int = 0  # initialisation, batch order, augmentation and dropout
    device: str = "auto"  # auto: cuda when present, else cpu
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on CUDA, else fp32
    #   Forward autocast: bf16 uses tensor cores without loss scaling; CPUs without bf16 units
    #   run it slower, but bf16 on CPU exercises the GPU path; fp16 adds a GradScaler. Losses
    #   always compute in fp32.
    compile: bool = False  # torch.compile: off by default, costly to warm up for short trials
    eval_batch_size: int = 512  # evaluation has no graph to keep; larger batches are cheaper
    max_eval_images: int | None = None  # cap val/test images for quick looks; None: all

    # --- sibling methods (README "Sibling methods"; trainers.init_schemes, .dhvt, .ssl) ----------
    init: InitScheme = "trunc_normal"  # timm's ViT init | mimetic (Trockman & Kolter 2023) |
    #                                    impulse (Zheng et al. 2024: attention starts as a conv)
    impulse_window: int = 3  # f of the f x f window the impulse offsets come from: 3 or 5
    pool: Pool = "cls"  # class token (the paper's ViT) | gap: average of the patch tokens, no class
    #                     token (what the impulse init is defined for)
    patch_embed: PatchEmbed = "linear"  # timm's patch conv | sope: DHVT's stride-2 conv stack
    mlp: Mlp = "linear"  # timm's MLP | daff: DHVT's MLP with a depthwise 3x3 conv on the grid
    head_tokens: bool = False  # DHVT: one extra token per head (channel groups) into the attention
    ssl_init: SslInit = "none"  # dino: self-distillation on the training split first (Gani et al.)
    ssl_epochs: int = 10  # the DINO phase's epochs; Gani et al.: 200 (then 100 supervised)
    ssl_lr: float = 5e-4  # DINO's base lr (5e-4 at batch 256); AdamW, cosine to min_lr
    ssl_local_crops: int = 4  # DINO: 2 global + several local views; each costs one forward
    ssl_global_scale: tuple[float, ...] = (0.4, 1.0)  # area range of the 2 global crops (DINO)
    ssl_local_scale: tuple[float, ...] = (0.05, 0.4)  # area range of the local crops (DINO)
    ssl_teacher_temp: float = 0.02  # teacher sharpening (student 0.1). DINO: 0.04; in phases of
    #                                 ~10^2 steps 0.04 let centring flatten the teacher (loss flat
    #                                 at ~6.2 of log 1024 = 6.9), 0.02 did not (3.2 -> 1.6)
    ssl_momentum: float = 0.99  # teacher EMA, rising to 1 by cosine. DINO: 0.996 over ~10^5
    #                             steps; a phase here is 10^2-10^3 steps, so a shorter horizon

    def __post_init__(self) -> None:
        preset = MODEL_PRESETS.get(self.preset)
        if preset is None:
            raise ConfigError(
                f"unknown preset '{self.preset}'; choose from: {', '.join(MODEL_PRESETS)}"
            )
        mode = MODES.lookup(self.mode)  # unknown: one line naming the registered modes
        filled = {**preset, **mode.released}
        for key, value in filled.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        # the released "dropout" drops the attention map too; timm <= 0.6's placement did not
        filled["attn_drop_rate"] = self.drop_rate if self.vit_dropout == "released" else 0.0
        if self.attn_drop_rate is None:
            object.__setattr__(self, "attn_drop_rate", filled["attn_drop_rate"])
        self._check()
        defaults = {f.name: f.default for f in dataclasses.fields(self)} | filled
        check_fields(self.mode, dataclasses.asdict(self), defaults)

    def _check(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be finite, got {value}")
        if not 0.0 < self.data_fraction <= 1.0:
            raise ConfigError(f"data_fraction must be in (0, 1], got {self.data_fraction}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.split_seed < 0 or self.seed < 0:
            raise ConfigError(
                f"seeds must be >= 0, got seed={self.seed}, split_seed={self.split_seed}"
            )
        if self.max_eval_images is not None and self.max_eval_images < 1:
            raise ConfigError(f"max_eval_images must be >= 1 (or null), got {self.max_eval_images}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got '{self.device}'")
        positive = (
            "epochs",
            "batch_size",
            "depth",
            "num_heads",
            "embed_dim",
            "patch_size",
            "eval_batch_size",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.epochs > MAX_EPOCHS:
            raise ConfigError(f"epochs must be at most {MAX_EPOCHS:,}, got {self.epochs:,}")
        for name in ("lr", "kd_temp"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        weights = (
            "cls_vit",
            "cls_agent",
            "kd_vit",
            "kd_agent",
            "hint",
            "weight_decay",
            "warmup_epochs",
            "min_lr",
            "label_smoothing",
            "clip_grad",
            "drop_path_rate",
            "attn_drop_rate",
            "drop_rate",
            "agent_drop_rate",
        )
        for name in weights:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.img_size is not None and self.img_size % self.patch_size:
            raise ConfigError(
                f"patch_size {self.patch_size} does not divide img_size {self.img_size}"
            )
        self._check_methods()
        if self.hint_layers is not None:
            bad = [i for i in self.hint_layers if not 0 <= i < self.depth]
            if bad or not self.hint_layers:
                raise ConfigError(
                    f"hint_layers must be block indices in [0, {self.depth}), got "
                    f"{list(self.hint_layers)}"
                )

    def _check_methods(self) -> None:
        """Combinations of the sibling methods' switches that cannot work, one line each (a mode
        without a ViT rejects them all through the modes' `fields`)."""
        if self.init == "impulse" and self.pool != "gap":
            raise ConfigError(
                "init=impulse needs pool=gap: the impulse maps are defined on patch tokens, and a "
                "class token would take a share of every head's attention (Zheng et al. use GAP)"
            )
        if self.init == "impulse" and self.patch_embed == "sope":
            raise ConfigError(
                "init=impulse solves Q and K from the position embeddings, and patch_embed=sope "
                "has none (its convolutions carry position)"
            )
        if self.impulse_window not in (3, 5):
            raise ConfigError(f"impulse_window must be 3 or 5, got {self.impulse_window}")
        if self.head_tokens and self.pool != "cls":
            raise ConfigError("head_tokens needs pool=cls: DHVT's head tokens feed the class token")
        if self.mode == "shared" and self.mlp == "daff":
            raise ConfigError(
                "mode=shared cannot use mlp=daff: the agent's MLP is two 1x1 convolutions on the "
                "ViT's fc1/fc2, and DAFF's depthwise conv, BatchNorms and class-token channel "
                "attention would not be shared, so the agent would no longer be the ViT's MLP "
                "(mode=joint, whose agent has its own weights, can)"
            )
        if self.patch_embed == "sope" and (
            self.patch_size < 2 or self.patch_size & (self.patch_size - 1)
        ):
            raise ConfigError(
                f"patch_embed=sope builds the patch from stride-2 convolutions: patch_size must "
                f"be a power of two >= 2, got {self.patch_size}"
            )
        if self.ssl_epochs < 1 or self.ssl_local_crops < 0:
            raise ConfigError(
                f"ssl_epochs must be >= 1 and ssl_local_crops >= 0, got {self.ssl_epochs}, "
                f"{self.ssl_local_crops}"
            )
        for name in ("ssl_global_scale", "ssl_local_scale"):
            scale = getattr(self, name)
            if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
                raise ConfigError(
                    f"{name} must be [low, high] with 0 < low <= high <= 1, got {list(scale)}"
                )
        if self.ssl_lr <= 0 or self.ssl_teacher_temp <= 0 or not 0.0 <= self.ssl_momentum < 1.0:
            raise ConfigError(
                "ssl_lr and ssl_teacher_temp must be > 0 and ssl_momentum in [0, 1), got "
                f"{self.ssl_lr}, {self.ssl_teacher_temp}, {self.ssl_momentum}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from plain values (JSON, CLI, a search space); unknown keys, wrong types fail."""
        return strict_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config (preset applied), JSON-ready: stored with every trial."""
        out = dataclasses.asdict(self)
        if out["hint_layers"] is not None:
            out["hint_layers"] = list(out["hint_layers"])
        for name in ("ssl_global_scale", "ssl_local_scale"):
            out[name] = list(out[name])
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes`. Not the mode or preset: their defaults (loss weights, clipping,
        sizes) are resolved into this config already, so `replace(mode="joint")` would train
        joint with the shared weights; build a new TrainConfig instead."""
        resolving = sorted({"mode", "preset"} & set(changes))
        if resolving:
            raise ConfigError(
                f"replace cannot change {', '.join(resolving)}: this config's defaults were "
                "resolved for its own; build a new TrainConfig"
            )
        return strict_from_dict(type(self), {**self.to_dict(), **changes})


def field_choices(name: str) -> tuple[Any, ...] | None:
    """The allowed values of a TrainConfig field (for command lines), or None if open-ended.

    `mode` comes from the mode registry; the others from their `Literal` type.
    """
    if name == "mode":
        return tuple(MODES)
    hint = typing.get_type_hints(TrainConfig)[name]
    options = [a for a in get_args(hint) if get_origin(a) is Literal] + [hint]
    for option in options:
        if get_origin(option) is Literal:
            return get_args(option)
    return None


def config_hash(config: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """A stable hash of a resolved config (+ code version etc.): identical trials share it."""
    payload = json.dumps({"config": config, **(extra or {})}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


# --- strict construction, shared by every config dataclass ----------------------------------------


def strict_from_dict(cls: type, values: dict[str, Any]):
    """Construct dataclass `cls` from `values`, rejecting unknown keys and values of the wrong type.

    Ints are accepted for float fields and lists for tuple fields (JSON has no tuples); nothing else
    is coerced, so `"0.1"` for a float is an error rather than a silent surprise.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__} expects a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    converted = {name: _coerce(name, value, hints[name]) for name, value in values.items()}
    return cls(**converted)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    ok, out = _match(value, hint)
    if not ok:
        raise ConfigError(f"{name}: expected {_describe(hint)}, got {value!r}")
    return out


def _match(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = get_origin(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for option in get_args(hint):
            ok, out = _match(value, option)
            if ok:
                return True, out
        return False, None
    if origin is Literal:
        return (value in get_args(hint) and type(value) is not bool), value
    if hint is type(None):
        return value is None, None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        good = isinstance(value, (int, float)) and not isinstance(value, bool)
        return good, float(value) if good else None
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, None
        (item,) = get_args(hint)[:1]
        items = [_match(v, item) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if origin is dict:
        return isinstance(value, dict), value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint))
    if origin is tuple:
        return f"a list of {_describe(get_args(hint)[0])}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))
