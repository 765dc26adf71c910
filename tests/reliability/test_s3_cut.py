"""The S3 path of the packager is cut in the middle of the multipart upload of the image."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import httpx
from reliability.helpers import plain_study, wait_until

from support.discs import read_iso
from support.tcpproxy import TcpProxy

MiB = 1024 * 1024


class CutOnPart(TcpProxy):
    """A TcpProxy that cuts itself (listener and every connection) when a client sends the
    request line of a given multipart part: the endpoint vanishes mid-upload, as a client
    sees a crashed or partitioned S3. `start()` restores the path on the same port."""

    def __init__(self, target_port: int, marker: re.Pattern[bytes]) -> None:
        super().__init__(target_port)
        self.marker = marker
        self.cuts = 0
        self.cut = threading.Event()

    def passes(self, data: bytes) -> bool:
        if not self.cut.is_set() and self.marker.search(data[:2048]):
            self.cuts += 1
            self.cut.set()
            self.stop()
            return False
        return True


def test_s3_cut_mid_multipart_upload(
    make_system: Any, study_factory: Any, s3_bucket: Any, tmp_path: Path
) -> None:
    """Part 2 of the image never reaches S3 and the packager's S3 is gone until the job
    gives up; after the restore the package is never presented half-uploaded."""
    study = plain_study(study_factory, "RM-R-S3", ct=60, rows=256, cols=256)  # ~8 MB image
    port = int(s3_bucket.endpoint_url.rsplit(":", 1)[1])
    proxy = CutOnPart(port, re.compile(rb"^PUT [^ ]*[?&]partNumber=2[& ]")).start()
    try:
        system = make_system(
            packager_s3=f"http://127.0.0.1:{proxy.port}",
            s3_multipart_threshold=5 * MiB,
            s3_multipart_chunk=5 * MiB,
        )
        system.pacs.upload(study.files)
        system.register("RM-R-S3", "Ratna Dewi", study)
        body = {"accession_numbers": [study.accession]}
        job = system.post(body).json()["id"]

        assert proxy.cut.wait(90), "the upload never reached part 2"
        # While the path is down the job record cannot be read, but the replica running the
        # job answers its status from memory: still running, never a final state it could
        # not write (jobs.py, JobHandle.snapshot).
        during = system.status(job)
        assert during.status_code == 200, during.text
        assert during.json()["state"] == "running", during.json()
        # The upload gives up (botocore retries, then StoreError). Whether the failure can be
        # written depends on timing: not while the path is down ("could not record job
        # failure"), but yes if the restore comes first.
        wait_until(
            lambda: any(r.getMessage() == "job failed" for r in system.log),
            90,
            "the packager to give up",
            0.1,
        )
        failed = next(r for r in system.log if r.getMessage() == "job failed")
        assert getattr(failed, "job_id", None) == job  # set by logging's `extra`
        assert system.keys("packages/") == []
        proxy.start()  # restore

        outcome = system.wait(job)
        if outcome["state"] == "failed":
            # Recorded: a reason from the store, not an internal error; the same POST runs
            # it again.
            assert outcome["error"] and "internal error" not in outcome["error"], outcome
            assert system.keys("packages/") == []
            assert system.post(body).json()["id"] == job
            outcome = system.wait(job)
            assert outcome["attempt"] == 2
        else:
            # Not recorded: the record stayed `running` with a stale heartbeat and the
            # replica's sweeper took the job over and re-ran it.
            assert outcome["attempt"] == 1
        assert outcome["state"] == "succeeded", outcome
        uploads = s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name)
        dangling = [u["Key"] for u in uploads.get("Uploads", [])]
        image = tmp_path / "disc.iso"
        image.write_bytes(httpx.get(outcome["download_url"], timeout=30).content)
        assert set(read_iso(image).referenced()) == set(study.sop_uids)
        assert system.post(body).json()["id"] == job  # the same POST: the same package
        assert proxy.cuts == 1
        # The first run's multipart upload could not be aborted while the path was down;
        # the next run aborts it before uploading again (Store.abort_uploads).
        assert dangling == [], f"multipart uploads left dangling: {dangling}"
    finally:
        proxy.stop()
