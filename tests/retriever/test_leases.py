"""Study leases on the real S3 endpoint: one holder at a time, no holder clobbers another."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dicomiso_common.dicom import manifest_key
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from dicomiso_retriever.leases import Lease, LeaseHeld, lease_is_live, lease_key, study_lease
from support.s3fault import S3Fault

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
    old = Lease(store, UID, "job", stale_after=2)
    old.acquire()
    deadline = time.monotonic() + 10
    while lease_is_live(store, UID, 2):  # the bucket's clock, whole seconds
        assert time.monotonic() < deadline
        time.sleep(0.2)
    new = Lease(store, UID, "job", stale_after=2)
    new.acquire()
    old.refresh()
    assert old.lost.is_set()
    old.release()  # a no-op for a lost lease
    new.refresh()
    assert not new.lost.is_set() and lease_is_live(store, UID, 2)


def test_release_makes_the_study_free_at_once(store: Store) -> None:
    with study_lease(store, UID, "a", stale_after=30, heartbeat=0.2):
        assert lease_is_live(store, UID, 30)
        with pytest.raises(LeaseHeld):
            Lease(store, UID, "b", stale_after=30).acquire()
    assert not lease_is_live(store, UID, 30)
    Lease(store, UID, "b", stale_after=30).acquire()


def test_lease_is_kept_alive_by_its_heartbeat(store: Store) -> None:
    with study_lease(store, UID, "a", stale_after=2, heartbeat=0.1):
        time.sleep(3)
        assert lease_is_live(store, UID, 2)


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


def _held_by_someone_else(store: Store, token: str = "other") -> None:
    """Another runner's live lease, written now (as if it had taken a stale one over)."""
    store.put_json(lease_key(UID), {"job_id": "other", "token": token, "heartbeat_at": 0.0})


def test_a_lease_renewed_just_now_is_live_whatever_the_writers_clock(store: Store) -> None:
    """heartbeat_at says 1970 (a host with a broken clock), but the bucket saw the write now:
    the lease holds. Age is the bucket's Date less its Last-Modified, never a host's clock."""
    _held_by_someone_else(store)
    assert lease_is_live(store, UID, 30)
    with pytest.raises(LeaseHeld):
        Lease(store, UID, "job", stale_after=30).acquire()


def test_confirm_fails_once_the_lease_has_passed(store: Store) -> None:
    """The fence before a manifest: a conditional renewal that finds another token fails."""
    lease = Lease(store, UID, "job", stale_after=30)
    lease.acquire()
    assert lease.confirm()
    data, etag = store.get_json(lease.key)
    store.put_json(lease.key, {**data, "token": "other"}, if_match=etag)
    assert not lease.confirm()
    assert not lease.held() and lease.lost.is_set()


def test_holder_that_cannot_renew_stops_before_it_can_be_taken(s3_bucket: Any) -> None:
    """S3 refuses the holder's writes: it stops trusting the lease (give_up_after) while the
    lease still holds against everyone else (stale_after), and confirm() says no."""
    cut = threading.Event()
    with S3Fault(s3_bucket.endpoint_url, lambda method, _path: cut.is_set()) as fault:
        proxied = Store.from_settings(
            CommonSettings(s3_endpoint_url=fault.url, s3_bucket=s3_bucket.name)
        )
        direct = Store.from_settings(
            CommonSettings(s3_endpoint_url=s3_bucket.endpoint_url, s3_bucket=s3_bucket.name)
        )
        lease = Lease(proxied, UID, "job", stale_after=6.0, give_up_after=2.0)
        lease.acquire()
        cut.set()
        deadline = time.monotonic() + 10
        while lease.held():
            assert time.monotonic() < deadline
            lease.refresh()
            time.sleep(0.1)
        assert lease_is_live(direct, UID, 6.0)  # nobody else may take it yet
        assert not lease.confirm()
        deadline = time.monotonic() + 20
        while True:  # ... and once it is stale by the bucket's clock, another runner may
            try:
                Lease(direct, UID, "next", stale_after=6.0).acquire()
                break
            except LeaseHeld:
                assert time.monotonic() < deadline
                time.sleep(0.2)


def test_no_manifest_is_written_under_a_lease_that_passed(
    make_retriever: Any, orthanc: Any, study_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease changes hands after the C-MOVE ended and before the manifest (no pending
    response left to notice it on): the old holder's conditional renewal fails, it writes no
    manifest, waits until the other lease goes stale by the bucket's clock, and moves the
    study again under a lease of its own before it writes the manifest."""
    study = study_factory(ct=3, mr=0, with_sr=False, with_ko=False, with_pr=False, with_sc=False)
    orthanc.upload(study.files)
    retriever = make_retriever()
    retrieval = retriever.app.state.retrieval
    judge = retrieval._judge
    manifest_seen: list[bool] = []

    def judge_then_lose_the_lease(hit: Any, *rest: Any) -> None:
        judge(hit, *rest)
        manifest_seen.append(retriever.store.exists(manifest_key(hit.study_uid)))
        if len(manifest_seen) == 1:  # another runner takes the lease over right now
            data, etag = retriever.store.get_json(lease_key(hit.study_uid))
            retriever.store.put_json(
                lease_key(hit.study_uid), {**data, "token": "other"}, if_match=etag
            )

    monkeypatch.setattr(retrieval, "_judge", judge_then_lose_the_lease)
    orthanc.mark()
    status = retriever.run({"accession_numbers": [study.accession]})

    assert status["state"] == "succeeded", status
    assert manifest_seen == [False, False]  # none after the first move; the second wrote it
    assert orthanc.move_requests() == 2
    assert retriever.store.exists(manifest_key(study.study_uid))
