"""`train(config, report) -> result`: one training run, as a pure function.

No module state and no Ray: the orchestrator passes a `report` callback (called once per epoch
with a flat dict of floats) and gets the result dict back. Example, on 2% of Fashion-MNIST:

    >>> from trainers import TrainConfig, train
    >>> result = train(TrainConfig(mode="shared", data_fraction=0.02, epochs=3), print)
    >>> round(result["test_acc"], 2)  # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import copy
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from trainers.augment import BatchAugmenter, batch_indices
from trainers.config import TrainConfig
from trainers.datasets import ImageData, load_dataset
from trainers.errors import ConfigError, NonFiniteLoss, PrecisionError
from trainers.methods import ssl_phase
from trainers.modes import Mode, build_mode
from trainers.precision import DtypeGuard, autocast, grad_scaler, is_dtype_error, resolve_precision
from trainers.splits import class_balanced_indices, train_val_split

__all__ = [
    "train",
    "train_one_epoch",
    "train_step",
    "evaluate",
    "Run",
    "EpochTotals",
    "adamw",
    "prepare_data",
    "PreparedData",
    "Report",
]

Report = Callable[[dict[str, float]], None]
Checkpoint = Callable[[dict[str, Any]], None]
StepHook = Callable[[int, int, int], None]  # (epoch, step, steps_per_epoch): progress bars


@dataclass(frozen=True)
class PreparedData:
    """The three splits of one run, as uint8 tensors on the training device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    data: ImageData


def prepare_data(cfg: TrainConfig, data: ImageData | None, device: torch.device) -> PreparedData:
    """Carve the fixed validation split, then take the class-balanced fraction of the rest.

    Validation first, so it is identical across fractions; both depend only on `split_seed`, so
    every arm of a study sees exactly the same images at a given fraction.
    """
    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    if data.name != cfg.dataset:  # results are stored (and reused) under cfg.dataset
        raise ConfigError(f"config says dataset '{cfg.dataset}' but was given '{data.name}'")
    train_idx, val_idx = train_val_split(data.train_labels, cfg.val_fraction, cfg.split_seed)
    keep = class_balanced_indices(data.train_labels[train_idx], cfg.data_fraction, cfg.split_seed)
    train_idx = train_idx[keep]
    test_idx = torch.arange(len(data.test_labels))
    if cfg.max_eval_images is not None:  # a class-balanced subset, not a prefix: folder data
        cap, seed = cfg.max_eval_images, cfg.split_seed  # is stored in class order
        val_idx = _capped(val_idx, data.train_labels, cap, seed)
        test_idx = _capped(test_idx, data.test_labels, cap, seed)
    test_x, test_y = data.test_images[test_idx], data.test_labels[test_idx]

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)

    return PreparedData(
        put(data.train_images[train_idx]),
        put(data.train_labels[train_idx]),
        put(data.train_images[val_idx]),
        put(data.train_labels[val_idx]),
        put(test_x),
        put(test_y),
        data,
    )


def _capped(idx: torch.Tensor, labels: torch.Tensor, cap: int, seed: int) -> torch.Tensor:
    if len(idx) <= cap:
        return idx
    return idx[class_balanced_indices(labels[idx], cap / len(idx), seed)]


def train(
    config: TrainConfig,
    report: Report | None = None,
    *,
    data: ImageData | None = None,
    checkpoint: Checkpoint | None = None,
    resume_state: dict[str, Any] | None = None,
    on_step: StepHook | None = None,
) -> dict[str, Any]:
    """Train one configuration and return its result.

    Args:
        config: the resolved `TrainConfig`.
        report: called after every epoch with `epoch` (1-based), `train_loss`, each loss term,
            `val_acc` (the ViT's; the agent's in `agent` mode), `val_acc_agent`, `lr`,
            `hint_weight`, `epoch_seconds`, `images_per_second`; with `ssl_init` also the
            self-supervised phase's `ssl_epochs`, `ssl_seconds`, `ssl_loss_first`, `ssl_loss_last`.
        data: an already loaded dataset (the orchestrator shares one copy between trials).
        checkpoint: called after every epoch with a state dict that `resume_state` accepts
            (a snapshot: safe to keep in memory as it is).
        resume_state: continue from a state saved by `checkpoint`.
        on_step: called after every training step with (epoch, step, steps_per_epoch), epoch
            0-based and step 1-based: a progress bar's hook (it must not read device values).

    Returns:
        The last epoch's metrics plus `test_acc`, `test_acc_agent`, `best_val_acc`, `params_vit`,
        `params_agent_own`, `epochs_run`, `train_images`, `seconds`.

    Raises:
        NonFiniteLoss: a loss became NaN or infinite (names the epoch and step).
        ConfigError, DataError: bad configuration or missing data.
    """
    started = time.perf_counter()
    report = report or (lambda metrics: None)
    device = _device(config.device)
    torch.manual_seed(config.seed)
    prepared = prepare_data(config, data, device)
    ds = prepared.data
    img_size = config.img_size or ds.image_size
    run = Run.create(config, ds.num_classes, ds.channels, img_size, device, len(prepared.train_x))
    ssl = {}  # the self-supervised phase's cost, reported apart (ASHA counts supervised epochs)
    if resume_state is not None:
        ssl = resume_state.get("ssl", {})
    elif config.ssl_init != "none":  # before any optimizer step: AdamW starts from its weights
        ssl = ssl_phase(
            config,
            run.networks.get("vit"),
            prepared.train_x,
            mean=ds.mean,
            std=ds.std,
            img_size=img_size,
            precision=run.precision,
        )
    augment = BatchAugmenter(ds.mean, ds.std, ds.pad, ds.flip, img_size, device)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    start_epoch, best_val = 0, -1.0
    if resume_state is not None:
        start_epoch, best_val = run.load_state(resume_state)
        generator.set_state(resume_state["generator"])

    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, config.epochs):
        metrics = train_one_epoch(run, prepared, augment, generator, epoch, on_step)
        metrics.update(evaluate(run, prepared.val_x, prepared.val_y, augment, "val"))
        best_val = max(best_val, metrics["val_acc"])
        metrics.update(ssl)
        report(metrics)
        if checkpoint is not None:
            state = run.state(epoch + 1, best_val)
            checkpoint({**state, "generator": generator.get_state(), "ssl": dict(ssl)})

    test = evaluate(run, prepared.test_x, prepared.test_y, augment, "test")
    return {
        **metrics,
        **test,
        "best_val_acc": best_val,
        **run.mode.parameter_counts(),
        "epochs_run": config.epochs - start_epoch,
        "train_images": len(prepared.train_x),
        "seconds": time.perf_counter() - started,
    }


class Run:
    """A mode's networks with their optimizers, schedules, precision: what a checkpoint holds.

    `Run.create` builds it as `train` does (bench/ and tests step it with `train_step`).
    """

    def __init__(self, cfg: TrainConfig, mode: Mode, device: torch.device, n_train: int):
        self.cfg, self.mode, self.device = cfg, mode, device
        self.networks = mode.networks
        on_cuda = device.type == "cuda"  # fused AdamW there (tests/test_fast_path.py: same math)
        self.optimizers = [
            adamw(cfg, nn.ModuleList(self.networks[name] for name in group), fused=on_cuda)
            for group in mode.optimizer_groups()
        ]
        self.steps_per_epoch = math.ceil(n_train / cfg.batch_size)
        total = cfg.epochs * self.steps_per_epoch
        warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        schedule = _cosine(total, warmup, cfg.min_lr / cfg.lr)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in self.optimizers]
        self.params = [p for m in self.networks.values() for p in m.parameters()]
        # what one gradient-norm clip covers: each optimizer's networks apart (released), or all
        groups = [[p for group in o.param_groups for p in group["params"]] for o in self.optimizers]
        self.clip_groups = groups if cfg.clip_scope == "per_network" else [self.params]
        self.precision = resolve_precision(cfg.precision, device)
        self.autocast = autocast(self.precision, device)
        self.scaler = grad_scaler(self.precision, device)
        self.forward = mode.forward
        if cfg.compile:  # one graph for the mode's whole forward; the first steps pay to compile
            self.forward = torch.compile(self.forward)

    @classmethod
    def create(
        cls,
        cfg: TrainConfig,
        num_classes: int,
        in_chans: int,
        img_size: int,
        device: torch.device,
        n_train: int,
    ) -> Run:
        """Build the mode's networks (from torch's global RNG: seed it first) on `device`."""
        mode = build_mode(cfg, num_classes, in_chans, img_size)
        for module in mode.networks.values():
            module.to(device)
            if device.type == "cuda":  # the agent's convolutions are faster channels-last
                module.to(memory_format=torch.channels_last)
        return cls(cfg, mode, device, n_train)

    def state(self, epoch: int, best_val: float) -> dict[str, Any]:
        """A snapshot: state_dict()s alias the live weights and Adam moments, so without the
        copy a checkpoint kept in memory would silently move on with training."""
        return copy.deepcopy(
            {
                "epoch": epoch,
                "best_val_acc": best_val,
                "models": {k: m.state_dict() for k, m in self.networks.items()},
                "optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [s.state_dict() for s in self.schedulers],
                "torch_rng": torch.get_rng_state(),
                # dropout on a GPU draws from the device's generator, not the CPU one
                "cuda_rng": self._cuda_rng_state(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            }
        )

    def _cuda_rng_state(self) -> torch.Tensor | None:
        return torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    def load_state(self, state: dict[str, Any]) -> tuple[int, float]:
        for name, module in self.networks.items():
            module.load_state_dict(state["models"][name])
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state["schedulers"], strict=True):
            sch.load_state_dict(s)
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return state["epoch"], state["best_val_acc"]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available")
    return torch.device(name)


def adamw(cfg: TrainConfig, module: nn.Module, fused: bool) -> torch.optim.AdamW:
    """AdamW as the paper's recipe; `fused`: one kernel for every parameter (on CUDA, and with
    fp16 GradScaler's inf check without a host sync); else torch's default (foreach) path."""
    if cfg.weight_decay_exclude == "none":  # released: AdamW over model.parameters(), all decay
        groups = [{"params": list(module.parameters()), "weight_decay": cfg.weight_decay}]
    else:  # norms, biases, the class token and position embedding take none (timm, DeiT)
        groups = param_groups_weight_decay(
            module, cfg.weight_decay, no_weight_decay_list=("*cls_token", "*pos_embed")
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=fused or None)


def _cosine(total_steps: int, warmup_steps: int, floor: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_one_epoch(
    run: Run,
    data: PreparedData,
    augment: BatchAugmenter,
    generator: torch.Generator,
    epoch: int,
    on_step: StepHook | None = None,
) -> dict[str, float]:
    """One pass over the training split; loss terms stay on the device and are read once, at
    the end (a NaN anywhere in the epoch raises `NonFiniteLoss` naming its first step then)."""
    cfg = run.cfg
    for module in run.networks.values():
        module.train()
    started = time.perf_counter()
    totals = EpochTotals()
    batches = batch_indices(len(data.train_x), cfg.batch_size, generator, shuffle=True)
    for step, idx in enumerate(batches):
        idx = idx.to(data.train_x.device, non_blocking=True)  # host to device: no sync
        x = augment(data.train_x[idx], generator)
        y = data.train_y[idx]
        totals.add(train_step(run, x, y, epoch, step), len(idx), step)
        if on_step is not None:
            on_step(epoch, step + 1, run.steps_per_epoch)
    means = totals.read(epoch)  # the epoch's one device-to-host copy
    seconds = time.perf_counter() - started
    out = {"epoch": float(epoch + 1), "train_loss": sum(means.values())}
    out.update({f"loss_{k}": v for k, v in means.items()})
    out["lr"] = run.optimizers[0].param_groups[0]["lr"]
    out.update(run.mode.metrics(epoch))
    out["epoch_seconds"] = seconds
    out["images_per_second"] = totals.seen / seconds if seconds > 0 else 0.0
    return out


class EpochTotals:
    """Per-term sums of one epoch's loss terms, kept on the device (no sync per step).

    Also remembers, on the device, the first step whose terms were not finite and their values,
    so `read` can raise `NonFiniteLoss` naming that step after one copy to the host.
    """

    def __init__(self) -> None:
        self.names: tuple[str, ...] | None = None
        self.sums: torch.Tensor | None = None  # [terms]: sum of term x batch size
        self.first_bad: torch.Tensor | None = None  # 0-dim int64: first non-finite step, or -1
        self.bad_values: torch.Tensor | None = None  # [terms] at that step
        self.seen = 0

    def add(self, terms: dict[str, torch.Tensor], n: int, step: int) -> None:
        values = torch.stack(list(terms.values())).detach().float()
        if self.names is None:
            self.names = tuple(terms)
            self.sums = torch.zeros_like(values)
            self.first_bad = torch.full((), -1, dtype=torch.int64, device=values.device)
            self.bad_values = torch.zeros_like(values)
        elif tuple(terms) != self.names:
            raise ValueError(f"loss terms changed within an epoch: {self.names} -> {tuple(terms)}")
        self.sums += values * n
        newly_bad = ~torch.isfinite(values).all() & (self.first_bad < 0)
        self.first_bad = torch.where(newly_bad, step, self.first_bad)
        self.bad_values = torch.where(newly_bad, values, self.bad_values)
        self.seen += n

    def read(self, epoch: int) -> dict[str, float]:
        """Mean of each term over the epoch's images; raises NonFiniteLoss (0-based `epoch`)."""
        if self.names is None:
            return {}
        flat = torch.cat([self.sums / max(self.seen, 1), self.first_bad[None], self.bad_values])
        values = flat.tolist()
        k = len(self.names)
        first_bad = int(values[k])
        if first_bad >= 0:
            bad = dict(zip(self.names, values[k + 1 :], strict=True))
            raise NonFiniteLoss(epoch + 1, first_bad, bad)
        return dict(zip(self.names, values[:k], strict=True))


def train_step(
    run: Run, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int
) -> dict[str, torch.Tensor]:
    """One optimisation step on an augmented batch: the mode's forward (under the precision's
    autocast) and loss terms (float32, outside it), its backward, clipping, optimizer and
    scheduler steps. Returns the loss terms, detached, on the device: nothing here waits for
    the device (`EpochTotals` reads them once per epoch). `epoch` is 0-based; `step` names the
    step in errors.
    """
    cfg = run.cfg
    if run.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    scaler = run.scaler
    try:
        with run.autocast:
            outputs = run.forward(x)
        terms = run.mode.loss_terms(outputs, y, epoch)
        for opt in run.optimizers:
            opt.zero_grad(set_to_none=True)
        scaled = terms
        if scaler is not None:  # fp16: one scale for every term (PCGrad is invariant to it)
            scaled = {k: scaler.scale(v) for k, v in terms.items()}
        run.mode.backward(scaled)
    except RuntimeError as err:
        if not is_dtype_error(err):
            raise
        raise PrecisionError(_dtype_failure(run, x, y, epoch, err)) from None
    if scaler is not None:  # clip and step on the true gradients
        for opt in run.optimizers:
            scaler.unscale_(opt)
    if cfg.clip_grad > 0:  # every step (the released mutual trainer clips only the first)
        for params in run.clip_groups:  # no sync: a clamped scale
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
    for opt, sched in zip(run.optimizers, run.schedulers, strict=True):
        if scaler is not None:
            scaler.step(opt)  # skipped when fp16 gradients overflowed
        else:
            opt.step()
        sched.step()
    if scaler is not None:
        scaler.update()
    return {k: v.detach() for k, v in terms.items()}


def _dtype_failure(
    run: Run, x: torch.Tensor, y: torch.Tensor, epoch: int, err: RuntimeError
) -> str:
    """One line naming the mode, the precision and the op that mixed dtypes.

    A backward error does not say which forward op made it, so the losses are run again under a
    `DtypeGuard`; if they are clean, the op is the innermost frame of the original error.
    """
    head = f"mode '{run.cfg.mode}' at precision {run.precision}"
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    guard = DtypeGuard()
    try:
        with torch.no_grad():
            with run.autocast:
                outputs = run.forward(x)
            with guard:
                run.mode.loss_terms(outputs, y, epoch)
    except RuntimeError:  # the guard has recorded what came before
        pass
    if guard.first() is not None:
        return f"{head}: loss op {guard.first()} ({reason})"
    frame = traceback.extract_tb(err.__traceback__)[-1]
    where = f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
    return f"{head}: {where}: {reason}"


@torch.no_grad()
def evaluate(
    run: Run, x_all: torch.Tensor, y_all: torch.Tensor, augment: BatchAugmenter, split: str
) -> dict[str, float]:
    """Top-1 accuracy of every network on one split, as fractions in [0, 1]: `<split>_acc` is the
    mode's primary network's, `<split>_acc_<name>` each other network's but the ViT's. Counts
    stay on the device until one read at the end."""
    for module in run.networks.values():
        module.eval()
    names = list(run.networks)
    correct = torch.zeros(len(names), dtype=torch.int64, device=x_all.device)
    bs = run.cfg.eval_batch_size
    for start in range(0, len(x_all), bs):
        x = augment.eval(x_all[start : start + bs])
        y = y_all[start : start + bs]
        with run.autocast:
            logits = run.mode.logits(x)
        correct += torch.stack([(logits[name].argmax(dim=1) == y).sum() for name in names])
    n = max(len(x_all), 1)
    acc = {name: c / n for name, c in zip(names, correct.tolist(), strict=True)}
    out = {f"{split}_acc": acc[run.mode.primary]}
    out.update({f"{split}_acc_{name}": a for name, a in acc.items() if name != "vit"})
    return out
