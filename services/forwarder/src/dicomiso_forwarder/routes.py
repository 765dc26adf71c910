"""HTTP API of the forwarder: start a forward, read its state, list the peers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from dicomiso_common import audit
from dicomiso_common.dicom import validate_accession, validate_uid
from dicomiso_common.errors import PROBLEM_RESPONSES, InvalidInput, ObjectMissing
from dicomiso_common.jobs import (
    JobAccepted,
    JobRecord,
    Jobs,
    JobStatus,
    Wait,
    accepted,
    validate_job_id,
)
from dicomiso_common.models import ForwardJobRequest, SendResult
from dicomiso_common.store import Store

from . import peers
from .forward import load_send_results, results_key
from .settings import DicomwebPeer, ForwarderSettings

MAX_KEYS = 50


class ForwardRequest(BaseModel):
    """Exactly one of `accession_numbers` or `study_uids`, and a configured peer's name."""

    model_config = ConfigDict(extra="forbid")

    accession_numbers: list[Any] = Field(default_factory=list, max_length=MAX_KEYS)
    study_uids: list[Any] = Field(default_factory=list, max_length=MAX_KEYS)
    destination: Any


class ForwardStatus(JobStatus):
    """State, counts, and with `?instances=true` each instance's result."""

    instances: dict[str, SendResult] | None = None


class PeerView(BaseModel):
    """A DICOM peer has `aet` and `max_associations`, a DICOMweb peer `url`."""

    name: str
    type: str = "dicom"
    aet: str | None = None
    url: str | None = None
    max_associations: int | None = None
    commitment: bool = False
    reachable: bool
    reason: str | None


def canonical(body: ForwardRequest, settings: ForwarderSettings) -> ForwardJobRequest:
    peers.resolve(settings, body.destination)
    if bool(body.accession_numbers) == bool(body.study_uids):
        raise InvalidInput("give either accession_numbers or study_uids (one non-empty list)")
    return ForwardJobRequest(
        accession_numbers=tuple(sorted({validate_accession(a) for a in body.accession_numbers})),
        study_uids=tuple(sorted({validate_uid(u, "StudyInstanceUID") for u in body.study_uids})),
        destination=body.destination,
    )


def _status(record: JobRecord, store: Store, with_instances: bool) -> ForwardStatus:
    status = ForwardStatus.of(record)
    if with_instances:
        try:
            status.instances = load_send_results(store, results_key(record.id))
        except ObjectMissing:
            status.instances = {}
    return status


def make_router(jobs: Jobs, settings: ForwarderSettings, store: Store, guard: Any) -> APIRouter:
    router = APIRouter(
        prefix="/v1",
        dependencies=[Depends(guard.role("sender"))],  # send to a PACS
        tags=["forwards"],
        responses=PROBLEM_RESPONSES,
    )

    @router.post(
        "/forwards",
        status_code=202,
        response_model=JobAccepted,
        summary="Send studies (by accession number or Study UID) to a configured peer",
    )
    def create(body: ForwardRequest, request: Request, response: Response) -> JobAccepted:
        wanted = canonical(body, settings)
        record = jobs.submit(wanted.to_json())
        audit.record(
            store,
            settings,
            "forwarder",
            request,
            "forward",
            job_id=record.id,
            state=record.state,
            destination=wanted.destination,
            accession_numbers=list(wanted.accession_numbers) or None,
            study_uids=list(wanted.study_uids) or None,
            **peers.audit_fields(settings, wanted.destination),
        )
        return accepted(record, request, response, "forward_status")

    @router.get(
        "/forwards/{job_id}",
        response_model=ForwardStatus,
        name="forward_status",
        summary="State and counts of a forward; per-instance results on request",
    )
    def status(job_id: str, instances: bool = False, wait: Wait = 0.0) -> ForwardStatus:
        return _status(jobs.get(validate_job_id(job_id), wait=wait), store, instances)

    @router.get(
        "/peers",
        response_model=list[PeerView],
        summary="Configured peers and whether each answers (C-ECHO, or a DICOMweb QIDO-RS)",
    )
    async def list_peers() -> list[PeerView]:
        views = []
        for name, peer in sorted(settings.peers.items()):
            if isinstance(peer, DicomwebPeer):
                reason = await run_in_threadpool(peers.probe, settings, peer)
                view = PeerView(
                    name=name, type=peer.type, url=peer.url, reachable=reason is None, reason=reason
                )
            else:
                reason = await run_in_threadpool(peers.echo, settings, peer)
                view = PeerView(
                    name=name,
                    aet=peer.aet,
                    max_associations=peer.max_associations,
                    commitment=peer.commitment,
                    reachable=reason is None,
                    reason=reason,
                )
            views.append(view)
        return views

    return router
