"""Reading one study from the store: a few set-based queries into pandas, never one per trial.

The report only reads: bootstudy's `bootstudy_studies`, `bootstudy_trials`,
`bootstudy_trial_metrics` and Optuna's `studies`, `trials`, `trial_params`, `trial_values`.
Per-epoch metrics are read only for the trials whose curves are drawn.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd
import sqlalchemy as sa
from optuna.distributions import json_to_distribution

from study.engine import StorageError, make_engine, mask_password, normalize_url
from study.store import Store, StudyRecord

__all__ = [
    "StudyRecord",
    "open_store",
    "load_study",
    "load_trials",
    "load_curves",
    "load_optuna_trials",
]

# Columns of bootstudy_trials the report uses; config_json and result_json stay in the database.
_TRIAL_COLUMNS = (
    "id, arm, arm_json, number, optuna_study_name, optuna_trial_id, phase, status, params_json, "
    "config_hash, seed, epochs_run, best_val_acc, final_val_acc, test_acc, test_acc_agent, "
    "trial_seconds, error, reused_from, started_at, finished_at"
)


def open_store(url: str) -> Store:
    """The bootstudy store at `url`, checked first so that reading never creates a database.

    A bad URL, a missing SQLite file or a database without bootstudy's tables is a one-line
    `StorageError` (a `BootstudyError`).
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite" and not os.path.isfile(parsed.database):
        raise StorageError(f"no SQLite database at {parsed.database} ({mask_password(url)})")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            has_tables = sa.inspect(conn).has_table("bootstudy_studies")
    finally:
        engine.dispose()
    if not has_tables:
        raise StorageError(f"{mask_password(url)} holds no bootstudy studies")
    return Store.open(url)


def _json(text: Any, default: Any) -> Any:
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return default
    if isinstance(text, dict | list):
        return text
    return json.loads(text)


def load_study(store: Store, name: str) -> StudyRecord:
    """The study called `name`; a `StorageError` naming the known studies if there is none."""
    return store.get_study(name)


def load_trials(engine: sa.Engine, study_id: int) -> pd.DataFrame:
    """All trials of a study, one row each, with `arm_json`/`params_json` parsed into dicts."""
    sql = sa.text(f"SELECT {_TRIAL_COLUMNS} FROM bootstudy_trials WHERE study_id = :s ORDER BY id")
    with engine.connect() as conn:
        df = pd.read_sql(sql, conn, params={"s": study_id})
    df["factors"] = [_json(t, {}) for t in df.pop("arm_json")]
    df["params"] = [_json(t, {}) for t in df.pop("params_json")]
    for col in ("epochs_run", "best_val_acc", "final_val_acc", "test_acc", "trial_seconds"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def load_curves(
    engine: sa.Engine, trial_ids: list[int], names: tuple[str, ...] = ("val_acc", "val_acc_agent")
) -> pd.DataFrame:
    """Per-epoch metrics `names` of the given trials: columns trial_id, epoch, name, value."""
    if not trial_ids:
        return pd.DataFrame(columns=["trial_id", "epoch", "name", "value"])
    sql = sa.text(
        "SELECT trial_id, epoch, name, value FROM bootstudy_trial_metrics "
        "WHERE trial_id IN :ids AND name IN :names ORDER BY trial_id, name, epoch"
    ).bindparams(sa.bindparam("ids", expanding=True), sa.bindparam("names", expanding=True))
    with engine.connect() as conn:
        return pd.read_sql(sql, conn, params={"ids": list(trial_ids), "names": list(names)})


def load_optuna_trials(engine: sa.Engine, study_names: list[str]) -> pd.DataFrame:
    """Optuna's trials of the given studies with external param values and objective 0.

    Columns: study_name, trial_id, number, state, value, then one column per parameter. Three
    set-based queries instead of `optuna.load_study(...).trials_dataframe()`, which takes minutes
    on tens of thousands of trials (optuna/optuna#763, #4890).
    """
    empty = pd.DataFrame(columns=["study_name", "trial_id", "number", "state", "value"])
    with engine.connect() as conn:
        if not study_names or "trials" not in sa.inspect(conn).get_table_names():
            return empty
        trials = pd.read_sql(
            sa.text(
                "SELECT s.study_name, t.trial_id, t.number, t.state, v.value "
                "FROM studies s JOIN trials t ON t.study_id = s.study_id "
                "LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 "
                "WHERE s.study_name IN :names"
            ).bindparams(sa.bindparam("names", expanding=True)),
            conn,
            params={"names": list(study_names)},
        )
        params = pd.read_sql(
            sa.text(
                "SELECT p.trial_id, p.param_name, p.param_value, p.distribution_json "
                "FROM studies s JOIN trials t ON t.study_id = s.study_id "
                "JOIN trial_params p ON p.trial_id = t.trial_id WHERE s.study_name IN :names"
            ).bindparams(sa.bindparam("names", expanding=True)),
            conn,
            params={"names": list(study_names)},
        )
    if trials.empty:
        return empty
    trials["state"] = trials["state"].astype(str)
    if params.empty:
        return trials
    # Stored values are Optuna's internal representation (a categorical is its choice's index).
    dists = {j: json_to_distribution(j) for j in params["distribution_json"].unique()}
    params["external"] = [
        dists[j].to_external_repr(v)
        for j, v in zip(params["distribution_json"], params["param_value"], strict=True)
    ]
    wide = params.pivot(index="trial_id", columns="param_name", values="external")
    trials = trials.merge(wide, left_on="trial_id", right_index=True, how="left")
    trials.attrs["distributions"] = {
        name: dists[j]
        for name, j in zip(params["param_name"], params["distribution_json"], strict=True)
    }
    return trials
