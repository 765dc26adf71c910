"""Study leases: at most one live job moves a study, across every replica.

`studies/{uid}/lease.json` is created with If-None-Match and refreshed with If-Match while a
job moves the study; a lease older than the heartbeat timeout belongs to a dead job and may be
taken. The Storage SCP also reads it: a live lease is what makes a study "asked for".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dicomiso_common.dicom import manifest_key
from dicomiso_common.errors import DicomisoError, ObjectMissing, PreconditionFailed
from dicomiso_common.store import Store

log = logging.getLogger(__name__)


def lease_key(study_uid: str) -> str:
    return manifest_key(study_uid).removesuffix("manifest.json") + "lease.json"


def lease_is_live(store: Store, study_uid: str, stale_after: float) -> bool:
    try:
        data, _ = store.get_json(lease_key(study_uid))
    except ObjectMissing:
        return False
    return time.time() - float(data.get("heartbeat_at", 0)) <= stale_after


class LeaseHeld(Exception):
    """Another live job holds the study's lease."""


def _try_acquire(store: Store, study_uid: str, job_id: str, stale_after: float) -> str:
    """Take the lease or raise LeaseHeld; return the ETag of our lease record."""
    key = lease_key(study_uid)
    body = {"job_id": job_id, "heartbeat_at": time.time()}
    try:
        return store.put_json(key, body, if_none_match=True)
    except PreconditionFailed:
        pass
    try:
        current, etag = store.get_json(key)
    except ObjectMissing:
        raise LeaseHeld(study_uid) from None  # released meanwhile: try again on the next poll
    if current.get("job_id") != job_id and \
            time.time() - float(current.get("heartbeat_at", 0)) <= stale_after:
        raise LeaseHeld(study_uid)
    try:
        return store.put_json(key, body, if_match=etag)
    except PreconditionFailed:
        raise LeaseHeld(study_uid) from None


@contextmanager
def study_lease(store: Store, study_uid: str, job_id: str, *, stale_after: float,
                heartbeat: float) -> Iterator[None]:
    """Hold the study's lease (refreshed in the background) for the duration of the block."""
    etag = _try_acquire(store, study_uid, job_id, stale_after)
    stop = threading.Event()

    def refresh() -> None:
        nonlocal etag
        while not stop.wait(heartbeat):
            try:
                etag = store.put_json(lease_key(study_uid),
                                      {"job_id": job_id, "heartbeat_at": time.time()},
                                      if_match=etag)
            except PreconditionFailed:
                log.warning("study lease lost", extra={"study_uid": study_uid, "job_id": job_id})
                return
            except DicomisoError:
                log.warning("study lease not refreshed", extra={"study_uid": study_uid})

    thread = threading.Thread(target=refresh, daemon=True, name=f"lease-{study_uid[-8:]}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=heartbeat + 5)
        try:
            store.delete(lease_key(study_uid))
        except DicomisoError:
            log.warning("study lease not released", extra={"study_uid": study_uid})
