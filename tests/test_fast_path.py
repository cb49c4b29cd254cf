"""Every fast path equals the plain one (STYLE.md 13), on CPU, with the tolerance stated:

- the agent's factored generalized convolution (1x1, per-head shift, 1x1) against the assembled
  k x k kernel: outputs and gradients, float64 to 1e-12, float32 to 1e-5 relative;
- SDPA attention in the ViT against timm's explicit softmax(q k^T / sqrt(d)) v;
- fused AdamW (what CUDA runs) against torch's default foreach AdamW;
- `compile=True` against eager, for every registered mode (graph capture with the aot_eager
  backend here; a slow test compiles shared mode with inductor);
- bf16 autocast against fp32: losses within 3%, gradients aligned (cosine > 0.98);
- the sync-free epoch (terms summed on the device, read once) against per-step reads.

On CUDA (skipped here) an epoch of steps runs under `torch.cuda.set_sync_debug_mode("error")`.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import SMALL_MODEL

from trainers.agent import (
    factored_generalized_conv2d,
    generalized_conv2d,
    generalized_conv_bias,
    head_matrices,
)
from trainers.augment import BatchAugmenter, batch_indices
from trainers.config import TrainConfig
from trainers.errors import NonFiniteLoss
from trainers.modes import MODES, used_fields
from trainers.training import EpochTotals, Run, adamw, train_step

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


def _run(mode: str, device: str = "cpu", **changes) -> Run:
    cfg = TrainConfig(mode=mode, device=device, **{**used_fields(mode, SMALL_MODEL), **changes})
    torch.manual_seed(0)
    run = Run.create(cfg, 10, 3, 16, torch.device(device), n_train=64)
    for module in run.networks.values():
        module.train()
    return run


def _batch(device: str = "cpu", seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 16, 16, generator=g)
    return x.to(device), torch.randint(0, 10, (8,), generator=g).to(device)


def _losses_and_grads(run: Run, x, y):
    """Loss terms and every parameter's gradient of one forward/backward (no optimizer step)."""
    for module in run.networks.values():
        for p in module.parameters():
            p.grad = None
    with run.autocast:
        outputs = run.forward(x)
    terms = run.mode.loss_terms(outputs, y, epoch=0)
    run.mode.backward(terms)
    grads = {
        f"{name}.{p_name}": p.grad.clone()
        for name, module in run.networks.items()
        for p_name, p in module.named_parameters()
        if p.grad is not None
    }
    return {k: v.detach() for k, v in terms.items()}, grads


def _assert_close(a: dict, b: dict, rtol: float, atol: float):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol, msg=key)


def _assert_same_step(got: Run, want: Run, rtol: float = 1e-5, atol: float = 1e-6):
    """One step of `got` on `_batch()` gives `want`'s loss terms to `rtol` and its gradients to
    10 x `rtol` (one reduction more), both with slack `atol`. Defaults: float32 summation order."""
    x, y = _batch()
    got_terms, got_grads = _losses_and_grads(got, x, y)
    want_terms, want_grads = _losses_and_grads(want, x, y)
    _assert_close(got_terms, want_terms, rtol=rtol, atol=atol)
    _assert_close(got_grads, want_grads, rtol=10 * rtol, atol=atol)


# --- the agent's factored convolution -------------------------------------------------------------


@pytest.mark.parametrize("num_heads, dim", [(4, 36), (6, 36), (9, 36), (10, 40)])
def test_factored_conv_equals_the_assembled_kernel_with_gradients(num_heads, dim):
    g = torch.Generator().manual_seed(num_heads)
    kw = dict(dtype=torch.float64, generator=g)
    x = torch.randn(2, dim, 5, 6, **kw).requires_grad_()
    w_v, w_o = (torch.randn(dim, dim, **kw).requires_grad_() for _ in range(2))
    b_v, b_o = torch.randn(dim, **kw), torch.randn(dim, **kw)

    def outputs(fn):
        out = fn(x, generalized_conv_bias(b_v, w_o, b_o))
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(),
                                    (x, w_v, w_o))  # fmt: skip
        return out, grads

    dense, dense_grads = outputs(
        lambda x, b: generalized_conv2d(x, head_matrices(w_v, w_o, num_heads), b)
    )
    fact, fact_grads = outputs(lambda x, b: factored_generalized_conv2d(x, w_v, w_o, b, num_heads))
    torch.testing.assert_close(fact, dense, rtol=1e-12, atol=1e-12)
    for got, want in zip(fact_grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("mode", ["shared", "joint", "agent"])
def test_agent_factored_path_equals_the_dense_kernel_in_training(mode):
    """float32, a whole step's losses and gradients: relative 1e-5 (summation order only)."""
    fast = _run(mode)
    plain = _run(mode)
    for block in plain.networks["agent"].blocks:
        block.dense_kernel = True
    _assert_same_step(fast, plain)


# --- SDPA, fused AdamW ----------------------------------------------------------------------------


def test_vit_uses_sdpa_and_it_equals_explicit_attention():
    fast, plain = _run("vit"), _run("vit")
    assert all(block.attn.fused_attn for block in fast.networks["vit"].blocks)
    for block in plain.networks["vit"].blocks:
        block.attn.fused_attn = False
    _assert_same_step(fast, plain)


def test_fused_adamw_equals_the_default_adamw():
    """The optimizer alone (what CUDA runs, on CPU): the same gradients applied for three steps
    to two copies of the shared-mode networks give the same parameters to 1e-6 relative."""
    run = _run("shared")
    nets = [torch.nn.ModuleList(run.networks.values()) for _ in range(2)]
    nets[1] = copy.deepcopy(nets[0])
    optimizers = [adamw(run.cfg, net, fused=f) for net, f in zip(nets, (True, False), strict=True)]
    assert optimizers[0].defaults["fused"] and not optimizers[1].defaults["fused"]
    initial = [p.detach().clone() for p in nets[0].parameters()]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g) * 1e-2 for p in nets[0].parameters()]
        for net, opt in zip(nets, optimizers, strict=True):
            for p, grad in zip(net.parameters(), grads, strict=True):
                p.grad = grad.clone()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    moved = zip(nets[0].parameters(), initial, strict=True)
    assert all(not torch.equal(a, b) for a, b in moved)  # every parameter took the steps


# --- compile --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_compile_equals_eager_for_every_mode(mode, monkeypatch):
    """`compile=True` captures each mode's whole forward (aot_eager: dynamo + AOT autograd,
    without inductor's C++ build) and gives eager's losses and gradients."""
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    compiled, eager = _run(mode, compile=True), _run(mode)
    assert compiled.forward is not compiled.mode.forward
    _losses_and_grads(compiled, *_batch())  # captures the graph: the compared step reuses it
    _assert_same_step(compiled, eager)


@pytest.mark.slow
def test_compile_with_inductor_equals_eager_in_shared_mode():
    torch._dynamo.reset()
    compiled, eager = _run("shared", compile=True), _run("shared")
    _assert_same_step(compiled, eager, rtol=1e-4, atol=1e-5)


# --- bf16 against fp32 ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_bf16_autocast_is_close_to_fp32(mode):
    """bf16 has an 8-bit mantissa: loss terms within 3%, each gradient's direction kept
    (cosine > 0.98 for tensors with a non-negligible gradient)."""
    low, full = _run(mode, precision="bf16"), _run(mode, precision="fp32")
    x, y = _batch()
    low_terms, low_grads = _losses_and_grads(low, x, y)
    full_terms, full_grads = _losses_and_grads(full, x, y)
    _assert_close(low_terms, full_terms, rtol=3e-2, atol=1e-3)
    for name, g in full_grads.items():
        if g.norm() > 1e-4:
            assert F.cosine_similarity(low_grads[name].flatten(), g.flatten(), dim=0) > 0.98, name


# --- no host sync in the step ---------------------------------------------------------------------


def test_epoch_totals_equal_per_step_reads_and_name_the_first_bad_step():
    run = _run("shared")
    totals, by_hand, seen = EpochTotals(), {}, 0
    for step in range(3):
        x, y = _batch(seed=step)
        terms = train_step(run, x, y, epoch=0, step=step)
        assert all(t.dim() == 0 for t in terms.values())  # tensors: nothing read
        totals.add(terms, n=8 - step, step=step)
        for k, v in terms.items():
            by_hand[k] = by_hand.get(k, 0.0) + float(v) * (8 - step)
        seen += 8 - step
    means = totals.read(epoch=0)
    assert means == pytest.approx({k: v / seen for k, v in by_hand.items()}, rel=1e-6)
    bad = EpochTotals()
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf")]):
        bad.add({"cls": torch.tensor(value), "hint": torch.tensor(0.5)}, n=4, step=step)
    with pytest.raises(NonFiniteLoss, match=r"epoch 3, step 2 \(cls=nan, hint=0.5\)"):
        bad.read(epoch=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("grad_align", ["none", "pcgrad"])
def test_cuda_steps_never_sync_with_the_host(mode, grad_align):
    if grad_align == "pcgrad" and "grad_align" not in MODES[mode].fields:
        pytest.skip(f"{mode} has no grad_align")
    options = {"grad_align": grad_align} if grad_align != "none" else {}
    run = _run(mode, device="cuda", **options)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, device="cuda")
    labels = torch.randint(0, 10, (64,), device="cuda")
    augment = BatchAugmenter((0.5,) * 3, (0.25,) * 3, pad=2, flip=True, device="cuda")
    generator = torch.Generator().manual_seed(0)
    totals = EpochTotals()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, idx in enumerate(batch_indices(64, 8, generator)):
            idx = idx.to("cuda", non_blocking=True)
            x, y = augment(images[idx], generator), labels[idx]
            totals.add(train_step(run, x, y, epoch=0, step=step), len(idx), step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v == v for v in totals.read(epoch=0).values())  # the one read, after the epoch
