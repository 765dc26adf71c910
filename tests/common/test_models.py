"""The typed bucket documents read and write exactly the JSON the services wrote before."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dicomiso_common.models import (
    PackageJobResult,
    PackageManifest,
    SendResult,
    SendResults,
    StudyManifest,
)

OLD_MANIFEST: dict[str, Any] = {
    "study_uid": "1.2.3",
    "patient": {"id": "PID1", "name": "Doe^Jane", "birth_date": "19700101", "sex": "F"},
    "study": {
        "study_uid": "1.2.3",
        "date": "20240101",
        "time": "120000",
        "id": "1",
        "description": "CT",
        "accession_number": "A1",
    },
    "charset": ["ISO_IR 100"],
    "series": {"1.2.3.4": {"modality": "CT", "number": 1, "description": None}},
    "instance_count": 1,
    "total_bytes": 10,
    "instances": [
        {
            "key": "instances/1.2.3/1.2.3.4/1.2.3.4.5.dcm",
            "size": 10,
            "sha256": "0" * 64,
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
            "sop_uid": "1.2.3.4.5",
            "series_uid": "1.2.3.4",
            "instance_number": 1,
            "rows": 2,
            "columns": 2,
            "frames": None,
        }
    ],
    "retrieved_at": "2024-01-01T12:00:00Z",
    "job_id": "j",
    "method": "move",
}


def test_study_manifest_round_trips_the_stored_json() -> None:
    """A manifest as the retriever wrote it before segments parses and is written back key
    for key, plus `offset: null` per instance (a whole object, not a range of a segment)."""
    written = StudyManifest.model_validate(OLD_MANIFEST).to_json()
    for entry in written["instances"]:
        assert entry.pop("offset") is None
    assert written == OLD_MANIFEST


def test_study_manifest_is_frozen_and_refuses_a_missing_key() -> None:
    """A read manifest cannot be changed by accident; one without instance_count is refused."""
    manifest = StudyManifest.model_validate(OLD_MANIFEST)
    with pytest.raises(ValidationError):
        manifest.instance_count = 2
    with pytest.raises(ValidationError, match="instance_count"):
        StudyManifest.model_validate(
            {k: v for k, v in OLD_MANIFEST.items() if k != "instance_count"}
        )


def test_package_manifest_and_running_result_keep_their_keys() -> None:
    """The package manifest round-trips; a running package's result holds its retrieval id only."""
    stored = {
        "key": "packages/p/p.iso",
        "filename": "A1.iso",
        "size": 1,
        "sha256": "0" * 64,
        "format": "iso",
        "profile": "STD-GEN-CD",
        "medium": "CD-R",
        "fits_medium": True,
        "studies": 1,
        "study_uids": ["1.2.3"],
        "instances": 1,
        "transcoded": [],
        "files": 3,
        "volume_id": "DICOMISOP",
        "job_id": "p",
        "created_at": "2024-01-01T12:00:00+00:00",
        "tree": [{"path": "DICOMDIR", "size": 1}],
    }
    assert PackageManifest.model_validate(stored).to_json() == stored
    assert PackageJobResult(retrieval_id="r").to_json() == {"retrieval_id": "r"}


def test_send_results_store_only_what_is_set() -> None:
    """results.json keeps the short form: no null code, no false transcoded."""
    stored = {
        "1.2.3": {"status": "failed", "reason": "missing"},
        "1.2.4": {"status": "warning", "code": 45063},
    }
    results = SendResults.model_validate(stored).root
    assert {k: r.to_json() for k, r in results.items()} == stored
    assert SendResult(status="acknowledged", transcoded=True).to_json() == {
        "status": "acknowledged",
        "transcoded": True,
    }
