"""Study leases: at most one runner moves a study at a time, across every replica.

`studies/{uid}/lease.json` holds a token unique to one acquisition, created with
If-None-Match (or taken over with If-Match once stale or released) and refreshed with If-Match
while the study moves. A lease is stale when it has not been written for `stale_after`
seconds by the bucket's clock; its holder stops trusting it earlier, `give_up_after` seconds
after the last write of its own that landed, and renews it once more (`confirm`) right before
it writes the study's manifest. Release writes a tombstone with If-Match, so a runner can never
delete a lease that has passed to someone else. The Storage SCP reads the same record: a live
lease is what makes a study "asked for". The protocol: docs/architecture.md.
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
from dicomiso_common.settings import give_up_after as default_give_up_after
from dicomiso_common.store import Read, Store

log = logging.getLogger(__name__)


def lease_key(study_uid: str) -> str:
    return manifest_key(study_uid).removesuffix("manifest.json") + "lease.json"


def _live(read: Read, stale_after: float) -> bool:
    """Held and renewed within `stale_after` by the bucket's clock (`heartbeat_at` in the body
    is the writer's clock, for people reading the record; it decides nothing)."""
    data = read.body
    return isinstance(data, dict) and not data.get("released") and read.age <= stale_after


def lease_is_live(store: Store, study_uid: str, stale_after: float) -> bool:
    try:
        read = store.read_json(lease_key(study_uid))
    except ObjectMissing:
        return False
    return _live(read, stale_after)


class LeaseHeld(Exception):
    """Another live runner holds the study's lease."""


class Lease:
    """One acquisition of a study's lease; `lost` is set when it can no longer be trusted."""

    def __init__(
        self,
        store: Store,
        study_uid: str,
        job_id: str,
        stale_after: float,
        give_up_after: float | None = None,
    ) -> None:
        self.store = store
        self.study_uid = study_uid
        self.key = lease_key(study_uid)
        self.job_id = job_id
        self.token = uuid.uuid4().hex
        self.stale_after = stale_after
        self.give_up_after = (
            default_give_up_after(stale_after) if give_up_after is None else give_up_after
        )
        self.lost = threading.Event()
        self.etag = ""
        self._last_ok = 0.0  # monotonic time a write of ours that landed was sent
        self._write_lock = threading.Lock()  # the refresher and confirm() share the ETag

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
        with self._write_lock:
            sent = time.monotonic()
            try:
                self.etag = self.store.put_json(self.key, body, if_match=self.etag)
            except PreconditionFailed:
                etag = self._ours()
                if etag is None:
                    raise
                self.etag = self.store.put_json(self.key, body, if_match=etag)
            self._last_ok = sent

    def acquire(self) -> None:
        """Take the lease or raise LeaseHeld."""
        sent = time.monotonic()
        try:
            self.etag = self.store.put_json(self.key, self._body(), if_none_match=True)
        except PreconditionFailed:
            try:
                current = self.store.read_json(self.key)
            except ObjectMissing:
                raise LeaseHeld(self.study_uid) from None
            if isinstance(current.body, dict) and current.body.get("token") == self.token:
                self.etag = current.etag  # our own create, retried by botocore
            elif _live(current, self.stale_after):
                raise LeaseHeld(self.study_uid) from None
            else:
                try:
                    self.etag = self.store.put_json(self.key, self._body(), if_match=current.etag)
                except PreconditionFailed:
                    raise LeaseHeld(self.study_uid) from None
        self._last_ok = sent

    def held(self) -> bool:
        """Whether we may still act as the holder: not lost, and renewed recently enough that
        no one else can have taken it (we stop `stale_after - give_up_after` early)."""
        if not self.lost.is_set() and time.monotonic() - self._last_ok > self.give_up_after:
            log.warning("study lease expired", extra={"study_uid": self.study_uid})
            self.lost.set()
        return not self.lost.is_set()

    def refresh(self) -> None:
        """Extend the lease; mark it lost if it changed hands or could not be renewed in time."""
        try:
            self._write(self._body())
        except PreconditionFailed:
            log.warning("study lease lost", extra={"study_uid": self.study_uid})
            self.lost.set()
        except DicomisoError:
            if self.held():
                log.warning("study lease not refreshed", extra={"study_uid": self.study_uid})

    def confirm(self) -> bool:
        """Renew the lease now and say whether this very write landed: the fence before a
        write only the holder may make (the manifest). True means no one else can take the
        lease for `stale_after` seconds."""
        if not self.held():
            return False
        try:
            self._write(self._body())
        except PreconditionFailed:
            log.warning("study lease lost", extra={"study_uid": self.study_uid})
            self.lost.set()
            return False
        except DicomisoError:
            log.warning("study lease not confirmed", extra={"study_uid": self.study_uid})
            return False
        return True

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
