"""What leaves the retriever besides the bucket: logs without patient data, files dcmtk accepts."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomiso_common.instances import open_instances
from dicomiso_common.manifests import load_manifest
from support.dcmtk import dcmtk_bin, dcmtk_env


def test_logs_at_info_and_above_hold_no_patient_data(
    retriever: Any, orthanc: Any, study_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Names, patient IDs and accession numbers never reach INFO+ logs, pynetdicom's included."""
    study = study_factory(patient_name="Santoso^Budi", patient_id="PRIV-77123")
    for path in study.files[:2]:  # legacy data: a birth date pydicom calls invalid, quoted
        ds = pydicom.dcmread(path)
        ds.PatientBirthDate = "1970-01-01"
        ds.save_as(path)
    orthanc.upload(study.files)
    caplog.set_level(logging.DEBUG)

    ok = retriever.run({"accession_numbers": [study.accession]})
    failed = retriever.run({"accession_numbers": ["NOSUCH9876"]})

    assert ok["state"] == "succeeded" and failed["state"] == "failed"
    ours = [
        r
        for r in caplog.records  # werkzeug/httpx: the test's S3 server and HTTP client
        if r.levelno >= logging.INFO and not r.name.startswith(("werkzeug", "httpx"))
    ]
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    assert "retrieval finished" in text  # the logs are there, only without patient data
    for secret in ("Santoso", "Budi", "PRIV-77123", study.accession, "NOSUCH9876", "1970-01-01"):
        assert secret not in text


def test_stored_objects_are_part10_files_dcmtk_reads(
    retriever: Any, orthanc: Any, study_factory: Any, tmp_path: Path
) -> None:
    """Cross-check with dcmtk: every stored instance parses completely with dcmdump."""
    study = study_factory()
    orthanc.upload(study.files)
    assert retriever.run({"accession_numbers": [study.accession]})["state"] == "succeeded"

    stored = load_manifest(retriever.store, study.study_uid)
    assert len(stored.instances) == len(study.files)
    for entry, body in open_instances(retriever.store, stored.instances):
        path = tmp_path / f"{entry.sop_uid}.dcm"
        path.write_bytes(body.read())
        result = subprocess.run(
            [dcmtk_bin("dcmdump"), "-q", "+E", str(path)],
            env=dcmtk_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "(0002,0010)" in result.stdout and "(0008,0018)" in result.stdout
