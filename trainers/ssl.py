"""Self-supervised initialisation: DINO-style self-distillation on the training split itself.

Gani, Naseer & Yaqub, "How to train vision transformer on small-scale datasets?" (BMVC 2022):
pre-train the ViT with DINO (Caron et al., ICCV 2021) on the small dataset, no extra data, then
fine-tune it supervised from the teacher's weights. Here:

- Views: `global_crops` (2) random-resized crops of area scale `global_scale` and `local_crops` of
  `local_scale`, each flipped with p = 0.5 and jittered in brightness and contrast (+-0.4, as
  DINO's colour jitter on grey images), all batched with one `grid_sample` per view.
- Student = the ViT (its pooled pre-logit features) + a projection head (3-layer MLP, L2-normalised
  bottleneck, `OUT_DIM` weight-normalised prototypes). Teacher = a copy updated only as the EMA of
  the student, theta_t <- m theta_t + (1 - m) theta_s, with m rising from `momentum` to 1 on a
  cosine over the phase (DINO). Teacher outputs are centred (centre = EMA of their batch means,
  `CENTER_MOMENTUM`) and sharpened by `teacher_temp`; the student's by `STUDENT_TEMP`.
- Loss: cross-entropy between the teacher's distribution on each global view and the student's on
  every other view, averaged over pairs.
- The ViT's classifier head takes no part; after the phase, `DinoResult.backbone` holds the
  teacher's ViT weights (classifier included, untouched) for the supervised phase to load.

Example (two epochs on random images; on real data see tests/test_methods.py):
    >>> import torch
    >>> from trainers.vit import build_vit
    >>> vit = build_vit(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=36,
    ...                 depth=1, num_heads=9, mlp_ratio=2.0, drop_rate=0.0, attn_drop_rate=0.0,
    ...                 drop_path_rate=0.0)
    >>> images = torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8)
    >>> result = dino_pretrain(vit, images, DinoSettings(epochs=2, batch_size=16, local_crops=2),
    ...                        mean=(0.5,), std=(0.25,), generator=torch.Generator())
    >>> len(result.losses), sorted(result.backbone) == sorted(vit.state_dict())
    (2, True)
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch import nn

from trainers.augment import batch_indices

__all__ = [
    "DinoHead",
    "DinoLoss",
    "DinoResult",
    "DinoSettings",
    "MultiCrop",
    "dino_pretrain",
    "ema_update",
]

OUT_DIM = 1024  # prototypes: DINO uses 65536 for ImageNet; small data needs far fewer
HIDDEN_DIM = 512  # projection head MLP width (DINO: 2048), sized for tiny/ViT-S widths
BOTTLENECK_DIM = 128  # L2-normalised bottleneck (DINO: 256)
STUDENT_TEMP = 0.1  # DINO
CENTER_MOMENTUM = 0.9  # DINO
JITTER = 0.4  # brightness and contrast factors in [1 - 0.4, 1 + 0.4] (DINO's colour jitter)
CLIP_GRAD = 3.0  # DINO clips the student's gradient norm at 3


@dataclass(frozen=True)
class DinoSettings:
    """One DINO phase; `TrainConfig.ssl_*` fields fill it (see trainers.config for reasons)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.04
    min_lr: float = 1e-6
    global_crops: int = 2
    local_crops: int = 4
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    teacher_temp: float = 0.02
    momentum: float = 0.99


@dataclass
class DinoResult:
    backbone: dict[str, torch.Tensor]  # the teacher's ViT state_dict, for the supervised phase
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    # The loss is H(teacher) + KL(teacher || student): the student controls only the KL, while the
    # teacher's entropy rises as centring (an EMA of its outputs) catches up early in a phase
    kls: list[float] = field(default_factory=list)  # mean KL part per epoch
    seconds: float = 0.0  # wall time of the whole phase: its cost, reported apart


class MultiCrop:
    """Random-resized crops, flips and brightness/contrast jitter of a uint8 batch, batched.

    Every view has the model's input size (DINO's local crops are smaller, 96 vs 224 px, and the
    ViT interpolates its position embeddings; here a local crop is resampled to full size, so
    the ViT and SOPE see one grid). Draws come from the generator passed in.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], out_size: int):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.out_size = out_size

    def view(
        self, images: torch.Tensor, scale: tuple[float, float], generator: torch.Generator
    ) -> torch.Tensor:
        b = len(images)

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(b, generator=generator)

        area = uniform(*scale)
        log_ratio = uniform(math.log(3 / 4), math.log(4 / 3))
        width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)  # fractions of the image side
        height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
        cx = uniform(0, 1) * (1 - width) + width / 2  # centre, so the box stays inside
        cy = uniform(0, 1) * (1 - height) + height / 2
        flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
        brightness = uniform(1 - JITTER, 1 + JITTER)
        contrast = uniform(1 - JITTER, 1 + JITTER)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = width * flip
        theta[:, 0, 2] = 2 * cx - 1
        theta[:, 1, 1] = height
        theta[:, 1, 2] = 2 * cy - 1
        device = images.device
        size = (b, images.shape[1], self.out_size, self.out_size)
        grid = F.affine_grid(theta.to(device), size, align_corners=False)
        x = F.grid_sample(images.float() / 255, grid, mode="bilinear", align_corners=False)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast.to(device).view(-1, 1, 1, 1) + mean
        x = (x * brightness.to(device).view(-1, 1, 1, 1)).clamp(0, 1)
        return (x - self.mean.to(device)) / self.std.to(device)


class DinoHead(nn.Module):
    """DINO's projection head: MLP -> L2-normalised bottleneck -> unit-norm prototypes."""

    def __init__(self, in_dim: int, out_dim: int = OUT_DIM):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, HIDDEN_DIM),
            nn.GELU(),
            nn.Linear(HIDDEN_DIM, HIDDEN_DIM),
            nn.GELU(),
            nn.Linear(HIDDEN_DIM, BOTTLENECK_DIM),
        )
        # DINO's weight-normalised last layer with its gain fixed at 1 (norm_last_layer=True)
        self.prototypes = nn.Parameter(torch.randn(out_dim, BOTTLENECK_DIM) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        return F.linear(z, F.normalize(self.prototypes, dim=-1))


class _Branch(nn.Module):
    """The ViT's pooled features (class token or average, after its final norm) + the head."""

    def __init__(self, vit: nn.Module, head: DinoHead):
        super().__init__()
        self.vit, self.head = vit, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit.forward_head(self.vit.forward_features(x), pre_logits=True))


class DinoLoss(nn.Module):
    """Cross-entropy of centred, sharpened teacher targets on the other views' student outputs."""

    def __init__(self, out_dim: int, teacher_temp: float):
        super().__init__()
        self.teacher_temp = teacher_temp
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.last_entropy = torch.zeros(())  # mean entropy of the last targets (no gradient)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        targets = [
            F.softmax((t.float() - self.center) / self.teacher_temp, dim=-1).detach()
            for t in teacher
        ]
        logp = [F.log_softmax(s.float() / STUDENT_TEMP, dim=-1) for s in student]
        with torch.no_grad():
            entropy = [-(t * t.clamp_min(1e-12).log()).sum(-1).mean() for t in targets]
            self.last_entropy = torch.stack(entropy).mean()
        total, pairs = 0.0, 0
        for i, target in enumerate(targets):
            for j, lp in enumerate(logp):
                if i != j:  # a global view is not its own target
                    total = total + (-(target * lp).sum(dim=-1)).mean()
                    pairs += 1
        self._update_center(torch.cat(teacher))
        return total / pairs

    @torch.no_grad()
    def _update_center(self, teacher: torch.Tensor) -> None:
        batch_mean = teacher.float().mean(dim=0, keepdim=True)
        self.center.mul_(CENTER_MOMENTUM).add_(batch_mean, alpha=1 - CENTER_MOMENTUM)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """theta_t <- m theta_t + (1 - m) theta_s for every parameter; buffers (BatchNorm) copied."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


def _cosine(step: int, total: int, start: float, end: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))


def dino_pretrain(
    vit: nn.Module,
    images: torch.Tensor,
    settings: DinoSettings,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator,
    out_size: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    report: Callable[[dict[str, float]], None] | None = None,
) -> DinoResult:
    """Self-distil `vit` (trained in place as the student) on uint8 `images` [N, C, H, W].

    Labels are never seen. Returns the teacher's ViT weights, the mean loss of each epoch and the
    phase's wall time. `autocast()` wraps the forwards (the loss is computed in fp32 outside it);
    `scaler` is fp16's GradScaler. `report` gets `ssl_epoch`, `ssl_loss`, `ssl_kl` per epoch.
    """
    started = time.perf_counter()
    device = next(vit.parameters()).device
    dim = vit.num_features
    student = _Branch(vit, DinoHead(dim)).to(device)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    crops = MultiCrop(mean, std, out_size or images.shape[-1])
    loss_fn = DinoLoss(OUT_DIM, settings.teacher_temp).to(device)
    groups = param_groups_weight_decay(
        student, settings.weight_decay, no_weight_decay_list=("*cls_token", "*pos_embed")
    )
    optimizer = torch.optim.AdamW(groups, lr=settings.lr)
    steps_per_epoch = math.ceil(len(images) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    result = DinoResult(backbone={})
    step = 0
    for epoch in range(settings.epochs):
        student.train()
        teacher.train()  # BatchNorm (SOPE/DAFF) normalises with batch statistics, as DINO's
        running, running_kl, seen = 0.0, 0.0, 0
        for idx in batch_indices(len(images), settings.batch_size, generator, shuffle=True):
            batch = images[idx.to(images.device)]
            views = [crops.view(batch, settings.global_scale, generator)]
            views += [
                crops.view(batch, settings.global_scale, generator)
                for _ in range(settings.global_crops - 1)
            ]
            views += [
                crops.view(batch, settings.local_scale, generator)
                for _ in range(settings.local_crops)
            ]
            lr = _cosine(step, total, settings.lr, settings.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            ctx = autocast() if autocast is not None else contextlib.nullcontext()
            with ctx:
                with torch.no_grad():
                    t_out = [teacher(v) for v in views[: settings.global_crops]]
                s_out = [student(v) for v in views]
            loss = loss_fn(s_out, t_out)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"DINO loss became {loss.item()} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:  # fp16: scale the loss, unscale before clipping
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(student.parameters(), CLIP_GRAD)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), CLIP_GRAD)
                optimizer.step()
            ema_update(teacher, student, _cosine(step, total, settings.momentum, 1.0))
            step += 1
            value = loss.item()
            running += value * len(idx)
            running_kl += (value - float(loss_fn.last_entropy)) * len(idx)
            seen += len(idx)
        result.losses.append(running / max(1, seen))
        result.kls.append(running_kl / max(1, seen))
        if report is not None:
            report(
                {
                    "ssl_epoch": float(epoch + 1),
                    "ssl_loss": result.losses[-1],
                    "ssl_kl": result.kls[-1],
                }
            )
    result.backbone = {k: v.detach().clone() for k, v in teacher.vit.state_dict().items()}
    result.seconds = time.perf_counter() - started
    return result
