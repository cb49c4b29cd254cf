"""The order arms are listed in (report and driver summary): the space's own, never alphabetical."""

from __future__ import annotations

import io

import pytest
from helpers import study_config

from search_spaces import get_space, list_spaces
from search_spaces.order import arm_order
from study.runner import run_study
from study.testing import curve_trainer


@pytest.mark.parametrize("space", list_spaces())
def test_a_factorial_grid_is_listed_in_its_declared_order(space):
    grid = get_space(space).arm_grid("gpu", design="factorial")
    arms = {arm.name: arm.factors for arm in reversed(grid)}
    assert arm_order(arms, space) == [arm.name for arm in grid]


def test_methods_come_in_the_order_the_space_lists_them_not_alphabetically():
    arms = {f"method={m}": {"method": m} for m in sorted(get_space("methods").arms["method"])}
    assert arm_order(arms, "methods")[:3] == ["method=vit", "method=shared", "method=impulse_vit"]


def test_values_outside_the_declared_ones_follow_them_numbers_then_names():
    arms = {
        "b": {"mode": "vit", "data_fraction": 0.03},  # not declared: after the declared 0.05..1
        "a": {"mode": "vit", "data_fraction": 0.05},
        "c": {"mode": "shared", "data_fraction": 0.05},
        "d": {"mode": "vit", "data_fraction": "all"},
    }
    assert arm_order(arms, "data_fraction") == ["a", "b", "d", "c"]
    # a space no longer registered keeps only the generic order: modes, numbers, names
    assert arm_order(arms, "gone") == ["b", "a", "d", "c"]


@pytest.mark.usefixtures("shared_ray")  # in-process studies share one Ray
def test_the_drivers_summary_lists_arms_in_the_space_order(tmp_path):
    """It used to sort arm labels alphabetically (preset=mid before preset=tiny, shared first)."""
    config = study_config(
        tmp_path,
        db="o.db",
        space="scale",
        name="o",
        concurrency=2,
        final_seeds=1,
        arm_values={"preset": ["tiny", "mid"], "mode": ["vit", "shared"]},
    )
    out = io.StringIO()
    summary = run_study(config, command="test", train_fn=curve_trainer, out=out)
    expected = [
        "preset=tiny,data_fraction=0.02,mode=vit",
        "preset=tiny,data_fraction=0.02,mode=shared",
        "preset=mid,data_fraction=0.02,mode=vit",
        "preset=mid,data_fraction=0.02,mode=shared",
    ]
    assert list(summary.best) == expected
    printed = [line.split()[0] for line in out.getvalue().splitlines() if line.startswith("  pre")]
    assert printed == expected
