"""Numeric precision of a training run: the forward's autocast, loss scaling, and a dtype guard.

`precision` in `TrainConfig` picks the forward's autocast dtype; losses always compute in float32
(`trainers.losses`). `DtypeGuard` is how tests (and a failing step's diagnosis) check that no loss
mixes dtypes: CPU kernels accept a float32/bfloat16 mix that CUDA rejects in the backward
("Found dtype BFloat16 but expected Float"), so on a CPU the mix must be looked for.

Example:
    >>> import torch
    >>> [resolve_precision("auto", torch.device(d)) for d in ("cpu", "cuda")]
    ['fp32', 'bf16']
    >>> with DtypeGuard() as guard:
    ...     _ = torch.ones(2) - torch.ones(2, dtype=torch.bfloat16)
    >>> guard.violations[0].split(":")[0]
    'Tensor.sub'
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils._pytree import tree_leaves

__all__ = [
    "AUTOCAST_DTYPES",
    "DtypeGuard",
    "autocast",
    "grad_scaler",
    "is_dtype_error",
    "resolve_precision",
    "upcast",
]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # fp32: no autocast


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 to float32; float32 and float64 unchanged (tests check losses in fp64)."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 on CUDA (tensor cores, no loss scaling needed) and fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward's autocast context (CPU autocast for bf16/fp16 on a CPU: the GPU's path)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def is_dtype_error(err: BaseException) -> bool:
    """A RuntimeError from mixing floating dtypes in one op (forward or backward)."""
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "expected scalar type" in text
        or "Found dtype" in text
        or ("dtype" in text and "expected" in text and "same dtype" in text)
        or "should be the same" in text
    )


# Reductions that produce a loss or a projection coefficient: their floating inputs must be fp32.
_REDUCTIONS = {
    "torch.nn.functional.cross_entropy",
    "torch.nn.functional.kl_div",
    "torch.nn.functional.mse_loss",
    "torch.nn.functional.log_softmax",
    "torch.dot",
    "Tensor.sum",
    "Tensor.mean",
    "Tensor.norm",
}


class DtypeGuard(TorchFunctionMode):
    """Records every torch op, run while active, that mixes floating dtypes among its tensor
    inputs, or feeds a loss reduction (CE, KL, MSE, sums, means, dot products) float16 or
    bfloat16. `violations` holds one line per offence, `"op: dtypes"`; `first()` the first.

    Meant around loss code, not the forward: a bf16 forward legitimately adds bf16 branches to
    its float32 residual stream.
    """

    def __init__(self) -> None:
        super().__init__()
        self.violations: list[str] = []
        self.checked = 0  # ops seen: a guard that saw nothing proves nothing

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [
            t
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.is_floating_point()
        ]
        if tensors:
            self.checked += 1
            name = _op_name(func)
            dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors})
            if len(dtypes) > 1:
                self.violations.append(f"{name}: mixes {', '.join(dtypes)}")
            elif name in _REDUCTIONS and dtypes[0] in ("bfloat16", "float16"):
                self.violations.append(f"{name}: reduces {dtypes[0]}, not float32")
        return func(*args, **kwargs)

    def first(self) -> str | None:
        return self.violations[0] if self.violations else None


def _op_name(func) -> str:
    try:
        name = resolve_name(func)
    except Exception:  # noqa: BLE001 - a name is only for messages
        name = None
    name = name or getattr(func, "__qualname__", None) or repr(func)
    return name.replace("torch._C.TensorBase.", "Tensor.").replace("torch.Tensor.", "Tensor.")
