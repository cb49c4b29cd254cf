"""The sibling methods as switches of one ViT: what `TrainConfig`'s method fields build.

Two entry points, so the modes and the training loop need one call each:

- `build_method_vit(cfg, ...)`: the ViT with the chosen pooling, DHVT parts and attention init
  (every mode with a ViT builds it here, so `shared` + `impulse` is bootstrapping from a ViT whose
  attention starts as a convolution).
- `ssl_phase(cfg, vit, ...)`: with `ssl_init=dino`, self-distils the ViT on the training images
  (labels unused), then loads the teacher's weights into it. Its cost is returned, not hidden: the
  trainer reports `ssl_epochs` and `ssl_seconds` with every epoch and the result.

What the shared agent shares with a DHVT ViT (trainers.config rejects the rest): the agent is
built from each block's value/output projections and fc1/fc2. With `patch_embed=sope` it keeps its
own stem (it never shared the patch embedding); with `head_tokens` it shares V/O as before and
the head-token projection stays the ViT's alone (query and key are unused by the agent anyway);
`mlp=daff` is rejected in shared mode (its depthwise conv and BatchNorms have no shared
counterpart in the agent's 1x1 convolutions).
"""

from __future__ import annotations

import dataclasses

import torch
from timm.models.vision_transformer import VisionTransformer

from trainers.config import TrainConfig
from trainers.dhvt import dhvt_parts
from trainers.init_schemes import apply_init
from trainers.precision import autocast, grad_scaler
from trainers.ssl import DinoSettings, dino_pretrain
from trainers.vit import ViTShape, build_vit

__all__ = ["build_method_vit", "dino_settings", "ssl_phase", "vit_shape"]


# The ViTShape fields a TrainConfig holds under the same names (the data fixes the others).
_CONFIG_SHAPE_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


def vit_shape(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> ViTShape:
    """The run's ViT geometry (its agent's too): the data fixes classes, channels and image size,
    `cfg` the rest, under the same names."""
    from_cfg = {name: getattr(cfg, name) for name in _CONFIG_SHAPE_FIELDS}
    return ViTShape(img_size=img_size, in_chans=in_chans, num_classes=num_classes, **from_cfg)


def build_method_vit(
    cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int
) -> VisionTransformer:
    """The run's ViT: timm's, with `pool`, the DHVT parts and `init` applied (global torch RNG)."""
    parts = dhvt_parts(
        patch_embed=cfg.patch_embed,
        mlp=cfg.mlp,
        head_tokens=cfg.head_tokens,
        img_size=img_size,
        patch_size=cfg.patch_size,
        pool=cfg.pool,
    )
    vit = build_vit(
        **dataclasses.asdict(vit_shape(cfg, num_classes, in_chans, img_size)),
        drop_rate=cfg.drop_rate,
        attn_drop_rate=cfg.attn_drop_rate,
        drop_path_rate=cfg.drop_path_rate,
        pos_drop_rate=cfg.drop_rate if cfg.vit_dropout == "pos_embed" else 0.0,
        pool=cfg.pool,
        **parts,
    )
    apply_init(vit, cfg.init, impulse_window=cfg.impulse_window)
    return vit


def dino_settings(cfg: TrainConfig) -> DinoSettings:
    """The DINO phase of a config: its ssl_* fields, and the run's batch size and weight decay."""
    return DinoSettings(
        epochs=cfg.ssl_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.ssl_lr,
        weight_decay=cfg.weight_decay,
        min_lr=cfg.min_lr,
        local_crops=cfg.ssl_local_crops,
        global_scale=tuple(cfg.ssl_global_scale),
        local_scale=tuple(cfg.ssl_local_scale),
        teacher_temp=cfg.ssl_teacher_temp,
        momentum=cfg.ssl_momentum,
    )


def ssl_phase(
    cfg: TrainConfig,
    vit: VisionTransformer | None,
    train_images: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    img_size: int,
    precision: str = "fp32",
) -> dict[str, float]:
    """Run the configured self-supervised phase on `vit` in place; return its cost and losses.

    With `ssl_init=none` nothing runs and every figure is 0, so reports can sum and compare them.
    The generator is seeded from `cfg.seed` apart from the supervised phase's, so adding the phase
    does not change which batches the supervised epochs see.
    """
    if cfg.ssl_init == "none" or vit is None:
        return {"ssl_epochs": 0.0, "ssl_seconds": 0.0}
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919)
    device = next(vit.parameters()).device
    result = dino_pretrain(
        vit,
        train_images,
        dino_settings(cfg),
        mean=mean,
        std=std,
        generator=generator,
        out_size=img_size,
        autocast=lambda: autocast(precision, device),  # the supervised phase's precision
        scaler=grad_scaler(precision, device),
    )
    vit.load_state_dict(result.backbone)
    return {
        "ssl_epochs": float(cfg.ssl_epochs),
        "ssl_seconds": result.seconds,
        "ssl_loss_first": result.losses[0],
        "ssl_loss_last": result.losses[-1],
    }
