"""The mode registry: every mode states the fields it uses and rejects the others; everything that
lists modes (config, command line, spaces, report) reads the registry; and a mode added from
outside `trainers/` (study.testing.ToyMode) trains through `train()` and through a real study.

Every test here is parametrized over the registry, so a new mode is tested without editing it.
"""

from __future__ import annotations

import dataclasses
import io
import typing

import pytest
import torch
from helpers import study_config

from reports import figures
from search_spaces import get_space
from study.runner import run_study
from study.store import Store
from study.testing import TOY_MODE, ToyModeTrainer, register_toy_mode
from trainers.config import MODEL_PRESETS, TrainConfig, field_choices
from trainers.datasets import load_dataset
from trainers.errors import ConfigError
from trainers.modes import MODES, Mode, mode_specific_fields, register_mode, used_fields
from trainers.training import train

# in-process studies share one Ray (conftest.shared_ray)
pytestmark = pytest.mark.usefixtures("shared_ray")

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# A value other than the default (preset tiny's, for preset fields) of each mode-specific field.
OTHER_VALUE = {
    "drop_rate": 0.2,
    "attn_drop_rate": 0.1,
    "drop_path_rate": 0.1,
    "agent_design": "res_like",
    "agent_stem": "resnet_like",
    "hint_layers": [0],
    "impulse_window": 5,
    "agent_norm": "post",
    "agent_drop_rate": 0.3,
    "cls_vit": 0.7,
    "cls_agent": 0.7,
    "kd_vit": 0.7,
    "kd_agent": 0.7,
    "hint": 3.0,
}


def _other_value(name: str):
    if name in OTHER_VALUE:
        return OTHER_VALUE[name]
    choices = field_choices(name)
    default = FIELDS[name].default
    if choices:
        return next(c for c in choices if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, tuple):
        return [v * 0.9 for v in default]
    assert isinstance(default, float), f"give {name} a value in OTHER_VALUE"
    return default * 0.5 if default else 0.5


def _foreign(mode: str) -> list[str]:
    return sorted(mode_specific_fields() - MODES[mode].fields)


@pytest.fixture
def toy_mode():
    """The toy mode, registered for one test and removed after it."""
    added = TOY_MODE not in MODES
    cls = register_toy_mode()
    yield cls
    if added:
        MODES.pop(TOY_MODE)


# --- the registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODES))
def test_each_mode_is_a_described_class_claiming_only_real_fields(name):
    cls = MODES[name]
    assert issubclass(cls, Mode) and cls.name == name and cls.description
    assert cls.fields <= set(FIELDS)


@pytest.mark.parametrize("name", list(MODES))
def test_a_field_the_mode_does_not_use_is_rejected_with_one_clear_line(name):
    for field in _foreign(name):
        value = _other_value(field)
        with pytest.raises(ConfigError) as info:
            TrainConfig.from_dict({"mode": name, field: value})
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"mode '{name}' does not use {field}=")
        users = sorted(m for m, c in MODES.items() if field in c.fields)
        assert f"{field}: {', '.join(users)}" in message


@pytest.mark.parametrize("name", list(MODES))
def test_fields_the_mode_uses_and_defaults_of_others_are_accepted(name):
    for field in sorted(MODES[name].fields):  # never "does not use" (a combination may still
        try:  # be refused for its own reason, e.g. shared + DAFF)
            TrainConfig.from_dict({"mode": name, field: _other_value(field)})
        except ConfigError as err:
            assert "does not use" not in str(err), err
    # defaults spelled out, and every preset's resolved config read back (stored configs, resume)
    foreign_defaults = {
        f: FIELDS[f].default for f in _foreign(name) if FIELDS[f].default is not None
    }
    TrainConfig.from_dict({"mode": name, **foreign_defaults})
    for preset in MODEL_PRESETS:
        resolved = TrainConfig(mode=name, preset=preset).to_dict()
        assert TrainConfig.from_dict(resolved).to_dict() == resolved


def test_used_fields_drops_what_the_mode_does_not_use():
    values = {"lr": 0.01, "hint": 3.0, "drop_rate": 0.2, "agent_design": "res_like"}
    assert used_fields("vit", values) == {"lr": 0.01, "drop_rate": 0.2}
    assert used_fields("agent", values) == {"lr": 0.01, "agent_design": "res_like"}
    assert used_fields("shared", values) == values


def test_mode_choices_everywhere_come_from_the_registry(toy_mode):
    assert field_choices("mode") == tuple(MODES)
    assert TOY_MODE in field_choices("mode")
    assert typing.get_type_hints(TrainConfig)["mode"] is str  # no Literal to keep in step
    with pytest.raises(ConfigError, match=r"unknown mode 'nope'; choose from: agent, "):
        TrainConfig(mode="nope")
    # spaces and the report were built at import, from the registry's order then
    assert get_space("data_fraction").arms["mode"] == ("vit", "agent", "shared", "joint")
    assert figures.MODE_ORDER[:4] == ["vit", "agent", "shared", "joint"]


def test_registering_needs_a_mode_class_and_a_new_name():
    with pytest.raises(TypeError, match="expects a Mode subclass"):
        register_mode("not_a_mode")(object)
    with pytest.raises(ValueError, match="mode 'vit' is already registered"):
        register_mode("vit")(type("Again", (Mode,), {}))


# --- a mode added from outside trainers/ ----------------------------------------------------------


def test_a_toy_mode_trains_through_train(toy_mode):
    """The toy mode's one network, loss term and metric reach the report and the result; the
    training loop needed no change to run it. Measured test_acc 0.571 (torch 2.14 CPU)."""
    fmnist = load_dataset("fashion_mnist")
    config = TrainConfig(mode=TOY_MODE, data_fraction=0.02, epochs=2, max_eval_images=1000)
    history: list[dict[str, float]] = []
    torch.set_num_threads(1)
    result = train(config, history.append, data=fmnist)
    assert set(history[0]) == {
        "epoch",
        "train_loss",
        "loss_cls",
        "lr",
        "weight_norm",
        "val_acc",
        "val_acc_linear",
        "epoch_seconds",
        "images_per_second",
    }
    assert all(m["val_acc"] == m["val_acc_linear"] for m in history)  # its primary network
    assert history[1]["weight_norm"] != history[0]["weight_norm"]
    assert result["test_acc"] >= 0.45 and result["params_vit"] == result["params_agent_own"] == 0
    with pytest.raises(ConfigError, match=rf"mode '{TOY_MODE}' does not use hint=3.0"):
        TrainConfig(mode=TOY_MODE, hint=3.0)


def test_a_toy_mode_runs_through_a_smoke_study(toy_mode, tmp_path):
    """Real Ray, real SQLite: the toy mode is an arm like any other, its metrics are stored."""
    config = study_config(
        tmp_path,
        space="data_fraction",
        name="toy",
        trials_per_arm=2,
        epochs=2,
        final_seeds=0,
        concurrency=2,
        arm_values={"mode": [TOY_MODE], "data_fraction": [0.02]},
    )
    run_study(config, command="test", train_fn=ToyModeTrainer(), out=io.StringIO())
    store = Store.open(config.storage)
    trials = store.trials_frame("toy")
    assert len(trials) == 2 and set(trials["status"]) <= {"COMPLETE", "PRUNED"}
    assert set(trials["arm"]) == {f"mode={TOY_MODE},data_fraction=0.02"}
    names = set(store.metrics_frame("toy")["name"])
    assert {"val_acc", "val_acc_linear", "loss_cls", "weight_norm"} <= names
    assert (trials["test_acc"].dropna() > 0.4).all()  # 10 classes: chance is 0.1


def test_each_mode_trains_with_its_released_settings_unless_told():
    # TrainConfig(mode="joint") is the released joint method (it trained with shared's weights)
    shared, joint = TrainConfig(mode="shared"), TrainConfig(mode="joint")
    assert (shared.cls_vit, shared.kd_vit, shared.hint) == (0.5, 0.5, 5.0)
    assert (joint.cls_vit, joint.cls_agent, joint.kd_vit, joint.kd_agent, joint.hint) == (
        1.0, 1.0, 1.0, 1.0, 10.0
    )  # fmt: skip
    assert TrainConfig(mode="vit").clip_grad == 0.1 and joint.clip_grad == 0.0
    assert TrainConfig(mode="joint", hint=3.0).hint == 3.0  # what is passed wins
    with pytest.raises(ConfigError, match="replace cannot change mode"):
        shared.replace(mode="joint")  # would carry shared's resolved weights into joint
    assert shared.replace(lr=0.01).lr == 0.01
