"""HTTP API of the retriever: start a retrieval, read its state."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from dicomiso_common.dicom import validate_accession, validate_uid
from dicomiso_common.errors import PROBLEM_RESPONSES, InvalidInput
from dicomiso_common.jobs import JobAccepted, Jobs, JobStatus, Wait, accepted, validate_job_id
from dicomiso_common.store import Store

from . import audited, dicomweb, query
from .settings import RetrieverSettings

MAX_KEYS = 50


class RetrievalRequest(BaseModel):
    """Exactly one of `accession_numbers` or `study_uids`."""

    model_config = ConfigDict(extra="forbid")

    accession_numbers: list[Any] = Field(default_factory=list, max_length=MAX_KEYS)
    study_uids: list[Any] = Field(default_factory=list, max_length=MAX_KEYS)
    method: Literal["move", "get", "dicomweb"] | None = None


class RetrievalStatus(JobStatus):
    """State, counts (expected, received, failed, warnings, reused) and the result."""


def canonical(body: RetrievalRequest, default_method: str) -> dict[str, Any]:
    """Validate every key and return the request in the form that names its job."""
    if bool(body.accession_numbers) == bool(body.study_uids):
        raise InvalidInput("give either accession_numbers or study_uids (one non-empty list)")
    accessions = sorted({validate_accession(a) for a in body.accession_numbers})
    studies = sorted({validate_uid(u, "StudyInstanceUID") for u in body.study_uids})
    return {
        "accession_numbers": accessions,
        "study_uids": studies,
        "method": body.method or default_method,
    }


def make_router(
    jobs: Jobs, default_method: str, guard: Any, settings: RetrieverSettings, store: Store
) -> APIRouter:
    router = APIRouter(
        prefix="/v1",
        # what the packager (a disc) and the forwarder (a send) ask for, with the service token
        dependencies=[Depends(guard.role("clerk", "sender"))],
        tags=["retrievals"],
        responses=PROBLEM_RESPONSES,
    )

    @router.post(
        "/retrievals",
        status_code=202,
        response_model=JobAccepted,
        summary="Retrieve studies by accession number or Study Instance UID",
    )
    def create(body: RetrievalRequest, request: Request, response: Response) -> JobAccepted:
        record = jobs.submit(canonical(body, default_method))
        return accepted(record, request, response, "retrieval_status")

    @router.get(
        "/studies",
        summary="What the PACS holds for an accession number (C-FIND, or QIDO-RS when the "
        "default method is dicomweb; nothing is moved)",
    )
    def studies(
        request: Request, accession_number: str = Query(max_length=64)
    ) -> list[dict[str, Any]]:
        method = settings.retrieve_method
        finder = dicomweb if method == "dicomweb" else query
        accession = validate_accession(accession_number)
        found = finder.find_by_accession(settings, accession)
        keys = {"AccessionNumber": accession}
        audited.asked_query(store, settings, request, method, keys, found)
        return [
            {
                "study_uid": a.study_uid,
                "date": a.study_date,
                "description": a.study_description,
                "modalities": a.modalities,
                "instances": a.instances,
                "patient_birth_date": a.patient_birth_date,
                "patient_sex": a.patient_sex,
            }
            for a in found
        ]

    @router.get(
        "/retrievals/{job_id}",
        response_model=RetrievalStatus,
        name="retrieval_status",
        summary="State, counts and result of a retrieval",
    )
    def status(job_id: str, wait: Wait = 0.0) -> RetrievalStatus:
        return RetrievalStatus.of(jobs.get(validate_job_id(job_id), wait=wait))

    return router
