"""The trainer end to end on real Fashion-MNIST (CPU, one thread): every mode learns, reports what
its docstring promises, reproduces from its seed and from a checkpoint, clips every step, stops on a
non-finite loss, and its command line turns bad input into one line and exit code 2.

Learning runs use 2% of the training split (1,080 images), batch 32, 6 epochs; measured test
accuracies (1,000 test images, torch 2.14 CPU) are in `LEARNING`, with the asserted floors ~0.1
under them. The four runs take ~60 s together on one core.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import trainers.pcgrad as pcgrad
import trainers.training as train_module
from trainers.config import TrainConfig
from trainers.errors import NonFiniteLoss
from trainers.modes import MODES, SharedMode, build_mode
from trainers.training import Run, adamw, prepare_data, train

LEARN = dict(data_fraction=0.02, epochs=6, batch_size=32, max_eval_images=1000)
# mode: (measured test_acc, floor asserted, measured test_acc_agent, floor asserted). The ViT of
# joint/shared trails the ViT alone this early: the hint (weight 5, decaying) dominates its loss.
# A mode registered later gets the generic floor: twice chance.
GENERIC_LEARNING = (None, 0.2, None, None)
LEARNING = {
    "vit": (0.399, 0.30, None, None),
    "agent": (0.593, 0.45, 0.593, 0.45),
    "joint": (0.307, 0.22, 0.583, 0.45),
    "shared": (0.295, 0.22, 0.481, 0.36),
}
BASE_KEYS = {"epoch", "train_loss", "val_acc", "lr", "epoch_seconds", "images_per_second"}
PAIR_KEYS = {"loss_cls_vit", "loss_cls_agent", "loss_kd_vit", "loss_kd_agent", "loss_hint"}
PAIR_KEYS |= {"hint_weight", "val_acc_agent"}
REPORT_KEYS = {  # as documented; a mode registered later reports its own terms and metrics
    "vit": BASE_KEYS | {"loss_cls"},
    "agent": BASE_KEYS | {"loss_cls", "val_acc_agent"},
    "joint": BASE_KEYS | PAIR_KEYS,
    "shared": BASE_KEYS | PAIR_KEYS,
}
# A few steps' worth of data for the behaviour tests: 270 training images, 9 steps of 32
SMALL = dict(data_fraction=0.005, batch_size=32, max_eval_images=300)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module", params=list(MODES))
def learned(request, fmnist):
    """(config, per-epoch reports, result) of one learning run per mode."""
    config = TrainConfig(mode=request.param, **LEARN)
    history: list[dict[str, float]] = []
    result = train(config, history.append, data=fmnist)
    return config, history, result


def _curve(history, key):
    return [metrics[key] for metrics in history]


# --- learning -------------------------------------------------------------------------------------


def test_mode_learns_far_above_chance(learned):
    config, history, result = learned
    _, floor, _, agent_floor = LEARNING.get(config.mode, GENERIC_LEARNING)
    assert result["test_acc"] >= floor, result
    if agent_floor is not None:
        assert result["test_acc_agent"] >= agent_floor, result
    # and it is learning, not just lucky: the loss falls and validation accuracy rises
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert max(_curve(history, "val_acc")) > history[0]["val_acc"] + 0.05


# --- what report() gets ---------------------------------------------------------------------------


def test_report_has_exactly_the_documented_keys_each_epoch(learned):
    config, history, _ = learned
    assert [metrics["epoch"] for metrics in history] == list(range(1, config.epochs + 1))
    torch.manual_seed(0)
    mode = build_mode(config, 10, 1, 28)
    own = {f"loss_{name}" for name in history[0] if name.startswith("loss_")}  # checked below
    own |= set(mode.metrics(0)) | {f"val_acc_{n}" for n in mode.networks if n != "vit"}
    for metrics in history:
        assert set(metrics) == REPORT_KEYS.get(config.mode, BASE_KEYS | own)
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
        # the loss is the sum of its weighted terms
        terms = sum(v for k, v in metrics.items() if k.startswith("loss_"))
        assert metrics["train_loss"] == pytest.approx(terms, rel=1e-9)
        assert metrics["images_per_second"] == pytest.approx(1080 / metrics["epoch_seconds"])
        assert 0.0 <= metrics["val_acc"] <= 1.0


def test_hint_weight_decays_linearly_as_the_paper(learned):
    config, history, _ = learned
    if "hint" not in MODES[config.mode].fields:
        assert all("hint_weight" not in metrics for metrics in history)  # no hint, no weight
        return
    weights = _curve(history, "hint_weight")
    # paper: base x (1 - epoch/epochs) with epoch 0-based; reported epochs are 1-based
    expected = [config.hint * (1 - (e - 1) / config.epochs) for e in _curve(history, "epoch")]
    assert weights == pytest.approx(expected, rel=1e-12)
    released = MODES[config.mode].released["hint"]  # shared 5, joint 10 (released configs)
    assert weights[0] == config.hint == released
    assert weights[-1] == pytest.approx(released / 6)


def test_lr_follows_the_cosine_schedule_to_min_lr(learned):
    config, history, _ = learned
    # reported: the lr in force after the epoch's last step, i.e. at progress epoch/epochs
    span = config.lr - config.min_lr
    expected = [
        config.min_lr + span * 0.5 * (1 + math.cos(math.pi * e / config.epochs))
        for e in _curve(history, "epoch")
    ]
    assert _curve(history, "lr") == pytest.approx(expected, rel=1e-9)
    assert history[-1]["lr"] == pytest.approx(config.min_lr, rel=1e-9)


# --- what train() returns -------------------------------------------------------------------------


def test_result_keys_and_parameter_counts(learned, fmnist):
    config, history, result = learned
    assert result["best_val_acc"] == max(_curve(history, "val_acc"))
    assert result["epochs_run"] == config.epochs
    assert result["train_images"] == 1080  # 2% of each class's 5,400 training images: 108 x 10
    assert {k: result[k] for k in history[-1]} == history[-1]  # plus the last epoch's metrics
    torch.manual_seed(config.seed)
    networks = build_mode(config, 10, 1, 28).networks
    has_agent = "agent" in networks
    assert ("test_acc_agent" in result) is has_agent
    if MODES[config.mode].primary == "agent":
        assert result["test_acc"] == result["test_acc_agent"]  # the agent is the primary model

    def count(name):
        return sum(p.numel() for p in networks[name].parameters()) if name in networks else 0

    assert (result["params_vit"], result["params_agent_own"]) == (count("vit"), count("agent"))
    if config.mode == "shared":
        # the shared agent adds only its stem, BatchNorms and head (paper: 6.30M -> 6.56M)
        assert 0 < result["params_agent_own"] < 0.03 * result["params_vit"]
    if config.mode == "joint":
        assert result["params_agent_own"] > 0.5 * result["params_vit"]


# --- reproducibility and data ---------------------------------------------------------------------


def _run(fmnist, checkpoint=None, **overrides):
    """A short run on `SMALL` data: (per-epoch reports, result)."""
    history: list[dict[str, float]] = []
    config = TrainConfig(**{**SMALL, **overrides})
    return history, train(config, history.append, data=fmnist, checkpoint=checkpoint)


def test_same_seed_reproduces_exactly_and_another_seed_differs(fmnist):
    # shared mode with dropout: initialisation, batch order, augmentation and dropout all seeded
    options = dict(mode="shared", epochs=2, drop_rate=0.1)
    first, first_result = _run(fmnist, **options)
    again, again_result = _run(fmnist, **options)
    other, _ = _run(fmnist, **options, seed=1)
    for key in ("train_loss", "val_acc", "val_acc_agent", "loss_hint"):
        assert _curve(first, key) == _curve(again, key)
    assert first_result["test_acc"] == again_result["test_acc"]
    assert _curve(first, "train_loss") != _curve(other, "train_loss")


def test_same_split_seed_gives_every_mode_the_same_images(fmnist):
    cpu = torch.device("cpu")
    reference = prepare_data(TrainConfig(mode="vit", data_fraction=0.02), fmnist, cpu)
    assert torch.bincount(reference.train_y).tolist() == [108] * 10
    for mode in list(MODES)[1:]:
        other = prepare_data(TrainConfig(mode=mode, data_fraction=0.02, seed=7), fmnist, cpu)
        assert torch.equal(other.train_x, reference.train_x)
        assert torch.equal(other.train_y, reference.train_y)
        assert torch.equal(other.val_x, reference.val_x)
    # validation does not move with the fraction; another split_seed picks other images
    larger = prepare_data(TrainConfig(data_fraction=0.05), fmnist, cpu)
    assert torch.equal(larger.val_x, reference.val_x)
    moved = prepare_data(TrainConfig(data_fraction=0.02, split_seed=1), fmnist, cpu)
    assert not torch.equal(moved.train_x, reference.train_x)


# --- checkpoint and resume ------------------------------------------------------------------------


def test_resume_from_epoch_2_reproduces_epochs_3_and_4(fmnist):
    options = dict(mode="shared", epochs=4, drop_rate=0.1)
    states: list[dict] = []
    # kept in memory as handed over: the state must be a snapshot, not views of live tensors
    full, full_result = _run(fmnist, **options, checkpoint=states.append)
    assert [s["epoch"] for s in states] == [1, 2, 3, 4]
    resumed: list[dict[str, float]] = []
    config = TrainConfig(**SMALL, **options)
    result = train(config, resumed.append, data=fmnist, resume_state=states[1])
    timing = ("epoch_seconds", "images_per_second")
    strip = [{k: v for k, v in m.items() if k not in timing} for m in full[2:]]
    assert [{k: v for k, v in m.items() if k not in timing} for m in resumed] == strip
    assert result["test_acc"] == full_result["test_acc"]
    assert result["test_acc_agent"] == full_result["test_acc_agent"]
    assert result["best_val_acc"] == full_result["best_val_acc"]
    assert result["epochs_run"] == 2


# --- the optimisation step ------------------------------------------------------------------------


def test_gradients_are_clipped_on_every_step(fmnist, monkeypatch):
    clip_grad_norm = torch.nn.utils.clip_grad_norm_
    norms: list[tuple[float, float]] = []  # (before, after) per call

    def recording(params, max_norm, *args, **kwargs):
        params = list(params)
        before = float(clip_grad_norm(params, max_norm, *args, **kwargs))
        after = float(
            torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        )
        norms.append((before, after))
        return torch.tensor(before)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    # joint: two optimizers, one clip per network (released), on every step
    _run(fmnist, mode="joint", epochs=2, clip_grad=0.05)
    assert len(norms) == 2 * 9 * 2  # 270 images in batches of 32: 9 steps an epoch, 2 networks
    assert all(after <= 0.05 * (1 + 1e-5) for _, after in norms), norms
    assert sum(before > 0.05 for before, _ in norms) >= 18  # clipping did act, on most steps
    norms.clear()
    # clip_scope=all: one norm over both networks' parameters
    _run(fmnist, mode="joint", epochs=1, clip_grad=0.05, clip_scope="all")
    assert len(norms) == 9 and all(after <= 0.05 * (1 + 1e-5) for _, after in norms)
    norms.clear()
    _run(fmnist, mode="vit", epochs=1, clip_grad=0.0)
    assert norms == []  # clip_grad=0 switches it off


def test_pcgrad_aligns_shared_gradients_and_changes_the_update(fmnist, monkeypatch):
    aligned_backward, loss_terms = pcgrad.aligned_backward, SharedMode.loss_terms
    alignments, losses = [], []

    def record_alignment(*args, **kwargs):
        alignments.append(aligned_backward(*args, **kwargs))
        return alignments[-1]

    def record_loss(*args, **kwargs):
        terms = loss_terms(*args, **kwargs)
        losses.append(float(sum(t.detach() for t in terms.values())))
        return terms

    monkeypatch.setattr(pcgrad, "aligned_backward", record_alignment)
    monkeypatch.setattr(SharedMode, "loss_terms", record_loss)
    runs = {}
    for align in ("none", "pcgrad"):
        alignments.clear()
        losses.clear()
        _run(fmnist, mode="shared", epochs=1, grad_align=align)
        runs[align] = (list(alignments), list(losses))
    assert runs["none"][0] == []  # the released code's plain sum
    pcgrad_alignments = runs["pcgrad"][0]
    assert len(pcgrad_alignments) == 9  # once per step
    # measured: the agent's and the ViT's gradients on the shared weights are nearly orthogonal
    # (|cos| < 0.02); they conflict on steps 0 and 3, where the agent's part is projected
    assert all(abs(a.cosine) < 0.1 for a in pcgrad_alignments)
    assert all(a.projected == (a.cosine < 0) for a in pcgrad_alignments)
    assert any(a.projected for a in pcgrad_alignments)
    none_losses, pcgrad_losses = runs["none"][1], runs["pcgrad"][1]
    assert none_losses[0] == pcgrad_losses[0]  # same init, same first batch
    # Adam's first update is lr x sign(g): a small projection rarely flips a sign, so the loss
    # after step 1 can agree; from the second update on, the moments carry the difference
    assert none_losses[2:] != pcgrad_losses[2:]


def test_pcgrad_step_equals_the_plain_sum_unless_it_projects(fmnist, monkeypatch):
    # The first train_step of two identical shared runs, stopped before the optimizer: pcgrad's
    # gradient is the plain sum's where it did not project, and differs on the shared weights
    # (only) where it did
    aligned_backward = pcgrad.aligned_backward
    alignments = []
    monkeypatch.setattr(
        pcgrad, "aligned_backward", lambda *a: alignments.append(aligned_backward(*a))
    )
    grads = {}
    for align in ("none", "pcgrad"):
        config = TrainConfig(**SMALL, mode="shared", epochs=1, grad_align=align, clip_grad=0.0)
        torch.manual_seed(config.seed)
        cpu = torch.device("cpu")
        prepared = prepare_data(config, fmnist, cpu)
        run = Run.create(config, 10, 1, 28, cpu, len(prepared.train_x))
        for module in run.networks.values():
            module.train()
        run.optimizers, run.schedulers = [], []  # read the gradients the step would apply
        x = train_module.BatchAugmenter.for_data(fmnist).eval(prepared.train_x[:32])
        train_module.train_step(run, x, prepared.train_y[:32], 0, 0)
        shared_ids = {id(p) for p in run.networks["agent"].shared_parameters()}
        grads[align] = [(id(p) in shared_ids, p.grad.clone()) for p in run.params]
    assert len(alignments) == 1
    projected = alignments[0].projected
    for (is_shared, g_none), (_, g_pcgrad) in zip(grads["none"], grads["pcgrad"], strict=True):
        if is_shared and projected:
            continue
        torch.testing.assert_close(g_pcgrad, g_none, rtol=1e-5, atol=1e-7)
    if projected:
        assert any(
            not torch.allclose(gp, gn, rtol=1e-5, atol=1e-7)
            for (shared, gn), (_, gp) in zip(grads["none"], grads["pcgrad"], strict=True)
            if shared
        )


def test_non_finite_loss_names_epoch_and_step(fmnist):
    # AdamW with lr 1e6: decoupled weight decay multiplies every weight by (1 - lr * wd) = -5e4
    # per step, so the weights overflow after the first update and the next loss is NaN
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at epoch 1, step 1 \(cls=nan\)"):
        _run(fmnist, mode="vit", epochs=1, lr=1e6, clip_grad=0.0)


# --- the command line -----------------------------------------------------------------------------

QUICK = ["--epochs", "1", "--fraction", "0.005", "--max-eval-images", "100"]
BAD_INPUT = {  # case: (arguments after QUICK, which win; what the one line says)
    "unknown dataset": (["--dataset", "nope"], "unknown dataset 'nope'"),
    "unknown mode": (["--mode", "nope"], "unknown mode 'nope'; choose from: agent, joint"),
    "unknown agent design": (["--agent-design", "nope"], "unknown agent design 'nope'"),
    "fraction 0": (["--fraction", "0"], "data_fraction must be in (0, 1], got 0.0"),
    "fraction 1.5": (["--fraction", "1.5"], "data_fraction must be in (0, 1], got 1.5"),
    "patch not dividing": (["--patch-size", "5"], "patch_size 5 does not divide img_size 28"),
    "heads not dividing": (["--num-heads", "7"], "embed_dim 72 is not divisible by num_heads 7"),
    "unknown option": (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    "wrong type": (["--lr", "abc"], "lr: expected float, got 'abc'"),
    "non-finite loss": (
        ["--mode", "vit", "--lr", "1e6", "--clip-grad", "0"],
        "non-finite loss at epoch 1, step 1",
    ),
}
GOOD_RUN = ["--mode", "vit", "--fraction", "0.01", "--epochs", "2", "--max-eval-images", "500"]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Every CLI case, started at once (each spends ~3 s importing torch) and collected here."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cwd = tmp_path_factory.mktemp("cli")
    cases = {name: QUICK + args for name, (args, _) in BAD_INPUT.items()}
    cases["good"] = GOOD_RUN
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "trainers", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in cases.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[name] = (proc.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_cli_bad_input_is_one_line_and_exit_code_2(cli_runs, case):
    code, stdout, stderr = cli_runs[case]
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert BAD_INPUT[case][1] in stderr
    assert stdout == ""


def test_cli_prints_a_table_and_one_json_line(cli_runs):
    code, stdout, stderr = cli_runs["good"]
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == {"config", "result"}
    config = TrainConfig.from_dict(record["config"])  # the resolved config round-trips
    assert (config.mode, config.data_fraction, config.epochs) == ("vit", 0.01, 2)
    assert record["config"]["embed_dim"] == 72  # the preset, resolved
    result = record["result"]
    assert result["train_images"] == 540 and result["epochs_run"] == 2
    assert 0.0 <= result["test_acc"] <= 1.0
    header, *rows = stderr.splitlines()
    # vit mode: no agent, no hint weight (a mode reports only its own metrics)
    assert header.split() == ["epoch", "loss", "val_acc", "lr", "sec", "img/s"]
    epochs = [row for row in rows if row.split()[:1] in (["1"], ["2"])]
    assert [row.split()[0] for row in epochs] == ["1", "2"]
    assert epochs[-1].split()[2] == f"{result['val_acc']:.2%}"
    # then the closing table: the test accuracy a person looks for, not only in the JSON line
    assert any(f"{result['test_acc']:.2%}" in row for row in rows[len(epochs) :]), stderr


@pytest.mark.parametrize("exclude", ["none", "norms_biases_tokens"])
def test_weight_decay_reaches_every_tensor_as_released_unless_excluded(exclude):
    cfg = TrainConfig(mode="vit", weight_decay_exclude=exclude)
    torch.manual_seed(0)
    vit = build_mode(cfg, 10, 1, 28).networks["vit"]
    decay = {
        id(p): group["weight_decay"] for group in adamw(cfg, vit, False).param_groups
        for p in group["params"]
    }  # fmt: skip
    named = dict(vit.named_parameters())
    assert set(decay) == {id(p) for p in named.values()}  # every parameter is optimised once
    skipped = {n for n, p in named.items() if decay[id(p)] == 0.0}
    if exclude == "none":  # the released AdamW over model.parameters(): all 0.05
        assert skipped == set()
    else:  # timm/DeiT: norms, biases, class token and position embedding
        assert {"cls_token", "pos_embed", "norm.weight", "blocks.0.attn.qkv.bias"} <= skipped
        assert "blocks.0.attn.qkv.weight" not in skipped
