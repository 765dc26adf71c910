"""A PACS that is down, refuses us or dies mid-move: the job fails with why, then recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dicomiso_common.dicom import manifest_key
from dicomiso_common.store import Store
from support.net import free_port
from support.stored import stored_keys, stored_sops


def test_pacs_down_fails_with_the_reason(
    make_retriever: Any, orthanc: Any, study_factory: Any
) -> None:
    class Nobody:
        aet = "ABPACS"
        dicom_port = free_port()  # nothing listens here

    retriever = make_retriever(pacs=Nobody(), register=False, dicom_acse_timeout=5)
    status = retriever.run({"accession_numbers": ["DOWN1"]})

    assert status["state"] == "failed"
    assert "PACS ABPACS" in status["error"] and "unreachable" in status["error"]
    assert stored_keys(retriever.store) == [] and retriever.keys("studies/") == []


def test_pacs_refusing_our_ae_fails_with_the_reason(
    make_retriever: Any, orthanc_factory: Any
) -> None:
    strict = orthanc_factory(unknown_aets="reject")
    retriever = make_retriever(pacs=strict, register=False)  # the PACS does not know CDRECORD
    status = retriever.run({"accession_numbers": ["REFUSED1"]})

    assert status["state"] == "failed"
    assert status["error"].startswith(
        f"PACS {strict.aet} at 127.0.0.1:{strict.dicom_port} refused association from CDRECORD"
    )


def test_pacs_dying_mid_move_fails_then_a_retry_completes(
    make_retriever: Any, orthanc_factory: Any, study_factory: Any
) -> None:
    """Orthanc is killed during the C-MOVE: no manifest; after a restart the same POST completes."""
    pacs = orthanc_factory()
    study = study_factory(
        ct=150,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
        rows=128,
        cols=128,
    )
    pacs.upload(study.files)
    # Small segments, so that part of the study is in the bucket when the PACS dies.
    retriever = make_retriever(pacs=pacs, segment_bytes=128 * 1024)
    body = {"accession_numbers": [study.accession]}
    job = retriever.post(body).json()["id"]
    deadline = time.monotonic() + 30
    while len(stored_sops(retriever.store, study.study_uid)) < 10:
        assert time.monotonic() < deadline, "move never started"
        time.sleep(0.02)
    pacs.kill()

    failed = retriever.wait(job)
    assert failed["state"] == "failed"
    assert (
        "aborted" in failed["error"]
        or "unreachable" in failed["error"]
        or "of 151" in failed["error"]
    ), failed["error"]
    assert not retriever.store.exists(manifest_key(study.study_uid))
    assert len(stored_sops(retriever.store, study.study_uid)) < len(study.files)

    pacs.restart()
    retried = retriever.post(body).json()
    assert retried["id"] == job
    done = retriever.wait(job)
    assert done["state"] == "succeeded" and done["attempt"] == 2
    assert len(stored_sops(retriever.store, study.study_uid)) == len(study.files)
    assert retriever.store.exists(manifest_key(study.study_uid))


def test_killed_retriever_process_is_taken_over_by_another(
    s3_bucket: Any, orthanc: Any, study_factory: Any, tmp_path: Path
) -> None:
    """SIGKILL one retriever mid-job; a second process claims the job after the heartbeat
    timeout and completes it."""
    study = study_factory(
        ct=200,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
        rows=128,
        cols=128,
    )
    orthanc.upload(study.files)
    scp_port = free_port()
    orthanc.register_modality("CDRECORD", "127.0.0.1", scp_port)
    exe = Path(sys.executable).with_name("dicomiso-retriever")

    def start(name: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        env = {
            **os.environ,
            "DICOMISO_S3_ENDPOINT_URL": s3_bucket.endpoint_url,
            "DICOMISO_S3_BUCKET": s3_bucket.name,
            "DICOMISO_PACS_PORT": str(orthanc.dicom_port),
            "DICOMISO_SCP_PORT": str(scp_port),
            "DICOMISO_HTTP_PORT": str(port),
            "DICOMISO_JOB_HEARTBEAT": "0.5",
            "DICOMISO_JOB_STALE_AFTER": "3",
            "DICOMISO_REPLICA_ID": name,
            # small segments: part of the study lands before the kill, the rest never does
            "DICOMISO_SEGMENT_BYTES": str(128 * 1024),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen([str(exe)], env=env, stdout=log, stderr=subprocess.STDOUT)
        return proc, port

    import httpx

    def wait_ready(port: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("retriever did not become ready")

    first, port1 = start("replica-one")
    second = None
    try:
        wait_ready(port1)
        job = httpx.post(
            f"http://127.0.0.1:{port1}/v1/retrievals", json={"accession_numbers": [study.accession]}
        ).json()["id"]

        def store_keys() -> set[str]:
            return stored_sops(Store(s3_bucket.client, s3_bucket.name), study.study_uid)

        deadline = time.monotonic() + 30
        while len(store_keys()) < 10:
            assert time.monotonic() < deadline, "move never started"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert len(store_keys()) < len(study.files), "killed too late to prove a take-over"

        second, port2 = start("replica-two")
        wait_ready(port2)
        deadline = time.monotonic() + 60
        while True:
            status = httpx.get(f"http://127.0.0.1:{port2}/v1/retrievals/{job}").json()
            if status["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status["state"] == "succeeded", status
        record = s3_bucket.client.get_object(
            Bucket=s3_bucket.name, Key=f"jobs/retrieve/{job}.json"
        )["Body"].read()
        assert b'"owner": "replica-two"' in record
        assert len(store_keys()) == len(study.files)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
