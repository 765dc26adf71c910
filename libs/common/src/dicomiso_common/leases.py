"""Leases in the bucket: at most one holder of a task at a time, across every replica.

A lease is one JSON object holding a token unique to one acquisition, created with
If-None-Match (or taken over with If-Match once stale or released) and refreshed with If-Match
while its holder works. It is stale when it has not been written for `stale_after` seconds by
the bucket's clock; its holder stops trusting it earlier, `give_up_after` seconds after the
last write of its own that landed, and renews it once more (`confirm`) right before a write
only the holder may make. Release writes a tombstone with If-Match, so a holder can never
delete a lease that has passed to someone else. Used for the study lease (one mover per study,
`dicomiso_retriever.leases`) and the audit shipper (one per deployment, `audit_syslog`). The
protocol: docs/architecture.md, "Jobs and leases".
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from .errors import DicomisoError, ObjectMissing, PreconditionFailed
from .settings import give_up_after as default_give_up_after
from .store import Read, Store

log = logging.getLogger(__name__)


def _live(read: Read, stale_after: float) -> bool:
    """Held and renewed within `stale_after` by the bucket's clock (`heartbeat_at` in the body
    is the writer's clock, for people reading the record; it decides nothing)."""
    data = read.body
    return isinstance(data, dict) and not data.get("released") and read.age <= stale_after


def is_live(store: Store, key: str, stale_after: float) -> bool:
    """Whether someone holds the lease at `key` now."""
    try:
        read = store.read_json(key)
    except ObjectMissing:
        return False
    return _live(read, stale_after)


class LeaseHeld(Exception):
    """Another live holder has the lease."""


class Lease:
    """One acquisition of the lease at `key`; `lost` is set when it can no longer be trusted.

    `about` goes into the record's body for people reading it (a job id, a replica id);
    `label` names the lease in log lines ("study lease"), `log_extra` adds ids to them.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        stale_after: float,
        give_up_after: float | None = None,
        *,
        about: Mapping[str, Any] | None = None,
        label: str = "lease",
        log_extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.about = dict(about or {})
        self.label = label
        self.log_extra = dict(log_extra or {"lease": key})
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
        body = {**self.about, "token": self.token, "heartbeat_at": time.time()}
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
                raise LeaseHeld(self.key) from None
            if isinstance(current.body, dict) and current.body.get("token") == self.token:
                self.etag = current.etag  # our own create, retried by botocore
            elif _live(current, self.stale_after):
                raise LeaseHeld(self.key) from None
            else:
                try:
                    self.etag = self.store.put_json(self.key, self._body(), if_match=current.etag)
                except PreconditionFailed:
                    raise LeaseHeld(self.key) from None
        self._last_ok = sent

    def held(self) -> bool:
        """Whether we may still act as the holder: not lost, and renewed recently enough that
        no one else can have taken it (we stop `stale_after - give_up_after` early)."""
        if not self.lost.is_set() and time.monotonic() - self._last_ok > self.give_up_after:
            log.warning("%s expired", self.label, extra=self.log_extra)
            self.lost.set()
        return not self.lost.is_set()

    def refresh(self) -> None:
        """Extend the lease; mark it lost if it changed hands or could not be renewed in time."""
        try:
            self._write(self._body())
        except PreconditionFailed:
            log.warning("%s lost", self.label, extra=self.log_extra)
            self.lost.set()
        except DicomisoError:
            if self.held():
                log.warning("%s not refreshed", self.label, extra=self.log_extra)

    def confirm(self) -> bool:
        """Renew the lease now and say whether this very write landed: the fence before a
        write only the holder may make (the manifest). True means no one else can take the
        lease for `stale_after` seconds."""
        if not self.held():
            return False
        try:
            self._write(self._body())
        except PreconditionFailed:
            log.warning("%s lost", self.label, extra=self.log_extra)
            self.lost.set()
            return False
        except DicomisoError:
            log.warning("%s not confirmed", self.label, extra=self.log_extra)
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
            log.warning("%s not released", self.label, extra=self.log_extra)
