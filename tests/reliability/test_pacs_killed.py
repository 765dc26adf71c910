"""The PACS dies in the middle of the C-MOVE of a package job, then comes back."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
from reliability.helpers import plain_study, wait_until

from dicomiso_common.dicom import manifest_key, segment_prefix
from support.discs import read_iso
from support.stored import stored_sops

KILL_AFTER = 20  # instances in the bucket before the SIGKILL


def test_pacs_killed_mid_move_fails_the_package_then_a_repeat_succeeds(
    make_system: Any, orthanc_factory: Any, study_factory: Any, tmp_path: Path
) -> None:
    """SIGKILL Orthanc once >= 20 of 150 instances arrived: the package fails naming the
    retrieval, nothing under packages/, no manifest for the half study, the instances that
    arrived stay as they were; after the restart the same POST makes a complete disc."""
    pacs = orthanc_factory()
    study = plain_study(study_factory, "RM-R-PACS", ct=150)
    pacs.upload(study.files)
    # Small segments: some land while the move runs, the rest die with the association.
    system = make_system(pacs=pacs, retriever={"segment_bytes": 128 * 1024})
    system.register("RM-R-PACS", "Bambang Wijaya", study)
    body = {"accession_numbers": [study.accession]}
    prefix = segment_prefix(study.study_uid)

    job = system.post(body).json()["id"]

    def arrived() -> int:
        return len(stored_sops(system.store, study.study_uid))

    wait_until(lambda: arrived() >= KILL_AFTER, 60, "the C-MOVE to start")
    assert pacs.pid is not None
    os.kill(pacs.pid, signal.SIGKILL)  # fault 1 of 1, by PID
    killed_at = arrived()

    failed = system.wait(job)
    assert failed["state"] == "failed", failed
    assert failed["error"].startswith("retrieval failed: "), failed["error"]
    assert failed["download_url"] is None
    assert system.keys("packages/") == []
    assert not system.store.exists(manifest_key(study.study_uid))  # half a study is no study
    kept = {o.key: o.etag for o in system.store.list(prefix)}
    assert killed_at <= arrived() < len(study.files)

    pacs.kill()  # reap the killed process; restart() keeps ports, re-registers CDRECORD
    pacs.restart()
    assert system.keys("packages/") == []
    again = system.post(body)
    assert again.status_code == 202 and again.json()["id"] == job
    done = system.wait(job)
    assert done["state"] == "succeeded", done
    assert done["attempt"] == 2

    final = {o.key: o.etag for o in system.store.list(prefix)}
    assert arrived() == len(study.files)
    assert all(final[key] == etag for key, etag in kept.items())  # nothing received was lost
    assert system.store.exists(manifest_key(study.study_uid))
    image = tmp_path / "disc.iso"
    image.write_bytes(httpx.get(done["download_url"], timeout=30).content)
    assert set(read_iso(image).referenced()) == set(study.sop_uids)
