"""Job records in the bucket: one job per request, take-over of stale jobs, lost leases."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dicomiso_common.jobs import JobHandle, JobRecord, Jobs, job_id, live_key
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from support.s3fault import S3Fault


def _wait(
    jobs: Jobs, jid: str, states: tuple[str, ...] = ("succeeded", "failed"), timeout: float = 10.0
) -> JobRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = jobs.get(jid)
        if record.state in states:
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {jid} still {jobs.get(jid).state}")


def write_orphan(store: Store, jid: str, request: dict[str, Any], heartbeat_at: float) -> None:
    """The record and live marker a replica leaves behind when it dies mid-run."""
    store.put_json(
        f"jobs/test/{jid}.json",
        JobRecord(
            id=jid,
            kind="test",
            request=request,
            state="running",
            created_at=heartbeat_at,
            updated_at=heartbeat_at,
            heartbeat_at=heartbeat_at,
            owner="dead-replica",
            run="dead-run",
        ).model_dump(),
    )
    store.put_bytes(live_key("test", jid, "dead-run"), b"")


def wait_stale(store: Store, jid: str, stale_after: float, timeout: float = 10.0) -> None:
    """Wait until the bucket's clock says the record has not been written for `stale_after`."""
    deadline = time.monotonic() + timeout
    while store.read_json(f"jobs/test/{jid}.json").age <= stale_after:
        assert time.monotonic() < deadline, "the record never went stale"
        time.sleep(0.1)


def job_settings(replica: str, **kw: Any) -> CommonSettings:
    """Fast timings: renewed every 0.2 s, given up after 1.33 s, taken over after 2 s."""
    return CommonSettings(replica_id=replica, job_heartbeat=0.2, job_stale_after=2.0, **kw)


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def make_jobs(store: Store) -> Iterator[Any]:
    made: list[Jobs] = []

    def make(replica: str, run: Any) -> Jobs:
        jobs = Jobs(store, "test", job_settings(replica), run)
        made.append(jobs)
        return jobs

    yield make
    for jobs in made:
        jobs.shutdown()


def test_same_request_twice_is_one_job_run_once(make_jobs: Any, calls: list[str]) -> None:
    def run(handle: JobHandle) -> dict[str, Any]:
        calls.append(handle.id)
        time.sleep(0.3)
        return {"ok": True}

    jobs = make_jobs("a", run)
    first = jobs.submit({"k": [1, 2]})
    second = jobs.submit({"k": [1, 2]})
    assert first.id == second.id == job_id("test", {"k": [1, 2]})
    assert _wait(jobs, first.id).state == "succeeded"
    assert jobs.submit({"k": [1, 2]}).state == "succeeded"
    assert calls == [first.id]


def test_failed_job_runs_again_on_the_next_identical_request(
    make_jobs: Any, calls: list[str]
) -> None:
    def run(handle: JobHandle) -> dict[str, Any]:
        calls.append(handle.id)
        if len(calls) == 1:
            from dicomiso_common.errors import DicomError

            raise DicomError("PACS X refused association")
        return {}

    jobs = make_jobs("a", run)
    jid = jobs.submit({"k": 1}).id
    failed = _wait(jobs, jid)
    assert (failed.state, failed.error) == ("failed", "PACS X refused association")
    again = jobs.submit({"k": 1})
    assert again.attempt == 2
    assert _wait(jobs, jid).state == "succeeded"
    assert len(calls) == 2


def test_unexpected_error_fails_the_job_without_leaking_details(make_jobs: Any) -> None:
    def run(handle: JobHandle) -> dict[str, Any]:
        raise KeyError("Doe^Jane")

    jobs = make_jobs("a", run)
    record = _wait(jobs, jobs.submit({"k": 2}).id)
    assert record.state == "failed"
    assert "KeyError" in (record.error or "") and "Doe" not in (record.error or "")


def test_stale_job_of_a_dead_replica_is_taken_over(
    store: Store, make_jobs: Any, calls: list[str]
) -> None:
    """A record whose heartbeat stopped is claimed on GET and by the sweep, then completed."""
    request = {"k": "orphan"}
    jid = job_id("test", request)
    write_orphan(store, jid, request, heartbeat_at=time.time() - 60)
    wait_stale(store, jid, job_settings("b").job_stale_after)

    def run(handle: JobHandle) -> dict[str, Any]:
        calls.append(handle.record.owner or "")
        return {"done": True}

    jobs = make_jobs("b", run)
    assert jobs.sweep() == 1
    record = _wait(jobs, jid)
    assert record.state == "succeeded" and record.owner == "b" and calls == ["b"]


def test_live_job_is_not_taken_over(store: Store, make_jobs: Any) -> None:
    release = threading.Event()

    def run(handle: JobHandle) -> dict[str, Any]:
        release.wait(5)
        return {}

    a = make_jobs("a", run)
    b = make_jobs("b", run)
    jid = a.submit({"k": "live"}).id
    time.sleep(2.5)  # longer than stale_after: only the heartbeat keeps it alive
    assert b.sweep() == 0
    assert b.get(jid).owner == "a"
    release.set()
    assert _wait(a, jid).state == "succeeded"


def test_replica_that_lost_its_job_stops_writing(store: Store, make_jobs: Any) -> None:
    """If another replica claimed the record, the old runner's writes fail and it gives up."""
    started, release = threading.Event(), threading.Event()

    def run(handle: JobHandle) -> dict[str, Any]:
        started.set()
        release.wait(5)
        handle.update(phase="late", flush=True)
        return {"by": "a"}

    a = make_jobs("a", run)
    jid = a.submit({"k": "steal"}).id
    assert started.wait(5)
    data, etag = store.get_json(f"jobs/test/{jid}.json")
    data.update(owner="thief", run="thief-run", state="failed", error="claimed elsewhere")
    store.put_json(f"jobs/test/{jid}.json", data, if_match=etag)
    release.set()
    time.sleep(0.5)
    final, _ = store.get_json(f"jobs/test/{jid}.json")
    assert final["owner"] == "thief" and final["error"] == "claimed elsewhere"


def test_412_for_our_own_landed_write_keeps_the_job(store: Store, make_jobs: Any) -> None:
    """A retried If-Match write that lost only to itself must not abandon the job."""
    started, release = threading.Event(), threading.Event()

    def run(handle: JobHandle) -> dict[str, Any]:
        started.set()
        release.wait(5)
        return {"done": True}

    jobs = make_jobs("a", run)
    jid = jobs.submit({"k": "retry"}).id
    assert started.wait(5)
    data, etag = store.get_json(f"jobs/test/{jid}.json")
    store.put_json(f"jobs/test/{jid}.json", data, if_match=etag)  # same run token, new ETag
    release.set()
    assert _wait(jobs, jid).state == "succeeded"


def test_status_of_a_job_this_replica_runs_comes_from_memory(s3_bucket: Any) -> None:
    """A GET of a live job of ours makes no S3 request and shows its latest progress; another
    replica's job, and ours once finished, are read from the bucket."""
    started, release = threading.Event(), threading.Event()

    def run(handle: JobHandle) -> dict[str, Any]:
        handle.set_counts(stored=7)  # not flushed: only memory knows it yet
        started.set()
        release.wait(10)
        return {"done": True}

    with S3Fault(s3_bucket.endpoint_url) as proxy:
        store = Store.from_settings(
            CommonSettings(s3_endpoint_url=proxy.url, s3_bucket=s3_bucket.name)
        )
        a = Jobs(store, "test", job_settings("a"), run)
        b = Jobs(store, "test", job_settings("b"), run)
        try:
            jid = a.submit({"k": "memory"}).id
            assert started.wait(5)
            record_key = f"/{s3_bucket.name}/jobs/test/{jid}.json"
            before = len(proxy.requests)
            seen = [a.get(jid) for _ in range(20)]
            reads = [r for r in proxy.requests[before:] if r == ("GET", record_key)]
            assert reads == []
            assert {(r.state, r.owner, r.counts.get("stored")) for r in seen} == {
                ("running", "a", 7)
            }

            before = len(proxy.requests)
            assert b.get(jid).owner == "a"
            assert proxy.requests[before:].count(("GET", record_key)) == 1

            release.set()
            before = len(proxy.requests)
            final = _wait(a, jid)
            assert final.state == "succeeded" and final.result == {"done": True}
            assert ("GET", record_key) in proxy.requests[before:]
        finally:
            release.set()
            a.shutdown()
            b.shutdown()


def _wait_phase(jobs: Jobs, jid: str, phase: str) -> None:
    deadline = time.monotonic() + 10
    while jobs.get(jid).phase != phase:
        assert time.monotonic() < deadline, f"job never reached phase {phase}"
        time.sleep(0.01)


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_a_long_poll_answers_when_the_phase_or_state_changes(store: Store) -> None:
    """GET with `wait`: held while nothing changes, answered by the next phase, and by the
    final state only once its record has landed (read back from the bucket)."""
    steps = [threading.Event() for _ in range(2)]

    def run(handle: JobHandle) -> dict[str, Any]:
        handle.update(phase="first")
        steps[0].wait(10)
        handle.update(phase="second")
        steps[1].wait(10)
        return {"done": True}

    jobs = Jobs(store, "test", job_settings("a"), run)
    try:
        jid = jobs.submit({"k": "long-poll"}).id
        _wait_phase(jobs, jid, "first")
        thread, out = _in_thread(lambda: jobs.get(jid, wait=25))
        thread.join(0.5)
        assert thread.is_alive(), "a long poll of an unchanged job answered at once"
        steps[0].set()
        thread.join(10)  # well inside the 25 s asked: the change answered it
        assert not thread.is_alive() and out[0].phase == "second"

        thread, out = _in_thread(lambda: jobs.get(jid, wait=25))
        thread.join(0.5)
        assert thread.is_alive()
        steps[1].set()
        thread.join(10)
        assert not thread.is_alive()
        assert out[0].state == "succeeded" and out[0].result == {"done": True}
        assert store.get_json(f"jobs/test/{jid}.json")[0]["state"] == "succeeded"
    finally:
        for step in steps:
            step.set()
        jobs.shutdown()


def test_a_long_poll_of_a_job_run_elsewhere_or_beyond_the_cap_answers_at_once(
    store: Store,
) -> None:
    """Only this replica's live jobs are waited for, by at most `max_waiters` requests; the
    rest are answered at once (their callers sleep their own poll interval)."""
    release = threading.Event()

    def run(handle: JobHandle) -> dict[str, Any]:
        handle.update(phase="working")
        release.wait(10)
        return {}

    a = Jobs(store, "test", job_settings("a"), run, max_waiters=1)
    b = Jobs(store, "test", job_settings("b"), run)
    try:
        jid = a.submit({"k": "elsewhere"}).id
        _wait_phase(a, jid, "working")
        thread, out = _in_thread(lambda: b.get(jid, wait=25))
        thread.join(10)
        assert not thread.is_alive() and out[0].owner == "a"

        held, _ = _in_thread(lambda: a.get(jid, wait=25))
        held.join(0.5)
        assert held.is_alive()
        second, out = _in_thread(lambda: a.get(jid, wait=25))
        second.join(10)
        assert not second.is_alive() and out[0].state == "running"  # over the cap of 1
        release.set()
        held.join(10)
        assert not held.is_alive()
    finally:
        release.set()
        a.shutdown()
        b.shutdown()


def test_a_shutdown_answers_the_waiting_long_polls(store: Store) -> None:
    release = threading.Event()

    def run(handle: JobHandle) -> dict[str, Any]:
        release.wait(10)
        return {}

    jobs = Jobs(store, "test", job_settings("a"), run)
    try:
        jid = jobs.submit({"k": "shutdown"}).id
        _wait(jobs, jid, states=("running",))
        thread, out = _in_thread(lambda: jobs.get(jid, wait=25))
        thread.join(0.5)
        assert thread.is_alive()
        jobs.shutdown(grace=0.1)
        thread.join(10)
        assert not thread.is_alive() and out[0].state == "running"
    finally:
        release.set()
        jobs.shutdown()
