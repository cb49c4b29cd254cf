"""`--base CONFIG_OR_TRIAL`: the configuration a designed study's arms start from.

Accepted: a JSON file or inline JSON object of TrainConfig values, the JSON line that
`python -m trainers` prints (its "config" is used), or a stored trial as `STUDY:NUMBER`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainers.errors import ConfigError

__all__ = ["load_base"]


def load_base(text: str, storage: str) -> dict[str, Any]:
    """The base's TrainConfig values; one clear ConfigError for anything unusable."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return _values(_parse(stripped, "--base"), "--base")
    path = Path(text)
    if path.is_file():
        try:
            content = path.read_text()
        except OSError as err:
            raise ConfigError(f"--base: cannot read {text}: {err.strerror}") from None
        return _values(_parse(content, text), text)
    study, sep, number = text.rpartition(":")
    if not sep or not study or not number.isdigit():
        raise ConfigError(
            f"--base {text!r}: neither a JSON file, inline JSON, nor a trial as STUDY:NUMBER"
        )
    return _trial_config(study, int(number), storage)


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"--base: {where} is not valid JSON ({err.msg}, line {err.lineno})"
        ) from None


def _values(data: Any, where: str) -> dict[str, Any]:
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]  # python -m trainers prints {"config": ..., "result": ...}
    if not isinstance(data, dict):
        raise ConfigError(f"--base: {where} must hold a JSON object of TrainConfig values")
    return data


def _trial_config(study: str, number: int, storage: str) -> dict[str, Any]:
    from study.store import Store  # deferred: plain JSON bases need no database

    with Store.open(storage) as store:
        trials = store.trials_frame(study)  # an unknown study raises its own clear error
        rows = trials[trials["number"] == number]
        if rows.empty:
            raise ConfigError(f"--base: study '{study}' has no trial number {number}")
        return dict(store.get_trial(int(rows["id"].iloc[0])).config)
