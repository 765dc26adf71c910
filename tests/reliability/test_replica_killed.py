"""A packager process is SIGKILLed mid-job; a second packager process takes the job over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from reliability.helpers import TOKEN, plain_study, wait_ready, wait_until

from support.discs import read_iso
from support.net import free_port


def _packager(
    name: str, system: Any, s3_bucket: Any, work: Path, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `dicomiso-packager` as its own process, configured only by DICOMISO_*."""
    port = free_port()
    work.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DICOMISO_S3_ENDPOINT_URL": s3_bucket.endpoint_url,
        "DICOMISO_S3_BUCKET": s3_bucket.name,
        "DICOMISO_HTTP_PORT": str(port),
        "DICOMISO_LOOKUP_URL": system.lookup_url,
        "DICOMISO_RETRIEVER_URL": system.retriever_url,
        "DICOMISO_CALL_TOKEN": TOKEN,
        "DICOMISO_JOB_HEARTBEAT": "0.5",
        "DICOMISO_JOB_STALE_AFTER": "3",
        "DICOMISO_REPLICA_ID": name,
        "DICOMISO_WORK_DIR": str(work),
    }
    exe = Path(sys.executable).with_name("dicomiso-packager")
    proc = subprocess.Popen([str(exe)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def test_killed_packager_replica_is_taken_over(
    make_system: Any, study_factory: Any, s3_bucket: Any, tmp_path: Path
) -> None:
    """POST to replica A, SIGKILL A while it retrieves/builds; replica B claims the stale
    job, finishes it, owns the record, and the disc holds every instance."""
    study = plain_study(study_factory, "RM-R-KILL", ct=120)
    system = make_system(packager=False)
    system.pacs.upload(study.files)
    system.register("RM-R-KILL", "Joko Susilo", study)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a, url_a = _packager("packager-a", system, s3_bucket, tmp_path / "a", tmp_path / "a.log")
        b, url_b = _packager("packager-b", system, s3_bucket, tmp_path / "b", tmp_path / "b.log")
        procs += [a, b]
        wait_ready(url_a)
        wait_ready(url_b)
        accepted = httpx.post(
            f"{url_a}/v1/packages", json={"accession_numbers": [study.accession]}, timeout=30
        )
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()["id"]

        def phase() -> str | None:
            status = httpx.get(f"{url_a}/v1/packages/{job}", timeout=10).json()
            now: str | None = (
                status.get("phase") if status["state"] == "running" else status["state"]
            )
            return now

        wait_until(lambda: phase() in ("retrieve", "build"), 60, "A to be working", 0.05)
        killed_in = phase()
        os.kill(a.pid, signal.SIGKILL)  # fault 1 of 1, by PID
        a.wait(10)
        assert killed_in in ("retrieve", "build"), killed_in
        assert (
            s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name, Prefix="packages/").get(
                "KeyCount", 0
            )
            == 0
        )

        deadline = time.monotonic() + 120
        polls = 0
        while True:
            polls += 1
            status = httpx.get(f"{url_b}/v1/packages/{job}", timeout=10).json()
            if status["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status["state"] == "succeeded", status
        record = system.store.get_json(f"jobs/package/{job}.json")[0]
        assert record["owner"] == "packager-b"
        assert record["attempt"] == 1  # a take-over, not a restart after a failure

        image = tmp_path / "disc.iso"
        image.write_bytes(httpx.get(status["download_url"], timeout=30).content)
        assert set(read_iso(image).referenced()) == set(study.sop_uids)
        assert list((tmp_path / "b").iterdir()) == []  # B cleaned up after itself
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)
