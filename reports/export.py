"""A study's trials and per-epoch metrics as two flat files, for pandas, R, a spreadsheet or DuckDB.

    python -m reports --study NAME --export csv        # or parquet
    -> <runs dir>/reports/NAME-trials.csv   one row per trial: arm factors and searched params as
                                            columns (arm_mode, param_lr, ...), status, phase,
                                            accuracies, seconds, weights_dir; JSON columns as text
       <runs dir>/reports/NAME-metrics.csv  long form: trial_number, trial_id, epoch, name, value

Both are read through the store's query API (study/store.py), like the report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from trainers.errors import ConfigError

__all__ = ["export_study", "FORMATS"]

FORMATS = ("csv", "parquet")


def export_study(study: str, storage: str, fmt: str, directory: str | Path) -> list[Path]:
    """Write `study`'s trials and metrics as `fmt` files in `directory`; returns their paths."""
    from reports import default_out_path
    from study.store import Store
    from trainers.outputs import check_output_path

    if fmt not in FORMATS:
        raise ConfigError(f"--export must be one of {', '.join(FORMATS)}, got '{fmt}'")
    directory = Path(directory)
    stem = default_out_path(study).stem  # the study's name, safe as a file name
    # never over the database or a file that is not an export of ours: refused before reading
    paths = [
        check_output_path(directory / f"{stem}-{part}.{fmt}", storage, (f".{fmt}",))
        for part in ("trials", "metrics")
    ]
    with Store.open_existing(storage) as store:
        store.get_study(study)  # an unknown study: one line naming the ones there are
        trials = store.trials_frame(study)
        metrics = store.metrics_frame(study)
    trials = _flat_trials(trials)
    number = dict(zip(trials["id"], trials["number"], strict=True))
    metrics.insert(0, "trial_number", metrics["trial_id"].map(number))
    directory.mkdir(parents=True, exist_ok=True)
    for frame, path in zip((trials, metrics), paths, strict=True):
        _write(frame, path, fmt)
    return paths


def _flat_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Arm factors and searched params as their own columns; the weights folder of final runs."""
    out = trials.copy()
    for column, prefix in (("arm_json", "arm_"), ("params_json", "param_")):
        values = [json.loads(text) if isinstance(text, str) else {} for text in out[column]]
        wide = pd.DataFrame(values, index=out.index).add_prefix(prefix)
        out = pd.concat([out, wide], axis=1)
    results = [json.loads(text) if isinstance(text, str) else {} for text in out["result_json"]]
    out["weights_dir"] = [r.get("weights_dir") for r in results]
    return out


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    """Whole or absent: a temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if fmt == "csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
