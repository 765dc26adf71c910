"""The retriever's audit events: each query of the PACS and each study it transfers.

They carry what a DICOM audit message names (`dicomiso_common.atna`): the PatientID and
Study UIDs (in the event body in the bucket, never in a log), our AE title and the PACS's,
the match keys of a query. A job's events are best effort (the job record holds the outcome
too); a query a caller asked for over HTTP is recorded with who asked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from dicomiso_common import audit
from dicomiso_common.models import StudyManifest
from dicomiso_common.pacs import StudyAnswer
from dicomiso_common.store import Store

from .settings import RetrieverSettings

SERVICE = "retriever"


def pacs_fields(settings: RetrieverSettings, method: str) -> dict[str, Any]:
    """Who spoke with whom: our AE title and the PACS's, or the DICOMweb archive's host."""
    if method == "dicomweb":
        host = urlsplit(settings.pacs_dicomweb_url or "").hostname
        return {"our_aet": None, "peer_aet": None, "peer_host": host}
    return {
        "our_aet": settings.our_calling_aet if method == "get" else settings.scp_aet,
        "peer_aet": settings.pacs_aet,
        "peer_host": settings.pacs_host,
    }


def query_fields(
    settings: RetrieverSettings, method: str, keys: dict[str, str], found: list[StudyAnswer]
) -> dict[str, Any]:
    """A query event's body: the match keys, the nodes, the patient and studies it found."""
    patients = sorted({h.patient_id for h in found if h.patient_id})
    return {
        **pacs_fields(settings, method),
        "our_aet": None if method == "dicomweb" else settings.our_calling_aet,
        "protocol": "qido" if method == "dicomweb" else "c-find",
        "path": "studies" if method == "dicomweb" else None,
        "query": {"QueryRetrieveLevel": "STUDY", **keys},
        "patient_id": patients[0] if len(patients) == 1 else None,
        "patient_ids": patients if len(patients) > 1 else None,
        "study_uids": sorted(h.study_uid for h in found) or None,
    }


def job_query(
    store: Store,
    settings: RetrieverSettings,
    method: str,
    keys: dict[str, str],
    found: list[StudyAnswer],
    job_id: str,
) -> None:
    fields = query_fields(settings, method, keys, found)
    audit.record_outcome(store, SERVICE, "query", "succeeded", job_id=job_id, **fields)


def asked_query(
    store: Store,
    settings: RetrieverSettings,
    request: Request,
    method: str,
    keys: dict[str, str],
    found: list[StudyAnswer],
) -> None:
    """A query over HTTP (GET /v1/studies): recorded with the caller, or the answer is not
    given (raises if the event cannot be written)."""
    fields = query_fields(settings, method, keys, found)
    audit.record(store, settings, SERVICE, request, "query", "succeeded", **fields)


def transfer(
    store: Store,
    settings: RetrieverSettings,
    method: str,
    hit: StudyAnswer,
    outcome: str,
    *,
    job_id: str,
    manifest: StudyManifest | None = None,
    error: str | None = None,
) -> None:
    """A study's transfer started, succeeded or failed (atna: 110102 / 110104)."""
    facts = audit.study_facts([manifest]) if manifest is not None else {}
    audit.record_outcome(
        store,
        SERVICE,
        "retrieve",
        outcome,
        job_id=job_id,
        method=method,
        **pacs_fields(settings, method),
        **{"patient_id": hit.patient_id, "study_uids": [hit.study_uid], **facts},
        accession_numbers=[hit.accession_number] if hit.accession_number else None,
        error=error,
    )
