"""Which process runs a study: a lease renewed by a heartbeat, so two drivers never run one study.

A driver claims the study (a new study is claimed as it is created), then a background thread
renews the heartbeat every `HEARTBEAT_SECONDS`. A second driver (`--resume` while the first still
runs) is refused with one line naming the first, unless that one is gone: its heartbeat is older
than `STALE_SECONDS`, or it ran on this host and its pid no longer exists (a SIGKILLed driver can
be resumed at once, without waiting for its heartbeat to age).

Each claim also bumps the study's lease generation, a fencing token: the store checks it inside
every write's transaction (`Store.fence`), so a driver that was paused (SIGSTOP, a laptop lid, a
stopped container) past `STALE_SECONDS` and taken over by a `--resume` cannot write even once when
it wakes: its first write raises `LeaseLost`, and it exits with one line.

`BOOTSTUDY_LEASE_SECONDS` sets `STALE_SECONDS` (the heartbeat is a sixth of it): tests shorten it;
on a cluster whose database can pause longer than a minute, lengthen it.
"""

from __future__ import annotations

import os
import socket
import threading

from study.store import FIRST_GENERATION, DriverRecord, LeaseLost, Store
from study.watchdog import pid_alive
from trainers.errors import ConfigError

__all__ = ["HEARTBEAT_SECONDS", "STALE_SECONDS", "Lease", "DriverAlive", "this_driver", "alive"]

# Six missed beats: the driver is gone (or its host cannot reach the DB); BOOTSTUDY_LEASE_SECONDS
# overrides it, and both drivers of a study must agree on it.
STALE_SECONDS = float(os.environ.get("BOOTSTUDY_LEASE_SECONDS") or 60.0)
HEARTBEAT_SECONDS = STALE_SECONDS / 6  # one short write per 10 s: noise next to a study's writes


class DriverAlive(ConfigError):
    """Another live process runs the study."""


def this_driver() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def alive(driver: DriverRecord, stale_seconds: float = STALE_SECONDS) -> bool:
    """Whether `driver` may still be running its study."""
    if driver.age_seconds() > stale_seconds:
        return False
    if driver.host == socket.gethostname():
        return pid_alive(driver.pid)
    return True  # another host: only its heartbeat can tell


class Lease:
    """This process's claim on one study, renewed by a daemon thread until `release`."""

    def __init__(
        self,
        store: Store,
        study_id: int,
        generation: int = FIRST_GENERATION,
        interval: float = HEARTBEAT_SECONDS,
    ):
        self.store, self.study_id, self.interval = store, study_id, interval
        self.generation = generation  # the fencing token every write of `store` checks
        self.host, self.pid = this_driver()
        self.lost = False  # another driver took the study over (our heartbeat went stale)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bootstudy-heartbeat", daemon=True)

    @classmethod
    def claim(cls, store: Store, name: str, study_id: int) -> Lease:
        """Claim an existing study; `DriverAlive` if its driver still runs."""
        host, pid = this_driver()
        current = store.claim_driver(name, host, pid, alive)
        if (current.host, current.pid) != (host, pid):
            raise DriverAlive(
                f"study '{name}' is being run by another driver: host {current.host}, "
                f"pid {current.pid}, last heartbeat {current.age_seconds():.0f} s ago; stop it "
                f"first, or resume once its heartbeat is over {STALE_SECONDS:.0f} s old"
            )
        return cls(store, study_id, current.generation)

    def start(self) -> Lease:
        """Fence every write of the store with this lease's generation, and start beating."""
        self.store.fence(self.study_id, self.generation)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.store.beat(self.study_id, self.host, self.pid):
                    self.lost = True
                    return
            except LeaseLost:
                self.lost = True
                return
            except Exception:  # a database hiccup: the next beat tries again
                continue

    def release(self) -> None:
        """Stop the heartbeat and clear the claim, so a `--resume` may start at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        try:
            self.store.release_driver(self.study_id, self.host, self.pid)
        except LeaseLost:  # the study is another driver's now: nothing of ours to clear
            self.lost = True
