"""The states a study and a trial can be in, and the phases of a study: one enum each.

Plain Python with no dependencies, so Ray workers, the store, the runner and the report all import
the same names. The members are `str`s equal to what the tables hold, so they compare and sort as
the stored text does (``TrialStatus.COMPLETE == "COMPLETE"``) and pandas filters take them as is.

    >>> TrialStatus("PRUNED") is TrialStatus.PRUNED
    True
    >>> [s.value for s in HAS_RESULT]
    ['COMPLETE', 'REUSED']
"""

from __future__ import annotations

import enum

__all__ = [
    "StudyStatus",
    "TrialStatus",
    "Phase",
    "HAS_RESULT",
    "FINISHABLE",
    "TERMINAL",
    "TRAINED",
]


class _Text(str, enum.Enum):
    """A str-valued enum that formats as its value (Python 3.10 has no StrEnum)."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class StudyStatus(_Text):
    RUNNING = "RUNNING"  # a driver is (or was, until it died) working on it
    FINISHED = "FINISHED"  # every phase ran to the end
    FAILED = "FAILED"  # the driver stopped on an error
    INTERRUPTED = "INTERRUPTED"  # Ctrl-C; --resume continues it


class TrialStatus(_Text):
    RUNNING = "RUNNING"  # started; stays RUNNING only while its driver lives
    COMPLETE = "COMPLETE"  # ran every epoch
    PRUNED = "PRUNED"  # stopped early by ASHA (or by the trainer itself)
    FAILED = "FAILED"  # raised, or left RUNNING by a driver that died (stale)
    REUSED = "REUSED"  # an identical COMPLETE trial's results, copied instead of re-run
    INTERRUPTED = "INTERRUPTED"  # stopped by Ctrl-C/SIGTERM before its last epoch; resume re-runs


class Phase(_Text):
    SEARCH = "search"  # Optuna proposes, ASHA prunes, selection is on validation
    FINAL = "final"  # each arm's best configuration re-run on new seeds, evaluated on test


# Groups, defined once: which statuses carry results, which a trial may be finished with, which
# use up an arm's budget (FAILED does too: a trial that raised would raise again), which ran epochs.
HAS_RESULT = (TrialStatus.COMPLETE, TrialStatus.REUSED)
FINISHABLE = (
    TrialStatus.COMPLETE,
    TrialStatus.PRUNED,
    TrialStatus.FAILED,
    TrialStatus.INTERRUPTED,
)
TERMINAL = (TrialStatus.COMPLETE, TrialStatus.PRUNED, TrialStatus.REUSED, TrialStatus.FAILED)
TRAINED = (TrialStatus.COMPLETE, TrialStatus.PRUNED)
