"""The job protocol's promises (docs/architecture.md, "Jobs and leases") on the moto server.

The sweeper's cost follows live jobs, not every job ever run; staleness is judged by the
bucket's clock, never by the writer's; an owner that cannot renew its record stops before any
other replica may take the job over; timings that break this are refused at start-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from common.test_jobs import job_settings, wait_stale, write_orphan

from dicomiso_common.jobs import JobHandle, JobLost, Jobs, job_id
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from support.s3fault import S3Fault


def _done(handle: JobHandle) -> dict[str, Any]:
    return {"by": handle.record.owner}


@pytest.fixture
def proxy(s3_bucket: Any) -> Iterator[S3Fault]:
    """A pass-through proxy in front of moto that logs every S3 request."""
    with S3Fault(s3_bucket.endpoint_url) as fault:
        yield fault


def _store(url: str, s3_bucket: Any) -> Store:
    return Store.from_settings(CommonSettings(s3_endpoint_url=url, s3_bucket=s3_bucket.name))


def _finish(jobs: Jobs, n: int, tag: str) -> None:
    ids = [jobs.submit({"k": f"{tag}-{i}"}).id for i in range(n)]
    deadline = time.monotonic() + 30
    while any(jobs.get(j).state != "succeeded" for j in ids):
        assert time.monotonic() < deadline, "jobs did not finish"
        time.sleep(0.05)


def _sweep_requests(jobs: Jobs, proxy: S3Fault) -> list[tuple[str, str]]:
    before = len(proxy.requests)
    jobs.sweep()
    return proxy.requests[before:]


def test_sweep_reads_the_live_jobs_only(s3_bucket: Any, proxy: S3Fault) -> None:
    """After 5 and after 25 finished jobs a sweep is one listing of live markers, nothing
    else; a running job adds one read of its record."""
    store = _store(proxy.url, s3_bucket)
    jobs = Jobs(store, "test", job_settings("a"), _done)
    try:
        _finish(jobs, 5, "first")
        after_5 = _sweep_requests(jobs, proxy)
        _finish(jobs, 20, "second")
        after_25 = _sweep_requests(jobs, proxy)
        assert len(after_5) == len(after_25) == 1
        assert after_25[0][0] == "GET" and "list-type=2" in after_25[0][1]
        assert "jobs%2Flive%2Ftest%2F" in after_25[0][1]
        assert list(store.list("jobs/live/")) == []  # every finished run removed its marker

        release = threading.Event()

        def wait(handle: JobHandle) -> dict[str, Any]:
            release.wait(10)
            return {}

        direct = _store(s3_bucket.endpoint_url, s3_bucket)  # its heartbeats are not counted
        busy = Jobs(direct, "test", job_settings("b"), wait)
        live = busy.submit({"k": "live"}).id
        with_live = _sweep_requests(jobs, proxy)
        release.set()
        assert len(with_live) == 2 and with_live[1] == (
            "GET",
            f"/{s3_bucket.name}/jobs/test/{live}.json",
        )
        busy.shutdown()
    finally:
        jobs.shutdown()


def test_sweep_removes_markers_of_runs_that_are_over(store: Store) -> None:
    """A marker left by a replica that died after recording the final state is deleted."""
    jobs = Jobs(store, "test", job_settings("a"), _done)
    try:
        jid = jobs.submit({"k": "over"}).id
        deadline = time.monotonic() + 10
        while jobs.get(jid).state != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        store.put_bytes(f"jobs/live/test/{jid}/old-run", b"")  # a superseded run's marker
        assert jobs.sweep() == 0
        assert list(store.list("jobs/live/")) == []
    finally:
        jobs.shutdown()


def test_staleness_is_judged_by_the_bucket_clock_not_the_writer(store: Store) -> None:
    """A record written just now by a host whose clock is an hour behind is live; one whose
    writer's clock is an hour ahead is stale once the bucket says it was not rewritten."""
    claimed: list[str] = []

    def run(handle: JobHandle) -> dict[str, Any]:
        claimed.append(handle.id)
        return {}

    jobs = Jobs(store, "test", job_settings("b"), run)
    try:
        behind = job_id("test", {"k": "behind"})
        write_orphan(store, behind, {"k": "behind"}, heartbeat_at=time.time() - 3600)
        assert jobs.sweep() == 0
        assert jobs.get(behind).owner == "dead-replica"

        ahead = job_id("test", {"k": "ahead"})
        write_orphan(store, ahead, {"k": "ahead"}, heartbeat_at=time.time() + 3600)
        wait_stale(store, ahead, jobs.settings.job_stale_after)
        wait_stale(store, behind, jobs.settings.job_stale_after)
        assert jobs.sweep() == 2
        deadline = time.monotonic() + 10
        while len(claimed) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert sorted(claimed) == sorted([behind, ahead])
    finally:
        jobs.shutdown()


def test_owner_that_cannot_renew_stops_before_another_may_take_over(
    s3_bucket: Any, store: Store
) -> None:
    """S3 refuses the owner's writes: it gives up (stale_after - margin) before the other
    replica's sweep may claim the job (stale_after), and the other one finishes it."""
    cut = threading.Event()
    stopped = threading.Event()
    started = threading.Event()
    settings: dict[str, Any] = {"job_heartbeat": 0.5, "job_stale_after": 6.0, "job_margin": 4.0}

    def stubborn(handle: JobHandle) -> dict[str, Any]:
        started.set()
        try:
            while True:
                handle.check()
                time.sleep(0.05)
        except JobLost:
            stopped.set()
            raise

    with S3Fault(s3_bucket.endpoint_url, lambda method, _path: cut.is_set()) as fault:
        owner = Jobs(
            _store(fault.url, s3_bucket),
            "test",
            CommonSettings(replica_id="a", **settings),
            stubborn,
        )
        other = Jobs(store, "test", CommonSettings(replica_id="b", **settings), _done)
        try:
            jid = owner.submit({"k": "cut"}).id
            assert started.wait(10)
            cut.set()
            deadline = time.monotonic() + 30
            while other.sweep() == 0:
                assert time.monotonic() < deadline, "never taken over"
                time.sleep(0.1)
            assert stopped.is_set(), "the other replica claimed the job while its owner worked"
            deadline = time.monotonic() + 10
            while (record := other.get(jid)).state != "succeeded":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert record.owner == "b" and record.result == {"by": "b"}
        finally:
            owner.shutdown(grace=1)
            other.shutdown()


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"job_heartbeat": 5.0, "job_stale_after": 10.0}, "DICOMISO_JOB_HEARTBEAT"),
        ({"job_stale_after": 30.0, "job_margin": 30.0}, "DICOMISO_JOB_MARGIN"),
    ],
)
def test_timings_that_break_the_margin_are_refused(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        CommonSettings(**values)


def test_a_service_with_such_timings_does_not_start() -> None:
    """The entry point exits at once with one line naming the variable, not a traceback."""
    env = {**os.environ, "DICOMISO_JOB_HEARTBEAT": "20", "DICOMISO_JOB_STALE_AFTER": "30"}
    exe = Path(sys.executable).with_name("dicomiso-retriever")
    proc = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert (
        proc.stderr.startswith("invalid configuration:") and "DICOMISO_JOB_HEARTBEAT" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
