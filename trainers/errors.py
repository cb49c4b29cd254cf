"""Errors a user can cause, kept apart from bugs.

Every command line in bootstudy catches `BootstudyError` and prints its message as one line with
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BootstudyError",
    "ConfigError",
    "DataError",
    "NonFiniteLoss",
    "PrecisionError",
    "Interrupted",
]


class BootstudyError(Exception):
    """Base class for errors caused by input: printed as one line, exit code 2."""


class ConfigError(BootstudyError, ValueError):
    """An unknown key, a wrong type or a value out of range in a configuration."""


class DataError(BootstudyError):
    """A dataset that is unknown, missing or malformed."""


class NonFiniteLoss(BootstudyError, FloatingPointError):
    """A loss became NaN or infinite; the orchestrator records the trial as FAILED."""

    def __init__(self, epoch: int, step: int, terms: dict[str, float]):
        self.epoch, self.step, self.terms = epoch, step, terms
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        super().__init__(f"non-finite loss at epoch {epoch}, step {step} ({shown})")


class PrecisionError(BootstudyError, RuntimeError):
    """A step mixed floating dtypes under autocast (a bug, named in one line: mode, precision, op).

    CUDA kernels reject what CPU kernels accept, so this can surface first on a GPU; the message
    names the op so the trial's error says what to fix without a 40-line trace.
    """


class Interrupted(Exception):
    """A run stopped by SIGINT/SIGTERM after recording its state: one line, exit code 128 + the
    signal's number, as a shell reports it (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.exit_code = 128 + signum
