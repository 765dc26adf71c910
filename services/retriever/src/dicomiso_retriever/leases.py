"""Study leases: at most one runner moves a study at a time, across every replica.

`studies/{uid}/lease.json` is a bucket lease (`dicomiso_common.leases`): its holder renews it
while the study moves and once more (`confirm`) right before it writes the study's manifest.
The Storage SCP reads the same record: a live lease is what makes a study "asked for". The
protocol: docs/architecture.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dicomiso_common.dicom import manifest_key
from dicomiso_common.leases import Lease as _Lease
from dicomiso_common.leases import LeaseHeld, is_live
from dicomiso_common.store import Store

__all__ = ["Lease", "LeaseBook", "LeaseHeld", "lease_is_live", "lease_key", "study_lease"]

log = logging.getLogger(__name__)


def lease_key(study_uid: str) -> str:
    return manifest_key(study_uid).removesuffix("manifest.json") + "lease.json"


def lease_is_live(store: Store, study_uid: str, stale_after: float) -> bool:
    return is_live(store, lease_key(study_uid), stale_after)


class Lease(_Lease):
    """One acquisition of a study's lease (`dicomiso_common.leases.Lease` at the study's key)."""

    def __init__(
        self,
        store: Store,
        study_uid: str,
        job_id: str,
        stale_after: float,
        give_up_after: float | None = None,
    ) -> None:
        super().__init__(
            store,
            lease_key(study_uid),
            stale_after,
            give_up_after,
            about={"job_id": job_id},
            label="study lease",
            log_extra={"study_uid": study_uid},
        )
        self.study_uid = study_uid
        self.job_id = job_id


@contextmanager
def study_lease(
    store: Store,
    study_uid: str,
    job_id: str,
    *,
    stale_after: float,
    heartbeat: float,
    give_up_after: float | None = None,
) -> Iterator[Lease]:
    """Hold the study's lease, refreshed in the background, for the duration of the block."""
    lease = Lease(store, study_uid, job_id, stale_after, give_up_after)
    lease.acquire()
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(heartbeat) and not lease.lost.is_set():
            lease.refresh()

    thread = threading.Thread(target=refresh, daemon=True, name=f"lease-{study_uid[-8:]}")
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join(timeout=heartbeat + 5)
        lease.release()


_WANTED_TTL = 2.0  # seconds a bucket lease look-up is trusted


class LeaseBook:
    """Which studies a live job is moving: ours in memory, other replicas' via bucket leases."""

    def __init__(self, store: Store, stale_after: float) -> None:
        self._store = store
        self._stale_after = stale_after
        self._local: dict[str, int] = {}
        self._seen: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()
        # Told of every expect/forget (op, study UID): the receiver workers (workers.py).
        self.listeners: list[Callable[[str, str], None]] = []

    def expect(self, study_uid: str) -> None:
        with self._lock:
            self._local[study_uid] = self._local.get(study_uid, 0) + 1
        for listener in self.listeners:
            listener("expect", study_uid)

    def forget(self, study_uid: str) -> None:
        with self._lock:
            left = self._local.get(study_uid, 0) - 1
            if left > 0:
                self._local[study_uid] = left
            else:
                self._local.pop(study_uid, None)
        for listener in self.listeners:
            listener("forget", study_uid)

    def is_local(self, study_uid: str) -> bool:
        """True while a job of this process is moving the study."""
        with self._lock:
            return study_uid in self._local

    def wanted(self, study_uid: str) -> bool:
        with self._lock:
            if study_uid in self._local:
                return True
            if len(self._seen) > 1000:  # forget old look-ups; they expire after 2 s anyway
                now = time.monotonic()
                self._seen = {k: v for k, v in self._seen.items() if now - v[1] < _WANTED_TTL}
            seen = self._seen.get(study_uid)
        if seen and time.monotonic() - seen[1] < _WANTED_TTL:
            return seen[0]
        answer = lease_is_live(self._store, study_uid, self._stale_after)
        with self._lock:
            self._seen[study_uid] = (answer, time.monotonic())
        return answer
