"""results.json is fenced: only the job's current owner writes it (If-Match on every write)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dicomiso_common.jobs import JobHandle, JobLost, Jobs
from dicomiso_common.models import SendResult
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from dicomiso_forwarder.forward import ResultsFile, results_key

ACK = SendResult(status="acknowledged")


def _second_save(store: Store, tag: str, meanwhile: Callable[[str], None]) -> tuple[str, str]:
    """Run a job that saves results.json once, let `meanwhile(job_id)` act, then let it save
    again; return (job id, "saved" or "lost")."""
    outcome: list[str] = []
    started, release = threading.Event(), threading.Event()

    def run(handle: JobHandle) -> dict[str, Any]:
        saved = ResultsFile(store, handle)
        saved.load()
        saved.save({"1.2.3": ACK})
        started.set()
        release.wait(10)
        try:
            saved.save({"1.2.3": ACK, "1.2.4": ACK})
        except JobLost:
            outcome.append("lost")
            raise
        outcome.append("saved")
        return {}

    settings = CommonSettings(replica_id="a", job_heartbeat=0.2, job_stale_after=2.0)
    jobs = Jobs(store, "forward", settings, run)
    try:
        jid = jobs.submit({"k": tag}).id
        assert started.wait(10)
        meanwhile(jid)
        release.set()
        deadline = time.monotonic() + 10
        while not outcome:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return jid, outcome[0]
    finally:
        jobs.shutdown()


def test_a_runner_whose_job_passed_cannot_overwrite_the_results(store: Store) -> None:
    """Another replica took the job over and wrote results.json: the old runner's next write
    fails (412), the job record confirms it is no longer the owner, and it stops."""
    theirs = {"9.9.9": {"status": "failed", "reason": "written by b"}}

    def take_over(jid: str) -> None:
        record, etag = store.get_json(f"jobs/forward/{jid}.json")
        store.put_json(
            f"jobs/forward/{jid}.json", {**record, "owner": "b", "run": "b-run"}, if_match=etag
        )
        _, results_etag = store.get_json(results_key(jid))
        store.put_json(results_key(jid), theirs, if_match=results_etag)

    jid, outcome = _second_save(store, "fenced", take_over)
    assert outcome == "lost"
    assert store.get_json(results_key(jid))[0] == theirs


def test_the_owner_writes_over_a_change_it_made_itself(store: Store) -> None:
    """A 412 while the job is still ours (botocore retried a write that had landed) is not a
    loss: the owner re-reads, keeps what is there, and writes its results."""

    def rewrite(jid: str) -> None:
        data, etag = store.get_json(results_key(jid))
        store.put_json(results_key(jid), data, if_match=etag)  # same body, new ETag

    jid, outcome = _second_save(store, "own", rewrite)
    assert outcome == "saved"
    assert set(store.get_json(results_key(jid))[0]) == {"1.2.3", "1.2.4"}
