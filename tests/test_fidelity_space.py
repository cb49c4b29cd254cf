"""The fidelity space: each arm differs from its mode's released arm in exactly the fields its
deviation names, and every deviation a mode can use is one of its cells."""

from __future__ import annotations

import pytest

from search_spaces import get_space
from search_spaces.spaces import FIDELITY_DEVIATIONS

SPACE = get_space("fidelity")
BASE = {"dataset": "fashion_mnist"}


def _config(mode: str, deviation: str):
    (arm,) = [
        a for a in SPACE.arm_grid("gpu") if a.factors == {"mode": mode, "deviation": deviation}
    ]
    return SPACE.trial_config("gpu", arm, {}, BASE).to_dict()


@pytest.mark.parametrize("cell", SPACE.cells, ids=lambda c: f"{c['mode']}-{c['deviation']}")
def test_each_arm_differs_from_the_released_arm_in_exactly_its_deviation(cell):
    mode, deviation = cell["mode"], cell["deviation"]
    released, changed = _config(mode, "released"), _config(mode, deviation)
    differing = {k for k in released if released[k] != changed[k]}
    expected = set(FIDELITY_DEVIATIONS[deviation])
    if deviation == "pos_embed_dropout":
        expected.add("attn_drop_rate")  # the released "dropout" drops the attention map too
    if deviation == "bootstudy_before":
        expected.add("attn_drop_rate")
        if mode == "joint":
            expected |= {"agent_conv", "clip_scope"}
    assert differing == expected


def test_every_deviation_is_measured_in_every_mode_that_uses_it():
    shared = {c["deviation"] for c in SPACE.cells if c["mode"] == "shared"}
    joint = {c["deviation"] for c in SPACE.cells if c["mode"] == "joint"}
    assert joint == set(FIDELITY_DEVIATIONS)
    assert joint - shared == {"factored_agent", "clip_5_one_norm"}
    # the released arm of each mode is the released method: summed hint, dense joint agent
    assert _config("shared", "released")["hint_reduce"] == "sum"
    joint_released = _config("joint", "released")
    assert joint_released["agent_conv"] == "dense" and joint_released["hint"] == 10.0
