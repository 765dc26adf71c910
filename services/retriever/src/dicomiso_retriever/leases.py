"""Study leases: at most one runner moves a study at a time, across every replica.

`studies/{uid}/lease.json` holds a token unique to one acquisition, created with
If-None-Match (or taken over with If-Match once stale or released) and refreshed with If-Match
while the study moves. Release writes a tombstone with If-Match, so a runner can never delete
a lease that has passed to someone else. The Storage SCP reads the same record: a live lease
is what makes a study "asked for".
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dicomiso_common.dicom import manifest_key
from dicomiso_common.errors import DicomisoError, ObjectMissing, PreconditionFailed
from dicomiso_common.store import Store

log = logging.getLogger(__name__)


def lease_key(study_uid: str) -> str:
    return manifest_key(study_uid).removesuffix("manifest.json") + "lease.json"


def _live(data: Any, stale_after: float) -> bool:
    return (
        isinstance(data, dict)
        and not data.get("released")
        and time.time() - float(data.get("heartbeat_at", 0)) <= stale_after
    )


def lease_is_live(store: Store, study_uid: str, stale_after: float) -> bool:
    try:
        data, _ = store.get_json(lease_key(study_uid))
    except ObjectMissing:
        return False
    return _live(data, stale_after)


class LeaseHeld(Exception):
    """Another live runner holds the study's lease."""


class Lease:
    """One acquisition of a study's lease; `lost` is set when it can no longer be trusted."""

    def __init__(self, store: Store, study_uid: str, job_id: str, stale_after: float) -> None:
        self.store = store
        self.study_uid = study_uid
        self.key = lease_key(study_uid)
        self.job_id = job_id
        self.token = uuid.uuid4().hex
        self.stale_after = stale_after
        self.lost = threading.Event()
        self.etag = ""
        self._last_ok = 0.0

    def _body(self, **extra: Any) -> dict[str, Any]:
        body = {"job_id": self.job_id, "token": self.token, "heartbeat_at": time.time()}
        return {**body, **extra}

    def _ours(self) -> str | None:
        """The lease's ETag if the stored record carries our token, else None.

        botocore retries a conditional PUT whose answer it did not see; when the first try
        had landed, the retry gets 412 although the lease is ours. Reading it back tells.
        """
        try:
            current, etag = self.store.get_json(self.key)
        except ObjectMissing:
            return None
        return etag if isinstance(current, dict) and current.get("token") == self.token else None

    def _write(self, body: dict[str, Any]) -> None:
        """Conditional update of our lease; PreconditionFailed only if it is not ours."""
        try:
            self.etag = self.store.put_json(self.key, body, if_match=self.etag)
        except PreconditionFailed:
            etag = self._ours()
            if etag is None:
                raise
            self.etag = self.store.put_json(self.key, body, if_match=etag)

    def acquire(self) -> None:
        """Take the lease or raise LeaseHeld."""
        try:
            self.etag = self.store.put_json(self.key, self._body(), if_none_match=True)
        except PreconditionFailed:
            try:
                current, etag = self.store.get_json(self.key)
            except ObjectMissing:
                raise LeaseHeld(self.study_uid) from None
            if current.get("token") == self.token:
                self.etag = etag  # our own create, retried by botocore
            elif _live(current, self.stale_after):
                raise LeaseHeld(self.study_uid) from None
            else:
                try:
                    self.etag = self.store.put_json(self.key, self._body(), if_match=etag)
                except PreconditionFailed:
                    raise LeaseHeld(self.study_uid) from None
        self._last_ok = time.monotonic()

    def refresh(self) -> None:
        """Extend the lease; mark it lost if it changed hands or could not be renewed in time."""
        try:
            self._write(self._body())
            self._last_ok = time.monotonic()
        except PreconditionFailed:
            log.warning("study lease lost", extra={"study_uid": self.study_uid})
            self.lost.set()
        except DicomisoError:
            if time.monotonic() - self._last_ok > self.stale_after:
                log.warning("study lease expired", extra={"study_uid": self.study_uid})
                self.lost.set()
            else:
                log.warning("study lease not refreshed", extra={"study_uid": self.study_uid})

    def release(self) -> None:
        """Mark the lease released, only if it is still ours."""
        if self.lost.is_set():
            return
        try:  # heartbeat 0: also stale to replicas that do not know "released"
            self._write(self._body(released=True, heartbeat_at=0))
        except PreconditionFailed:
            pass  # already someone else's: leave it alone
        except DicomisoError:
            log.warning("study lease not released", extra={"study_uid": self.study_uid})


@contextmanager
def study_lease(
    store: Store, study_uid: str, job_id: str, *, stale_after: float, heartbeat: float
) -> Iterator[Lease]:
    """Hold the study's lease, refreshed in the background, for the duration of the block."""
    lease = Lease(store, study_uid, job_id, stale_after)
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

    def expect(self, study_uid: str) -> None:
        with self._lock:
            self._local[study_uid] = self._local.get(study_uid, 0) + 1

    def forget(self, study_uid: str) -> None:
        with self._lock:
            left = self._local.get(study_uid, 0) - 1
            if left > 0:
                self._local[study_uid] = left
            else:
                self._local.pop(study_uid, None)

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
