"""Study leases on the real S3 endpoint: one holder at a time, no holder clobbers another."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from dicomiso_retriever.leases import Lease, LeaseHeld, lease_is_live, study_lease

UID = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def store(s3_bucket: Any) -> Store:
    return Store.from_settings(
        CommonSettings(s3_endpoint_url=s3_bucket.endpoint_url, s3_bucket=s3_bucket.name)
    )


def test_a_live_lease_holds_even_against_a_runner_of_the_same_job(store: Store) -> None:
    """A job taken over by another replica must wait for the old runner's lease to go stale."""
    first = Lease(store, UID, "job", stale_after=30)
    first.acquire()
    with pytest.raises(LeaseHeld):
        Lease(store, UID, "job", stale_after=30).acquire()
    assert lease_is_live(store, UID, 30)


def test_stale_lease_is_taken_and_the_old_holder_cannot_clobber_it(store: Store) -> None:
    old = Lease(store, UID, "job", stale_after=0.5)
    old.acquire()
    time.sleep(0.7)
    new = Lease(store, UID, "job", stale_after=0.5)
    new.acquire()
    old.refresh()
    assert old.lost.is_set()
    old.release()  # a no-op for a lost lease
    new.refresh()
    assert not new.lost.is_set() and lease_is_live(store, UID, 0.5)


def test_release_makes_the_study_free_at_once(store: Store) -> None:
    with study_lease(store, UID, "a", stale_after=30, heartbeat=0.2):
        assert lease_is_live(store, UID, 30)
        with pytest.raises(LeaseHeld):
            Lease(store, UID, "b", stale_after=30).acquire()
    assert not lease_is_live(store, UID, 30)
    Lease(store, UID, "b", stale_after=30).acquire()


def test_lease_is_kept_alive_by_its_heartbeat(store: Store) -> None:
    with study_lease(store, UID, "a", stale_after=0.6, heartbeat=0.1):
        time.sleep(1.5)
        assert lease_is_live(store, UID, 0.6)


def test_a_412_for_our_own_landed_write_is_not_a_lost_lease(store: Store) -> None:
    """botocore retries a conditional PUT whose answer it missed; if the first try landed, the
    retry gets 412. The lease is still ours: the token in the record says so."""
    lease = Lease(store, UID, "job", stale_after=30)
    lease.acquire()
    store.put_json(
        lease.key, {"job_id": "job", "token": lease.token, "heartbeat_at": time.time()}
    )  # the write we never heard of
    lease.refresh()
    assert not lease.lost.is_set()
    lease.release()
    assert not lease_is_live(store, UID, 30)
