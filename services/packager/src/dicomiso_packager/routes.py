"""HTTP API of the packager: order a disc, follow it, download it; the legacy /mkiso entry."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from dicomiso_common.dicom import validate_accession
from dicomiso_common.errors import PROBLEM_RESPONSES, Conflict, InvalidInput
from dicomiso_common.jobs import JobAccepted, JobRecord, Jobs, JobStatus, accepted, validate_job_id
from dicomiso_common.models import PackageJobRequest
from dicomiso_common.store import MAX_LINK_TTL, Store

from .packaging import Packaging, one_patient, package_key, package_request, package_result
from .settings import PackagerSettings, Profile
from .web import audit, check_email, page, wants_html

MAX_ACCESSIONS = 50


class PackageRequest(BaseModel):
    """What to put on the disc and how to deliver it."""

    model_config = ConfigDict(extra="forbid")

    accession_numbers: list[Any] = Field(min_length=1, max_length=MAX_ACCESSIONS)
    email: str | None = Field(default=None, max_length=254)
    profile: Profile | None = None
    format: Literal["iso", "zip"] = "iso"
    expires_in: int | None = Field(default=None, ge=60, le=MAX_LINK_TTL)


class EmailState(BaseModel):
    state: str
    error: str | None = None
    sent_at: str | None = None


class PackageStatus(JobStatus):
    """Job state and progress; when done, the link and what it points at."""

    download_url: str | None = None
    expires_at: str | None = None
    filename: str | None = None
    size: int | None = None
    sha256: str | None = None
    email: EmailState | None = None

    @classmethod
    def of_package(cls, record: JobRecord) -> PackageStatus:
        status = cls.of(record)
        if record.state == "succeeded":
            r = package_result(record)
            status.download_url, status.expires_at = r.download_url, r.expires_at
            status.filename, status.size, status.sha256 = r.filename, r.size, r.sha256
            status.email = EmailState(**r.email.model_dump()) if r.email else None
        return status


def canonical(body: PackageRequest, settings: PackagerSettings) -> PackageJobRequest:
    """Validate every value; the result names the job (same request -> same package).

    The accession numbers keep the order given (it names the file), duplicates dropped.
    """
    accessions = list(dict.fromkeys(validate_accession(a) for a in body.accession_numbers))
    email = check_email(body.email) if body.email and body.email.strip() else None
    return PackageJobRequest(
        accession_numbers=tuple(accessions),
        email=email,
        profile=body.profile or settings.default_profile,
        format=body.format,
        expires_in=body.expires_in,
    )


def make_router(
    jobs: Jobs, packaging: Packaging, settings: PackagerSettings, store: Store, guard: Any
) -> APIRouter:
    # The guard is per route: /mkiso shows the staff page to a browser without a token.
    guarded = [Depends(guard)]
    router = APIRouter(tags=["packages"], responses=PROBLEM_RESPONSES)

    def submit(body: PackageRequest) -> JobRecord:
        request = canonical(body, settings)
        # Who the accessions belong to is checked before anything is retrieved: a mixed
        # request is a 409 here, and no job, retrieval or C-MOVE starts.
        with packaging.lookup() as lookup:
            one_patient(lookup.resolve(list(request.accession_numbers)))
        return jobs.submit(request.to_json())

    def audited(request: Request, record: JobRecord) -> None:
        wanted = package_request(record)
        audit(
            store,
            settings,
            request,
            "package",
            job_id=record.id,
            state=record.state,
            accession_numbers=list(wanted.accession_numbers),
            profile=wanted.profile,
            format=wanted.format,
        )

    def link_issued(request: Request, record: JobRecord, via: str) -> None:
        audit(
            store,
            settings,
            request,
            "link",
            "issued",
            job_id=record.id,
            via=via,
            accession_numbers=list(package_request(record).accession_numbers),
        )

    @router.post(
        "/v1/packages",
        status_code=202,
        response_model=JobAccepted,
        dependencies=guarded,
        responses={
            409: PROBLEM_RESPONSES[422]
            | {"description": "The accession numbers belong to more than one patient"}
        },
        summary="Make a disc image of one patient's studies, by accession number",
    )
    def create(body: PackageRequest, request: Request, response: Response) -> JobAccepted:
        record = submit(body)
        audited(request, record)
        return accepted(record, request, response, "package_status")

    @router.get(
        "/v1/packages/{job_id}",
        response_model=PackageStatus,
        name="package_status",
        dependencies=guarded,
        summary="State and progress of a package; the link when it is done",
    )
    def status(job_id: str, request: Request) -> PackageStatus:
        record = jobs.get(validate_job_id(job_id))
        status = PackageStatus.of_package(record)
        if status.download_url:  # showing the link is handing it out
            link_issued(request, record, "status")
        return status

    @router.get(
        "/v1/packages/{job_id}/download",
        status_code=307,
        response_class=RedirectResponse,
        name="package_download",
        dependencies=guarded,
        summary="Redirect to a freshly signed link to the image",
    )
    def download(job_id: str, request: Request) -> RedirectResponse:
        record = jobs.get(validate_job_id(job_id))
        if record.state != "succeeded":
            raise Conflict(f"package {record.id} is {record.state}, not ready for download")
        link_issued(request, record, "download")
        ttl = package_request(record).expires_in or settings.link_ttl
        return RedirectResponse(store.presign_get(package_key(record), ttl), status_code=307)

    @router.get(
        "/mkiso",
        status_code=303,
        response_class=RedirectResponse,
        summary="Legacy entry of mkiso.php / mkiso_multiple.php bookmarks",
    )
    def legacy(
        request: Request, accession_number: str = Query(max_length=MAX_ACCESSIONS * 17)
    ) -> Response:
        """A browser gets the staff page with the numbers filled in (nothing starts before
        the clerk confirms the patient). A script with the token: `?accession_number=A,B`
        starts or finds the package, then 303 to the download once ready, else its status."""
        if wants_html(request):
            return page(settings, accession_number)
        guard(request)
        accessions = [a.strip(" ") for a in accession_number.split(",") if a.strip(" ")]
        if not accessions:
            raise InvalidInput("accession_number is empty")
        record = submit(PackageRequest(accession_numbers=accessions))
        audited(request, record)
        route = "package_download" if record.state == "succeeded" else "package_status"
        return RedirectResponse(str(request.url_for(route, job_id=record.id)), status_code=303)

    return router
