"""Every mode and loss option trains under every precision, and no loss mixes dtypes.

CPU autocast runs the GPU's mixed-precision path but its kernels accept a float32/bfloat16 mix
that CUDA rejects in the backward ("Found dtype BFloat16 but expected Float": the ln_mse hint on
an H100).
So besides a finite loss, each step runs its losses and PCGrad's projection under a `DtypeGuard`:
every op there must see one floating dtype, and every loss reduction float32. On the code before
the fix the guard failed every ln_mse and l2_mse case under bf16 and fp16. The CUDA grid is the
same cases on a GPU, skipped without one.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers import SMALL_MODEL  # ~50 cases: see there why this size

from trainers.config import TrainConfig, field_choices
from trainers.errors import PrecisionError
from trainers.losses import hint_loss, kd_loss, resample_tokens
from trainers.modes import MODES, used_fields
from trainers.pcgrad import aligned_backward
from trainers.precision import DtypeGuard, is_dtype_error, resolve_precision
from trainers.training import Run, train_step

PRECISIONS = ("fp32", "bf16", "fp16")
LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}
LOSS_OPTIONS = ("hint_distance", "resample", "grad_align")  # every value of each, where used


# The sibling methods' switches (trainers.methods) with each mode that takes them: the impulse and
# mimetic inits change only weights, but gap pooling, SOPE, DAFF and head tokens change the graph
METHOD_OPTIONS = [
    ("vit", dict(init="impulse", pool="gap")),
    ("vit", dict(init="mimetic")),
    ("vit", dict(patch_embed="sope", mlp="daff", head_tokens=True)),
    ("shared", dict(init="impulse", pool="gap")),
    ("shared", dict(patch_embed="sope", head_tokens=True)),
    ("joint", dict(mlp="daff", pool="gap")),
]


def _grid() -> list[tuple[str, dict]]:
    """(mode, options) for every registered mode and every combination of the loss options it
    uses (a mode registered later is in the grid without editing this file), and the sibling
    methods' switches."""
    cases = []
    for name, mode in MODES.items():
        used = [field for field in LOSS_OPTIONS if field in mode.fields]
        for values in itertools.product(*(field_choices(field) for field in used)):
            cases.append((name, dict(zip(used, values, strict=True))))
    cases += METHOD_OPTIONS
    return cases


CASES = [
    pytest.param(
        mode, options, precision, id="-".join([mode, *map(str, options.values()), precision])
    )
    for (mode, options), precision in itertools.product(_grid(), PRECISIONS)
]


def _run(mode: str, options: dict, precision: str, device: str) -> Run:
    model = used_fields(mode, SMALL_MODEL)
    cfg = TrainConfig(mode=mode, precision=precision, device=device, **model, **options)
    torch.manual_seed(0)
    run = Run.create(cfg, 10, 3, 16, torch.device(device), n_train=64)
    for module in run.networks.values():
        module.train()
    return run


def _guard(run: Run) -> DtypeGuard:
    """A DtypeGuard active around the mode's losses and backward (PCGrad's projection), nowhere
    else: a bf16 forward adds bf16 branches to a float32 residual stream by design."""
    guard = DtypeGuard()

    def guarded(fn):
        def wrapper(*args, **kwargs):
            with guard:
                return fn(*args, **kwargs)

        return wrapper

    run.mode.loss_terms = guarded(run.mode.loss_terms)
    run.mode.backward = guarded(run.mode.backward)
    return guard


def _steps(run: Run, device: str, steps: int = 2) -> list[dict[str, float]]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for step in range(steps):
        x = torch.randn(8, 3, 16, 16, generator=generator).to(device)
        y = torch.randint(0, 10, (8,), generator=generator).to(device)
        out.append({k: float(v) for k, v in train_step(run, x, y, epoch=0, step=step).items()})
    return out


def _check_case(mode, options, precision, device):
    run = _run(mode, options, precision, device)
    assert run.precision == precision
    guard = _guard(run)
    history = _steps(run, device)
    for values in history:
        assert values and all(torch.isfinite(torch.tensor(v)) for v in values.values()), values
    assert guard.checked >= 2 * len(history[0])  # the guard saw every loss's ops
    assert guard.violations == [], f"{mode} {options} {precision}: {guard.violations}"
    if "hint" in MODES[mode].fields:  # the hint ran, with its resampling
        assert set(history[0]) == {"cls_vit", "cls_agent", "kd_vit", "kd_agent", "hint"}


@pytest.mark.parametrize("mode, options, precision", CASES)
def test_every_mode_and_loss_option_trains_on_cpu_without_mixing_dtypes(mode, options, precision):
    torch.set_num_threads(1)
    _check_case(mode, options, precision, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode, options, precision", CASES)
def test_every_mode_and_loss_option_trains_on_cuda_without_mixing_dtypes(mode, options, precision):
    _check_case(mode, options, precision, "cuda")


def test_auto_precision_is_bf16_on_cuda_and_fp32_on_cpu():
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"
    run = _run("vit", {}, "auto", "cpu")
    assert run.precision == "fp32" and run.scaler is None
    assert _run("vit", {}, "fp16", "cpu").scaler is not None  # fp16 needs loss scaling


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_each_loss_computes_in_fp32_whatever_its_inputs(low):
    """Every loss, fed one float32 and one low-precision input (as autocast hands them over),
    returns float32 and mixes nothing; the value equals the all-float32 computation."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 16, 8, generator=g), torch.randn(4, 4, 8, generator=g)
    za, zb = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    grids = dict(vit_grid=(4, 4), agent_grids=[(2, 2)])
    for distance, resample in itertools.product(("ln_mse", "l2_mse"), ("avgpool1d", "interp2d")):
        options = dict(layers=None, distance=distance, resample=resample, **grids)
        with DtypeGuard() as guard:
            mixed = hint_loss([a], [b.to(low)], **options)
        exact = hint_loss([a], [b.to(low).float()], **options)
        assert guard.violations == [] and mixed.dtype == torch.float32, guard.violations
        assert torch.equal(mixed, exact)
    with DtypeGuard() as guard:
        kd = kd_loss(za.to(low), zb, temperature=4.0)
        pooled = resample_tokens(a.to(low), 4, (4, 4), (2, 2), "interp2d")
    assert guard.violations == [] and kd.dtype == pooled.dtype == torch.float32
    assert torch.equal(kd, kd_loss(za.to(low).float(), zb, temperature=4.0))


def test_pcgrad_projects_in_fp32_on_low_precision_losses():
    p = torch.nn.Parameter(torch.randn(5))
    q = torch.nn.Parameter(torch.randn(3))
    with DtypeGuard() as guard:
        loss_vit, loss_agent = (p * 2).sum().to(torch.bfloat16), -p.sum() + q.sum()
        aligned_backward(loss_vit, loss_agent, shared_params=[p], other_params=[q])
    assert p.grad.dtype == q.grad.dtype == torch.float32
    assert not [v for v in guard.violations if "dot" in v or "norm" in v]


def test_the_guard_catches_the_mix_of_the_bug():
    """What the ln_mse hint did before the fix: mse_loss(float32, bfloat16 layer_norm outputs)."""
    a, b = torch.randn(2, 4, 8), torch.randn(2, 4, 8, dtype=torch.bfloat16)
    with DtypeGuard() as guard:
        F.mse_loss(F.layer_norm(a, (8,)), F.layer_norm(b, (8,)))
    assert guard.first() == "torch.nn.functional.mse_loss: mixes bfloat16, float32"


def test_a_dtype_error_fails_the_step_with_mode_and_op_in_one_line(monkeypatch):
    """CUDA's error, simulated on CPU: a hint distance that mixes dtypes, then fails as CUDA's
    mse_loss backward does. The trial's error is one line naming the mode, precision and op."""
    import trainers.losses as losses

    def mixed_then_cuda_error(student, target):
        F.mse_loss(student, target.to(torch.bfloat16))
        raise RuntimeError("Found dtype BFloat16 but expected Float\nwith more lines of trace")

    monkeypatch.setitem(losses._DISTANCES, "ln_mse", mixed_then_cuda_error)
    run = _run("shared", {}, "bf16", "cpu")
    with pytest.raises(PrecisionError) as info:
        _steps(run, "cpu", steps=1)
    message = str(info.value)
    assert "\n" not in message and info.value.__suppress_context__
    assert message == (
        "mode 'shared' at precision bf16: loss op torch.nn.functional.mse_loss: mixes bfloat16, "
        "float32 (Found dtype BFloat16 but expected Float)"
    )
    assert is_dtype_error(RuntimeError("expected scalar type Float but found BFloat16"))
    assert not is_dtype_error(RuntimeError("CUDA out of memory"))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_dino_phase_runs_under_every_precision_with_an_fp32_loss(precision):
    """The self-supervised phase uses the run's precision (CPU autocast here, fp16 with a
    GradScaler); its loss is computed in fp32 outside autocast, and stays finite."""
    from trainers.ssl import DinoLoss

    torch.set_num_threads(1)
    cfg = TrainConfig(
        mode="vit", precision=precision, ssl_init="dino", ssl_epochs=1, ssl_local_crops=1,
        **used_fields("vit", SMALL_MODEL),
    )  # fmt: skip
    torch.manual_seed(0)
    vit = Run.create(cfg, 10, 3, 16, torch.device("cpu"), n_train=16).networks["vit"]
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    seen = []
    real_forward = DinoLoss.forward

    def recording(self, student, teacher):
        seen.extend(t.dtype for t in student + teacher)
        with DtypeGuard() as loss_guard:
            loss = real_forward(self, student, teacher)
        assert loss.dtype == torch.float32 and loss_guard.violations == []
        return loss

    from trainers.methods import ssl_phase

    original = DinoLoss.forward
    DinoLoss.forward = recording
    try:
        out = ssl_phase(
            cfg, vit, images, mean=(0.5,) * 3, std=(0.25,) * 3, img_size=16,
            precision=precision,
        )  # fmt: skip
    finally:
        DinoLoss.forward = original
    assert torch.isfinite(torch.tensor(out["ssl_loss_last"]))
    low = LOW.get(precision)
    assert set(seen) == ({low} if low is not None else {torch.float32})
