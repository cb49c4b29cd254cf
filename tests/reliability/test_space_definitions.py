"""Space definitions, generated: a space is refused when it is defined or planned (one line, before
anything is written), or every trial it can draw is a valid trainer config. Before: ranges that
Optuna rejects (low > high, log with low <= 0) or that reach invalid values (a negative lr) passed
the plan and failed trial after trial, mid-study."""

from __future__ import annotations

import math

import optuna
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from search_spaces import SPACES, Budget, Categorical, Float, Int, SearchSpace
from study.plan import StudyConfig
from trainers.errors import ConfigError

optuna.logging.set_verbosity(optuna.logging.ERROR)

ANY_FLOAT = st.one_of(
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from([0.0, math.nan, math.inf, -math.inf, 1e-6, 1.0]),
)
ARM_VALUES = {
    "data_fraction": ANY_FLOAT,
    "lr": ANY_FLOAT,
    "hint": ANY_FLOAT,
    "mode": st.sampled_from(["vit", "shared", "agent", "joint", "nope"]),
    "batch_size": st.integers(-4, 64),
}
ARMS = st.dictionaries(st.sampled_from(sorted(ARM_VALUES)), st.just(None), max_size=2).flatmap(
    lambda keys: st.fixed_dictionaries(
        {k: st.lists(ARM_VALUES[k], min_size=1, max_size=3).map(tuple) for k in keys}
    )
)
FLOAT_FIELDS = st.sampled_from(["lr", "weight_decay", "data_fraction", "hint", "label_smoothing"])
# (class, keyword arguments): built inside the test, where a refusal is the expected outcome
DISTRIBUTIONS = st.one_of(
    st.fixed_dictionaries(
        {"name": FLOAT_FIELDS, "low": ANY_FLOAT, "high": ANY_FLOAT, "log": st.booleans()}
    ).map(lambda kw: (Float, kw)),
    st.fixed_dictionaries(
        {"name": st.just("batch_size"), "low": st.integers(-8, 64),
         "high": st.integers(-8, 64), "log": st.booleans()}
    ).map(lambda kw: (Int, kw)),
    st.fixed_dictionaries(
        {"name": st.just("mode"),
         "choices": st.lists(st.sampled_from(["vit", "shared", "nope"]), max_size=3,
                             unique=True).map(tuple)}
    ).map(lambda kw: (Categorical, kw)),
)  # fmt: skip
BUDGETS = st.builds(
    Budget,
    trials_per_arm=st.integers(-1, 3),
    epochs=st.integers(-1, 3),
    grace_epochs=st.integers(-1, 4),
    reduction_factor=st.sampled_from([2.0, 3.0, 1.0, 0.5, math.nan]),
    final_seeds=st.integers(-1, 2),
)


def _one_line(err: Exception) -> None:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, text


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arms=ARMS,
    search=st.lists(DISTRIBUTIONS, max_size=3, unique_by=lambda d: d[1]["name"]),
    budget=BUDGETS,
    seed=st.integers(0, 10),
)
def test_a_space_is_refused_up_front_or_every_trial_it_draws_is_valid(arms, search, budget, seed):
    try:
        space = SearchSpace(
            name="drawn", description="drawn", arms=arms,
            search=tuple(kind(**kwargs) for kind, kwargs in search),
            budgets={"smoke": budget},
        )  # fmt: skip
    except (ValueError, ConfigError) as err:  # refused where it is defined
        _one_line(err)
        event("refused where defined")
        return
    SPACES["drawn"] = space
    try:
        _plan_and_draw(space, seed)
    finally:
        SPACES.pop("drawn", None)


def _plan_and_draw(space: SearchSpace, seed: int) -> None:
    try:
        config = StudyConfig(space="drawn", name="h", preset="smoke", storage="sqlite:////tmp/x.db")
    except ConfigError as err:  # refused by the plan, before anything is written
        _one_line(err)
        event("refused by the plan")
        return
    event("accepted: every draw checked")
    # Accepted: then whatever Optuna draws must be a valid trial of every arm.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for arm in config.arms():
        for _ in range(4):
            trial = study.ask()
            params = space.sample(trial)
            overrides = config.trial_overrides(arm)
            space.trial_config("smoke", arm, params, config.trainer_base(), overrides)
            study.tell(trial, 0.5)
