"""`Watchdog`: runs beside one trial in its Ray worker and ends it when it must not go on.

Two reasons, both about processes nobody else stops in time:

- **The driver is gone** (SIGKILL, OOM killer). Ray notices a dead driver only when its raylet does,
  and a local Ray's workers went on training for 1-2 minutes after it, holding CPUs and GPU memory
  that a resumed driver needs. Nothing can record the trial any more (the driver is the single
  writer), so the worker exits at once.
- **`--trial-timeout`**: a trial that runs past its limit gets `TrialTimeout` raised in the thread
  that trains (at its next Python bytecode: a torch op returns within milliseconds), so Ray sees a
  failed trial with a one-line reason and the epochs it finished stay recorded. One stuck inside a
  single C call (a hung collective, a dead NFS read) cannot take an exception: after
  `grace_seconds` more the worker exits, and the driver records the timeout from its side.

Knows nothing of Ray: `study.ray_tune._trial` starts it around `train`.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

__all__ = ["Watchdog", "WatchdogSpec", "TrialTimeout", "timeout_message", "pid_alive"]

DRIVER_POLL_SECONDS = 1.0  # how often the worker checks on its driver: cheap (one kill(pid, 0))
TIMEOUT_GRACE_SECONDS = 10.0  # after TrialTimeout was raised, how long before the process exits
EXIT_ENDED = 75  # the worker's exit status when the watchdog ends it (EX_TEMPFAIL)


class TrialTimeout(Exception):
    """The trial ran longer than --trial-timeout.

    Raised asynchronously, so by its type alone (no arguments): the limit it names is the class
    attribute the watchdog sets first (a worker runs one trial at a time).
    """

    limit_seconds: float = 0.0

    def __init__(self, *args: object):
        super().__init__(*(args or (timeout_message(self.limit_seconds),)))


@dataclass(frozen=True)
class WatchdogSpec:
    """What the driver hands each trial: who it is, and how long a trial may run."""

    driver_host: str  # socket.gethostname() of the driver: its pid means something only there
    driver_pid: int
    timeout_seconds: float | None = None  # --trial-timeout; None: no limit

    @classmethod
    def here(cls, timeout_seconds: float | None) -> WatchdogSpec:
        return cls(socket.gethostname(), os.getpid(), timeout_seconds)


class Watchdog:
    """Context manager: watch the driver and the clock while the calling thread trains."""

    def __init__(
        self,
        spec: WatchdogSpec,
        *,
        poll_seconds: float = DRIVER_POLL_SECONDS,
        grace_seconds: float = TIMEOUT_GRACE_SECONDS,
    ):
        self.spec = spec
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.timed_out = False
        self._stop = threading.Event()
        self._target = 0
        self._started = 0.0
        self._thread: threading.Thread | None = None
        # A worker on another host of a cluster cannot see the driver's pid: only the timeout
        # applies there (Ray's own driver-death cleanup covers remote workers).
        self._local = spec.driver_host == socket.gethostname()

    def __enter__(self) -> Watchdog:
        self._target = threading.get_ident()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bootstudy-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        timeout = self.spec.timeout_seconds
        while not self._stop.wait(self.poll_seconds):
            if self._local and not pid_alive(self.spec.driver_pid):
                print(
                    f"bootstudy: driver {self.spec.driver_pid} is gone; ending this trial",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_ENDED)
            if timeout is None:
                continue
            elapsed = time.monotonic() - self._started
            if not self.timed_out and elapsed > timeout:
                self.timed_out = True
                TrialTimeout.limit_seconds = timeout
                _raise_in(self._target, TrialTimeout)
            elif self.timed_out and elapsed > timeout + self.grace_seconds:
                print(
                    f"bootstudy: trial stuck {self.grace_seconds:g} s past --trial-timeout "
                    f"{timeout:g} s; ending its process",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_ENDED)


def timeout_message(timeout_seconds: float) -> str:
    """What a timed-out trial's error says, on either side (worker or driver)."""
    return f"ran longer than --trial-timeout {timeout_seconds:g} s"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (study.lease asks it too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds the pid (ours may be gone): be conservative
    return True


def _raise_in(thread_id: int, exc_type: type[BaseException]) -> None:
    """Raise `exc_type` in another thread of this process, at its next bytecode."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
