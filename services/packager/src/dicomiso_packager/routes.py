"""HTTP API of the packager: every /v1/packages route (order a disc, follow it, download it,
list the newest, re-sign or mail a link) and the legacy /mkiso entry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from dicomiso_common import audit as audit_trail
from dicomiso_common.dicom import validate_accession
from dicomiso_common.errors import (
    PROBLEM_RESPONSES,
    Conflict,
    DicomisoError,
    InvalidInput,
    ObjectMissing,
)
from dicomiso_common.jobs import (
    JobAccepted,
    JobRecord,
    Jobs,
    JobStatus,
    Wait,
    accepted,
    records_prefix,
    validate_job_id,
)
from dicomiso_common.models import (
    DiscImage,
    DiscPlan,
    EmailOutcome,
    PackageImage,
    PackageJobRequest,
)
from dicomiso_common.store import MAX_LINK_TTL, Store

from . import mail
from .i18n import Lang
from .packaging import Packaging, one_patient, package_key, package_request, package_result
from .plan import SeriesTooLarge, TooManyDiscs
from .settings import PackagerSettings, Profile
from .web import audit, check_email, page, wants_html

MAX_ACCESSIONS = 50
RECENT = 20
RECENT_SCAN = 100  # newest job records read (by LastModified) to show the RECENT newest


class PackageRequest(BaseModel):
    """What to put on the disc and how to deliver it."""

    model_config = ConfigDict(extra="forbid")

    accession_numbers: list[Any] = Field(min_length=1, max_length=MAX_ACCESSIONS)
    email: str | None = Field(default=None, max_length=254)
    profile: Profile | None = None
    format: Literal["iso", "zip"] = "iso"
    expires_in: int | None = Field(default=None, ge=60, le=MAX_LINK_TTL)


class EmailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=254)
    language: Lang | None = None  # the message's language; default DICOMISO_LANGUAGE


class PackageStatus(JobStatus):
    """Job state and progress; when done, the links and what they point at."""

    download_url: str | None = None
    view_url: str | None = None  # the online page
    downloads: list[PackageImage] | None = None  # both images, with signed urls
    expires_at: str | None = None
    filename: str | None = None
    size: int | None = None
    sha256: str | None = None
    email: EmailOutcome | None = None
    # How the studies are spread over media ("3 DVDs"), shown once planned, before the build.
    plan: DiscPlan | None = None
    # Every disc, with its signed link (one entry when one disc holds it all); the fields
    # above describe disc 1.
    discs: list[DiscImage] | None = None

    @classmethod
    def of_package(cls, record: JobRecord) -> PackageStatus:
        status = cls.of(record)
        status.plan = package_result(record).plan
        if record.state == "succeeded":
            r = package_result(record)
            status.discs = list(r.discs or ())
            status.download_url, status.expires_at = r.download_url, r.expires_at
            status.view_url = r.view_url
            status.downloads = list(r.downloads or ())
            status.filename, status.size, status.sha256 = r.filename, r.size, r.sha256
            status.email = r.email
        return status


def _patient_and_studies(record: JobRecord) -> dict[str, Any]:
    """The PatientID and Study UIDs of a built package, for its audit events (atna.render)."""
    result = package_result(record)
    return {"patient_id": result.patient_id, "study_uids": list(result.study_uids or ()) or None}


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


class PackageSummary(BaseModel):
    """One row of the recent-packages list."""

    id: str
    state: str
    phase: str | None
    error: str | None
    accession_numbers: list[str]
    format: str
    profile: str
    created_at: str
    updated_at: str
    filename: str | None
    size: int | None
    link_expires_at: str | None
    deleted_after: str
    email: str | None
    patient_name: str | None = None  # display form, as the HIS gave it
    discs: int | None = None  # how many discs (planned, or made)


class FreshLink(BaseModel):
    """Freshly signed links; with the online page, the page was re-signed with them."""

    download_url: str
    view_url: str | None = None
    downloads: list[PackageImage] = Field(default_factory=list)
    discs: list[DiscImage] = Field(default_factory=list)
    expires_at: str
    filename: str | None
    size: int | None


def package_summary(record: JobRecord, settings: PackagerSettings) -> PackageSummary:
    """One row of the recent-packages list (the record's own data, nothing re-signed)."""
    wanted, r = package_request(record), package_result(record)
    created = datetime.fromtimestamp(record.created_at, UTC)
    return PackageSummary(
        id=record.id,
        state=record.state,
        phase=record.phase,
        error=record.error,
        accession_numbers=list(wanted.accession_numbers),
        format=wanted.format,
        profile=wanted.profile,
        created_at=created.isoformat(),
        updated_at=datetime.fromtimestamp(record.updated_at, UTC).isoformat(),
        filename=r.filename,
        size=r.size,
        link_expires_at=r.expires_at,
        deleted_after=(created + timedelta(days=settings.package_expiry_days)).isoformat(),
        email=r.email.state if r.email else None,
        patient_name=r.patient_name,
        discs=len(r.discs) if r.discs else len(r.plan.discs) if r.plan else None,
    )


def recent_packages(store: Store, settings: PackagerSettings) -> list[JobRecord]:
    listed = sorted(store.list(records_prefix("package")), key=lambda o: o.last_modified)
    keys = [o.key for o in reversed(listed[-RECENT_SCAN:])]  # the newest, by the bucket's clock

    def read(key: str) -> JobRecord | None:
        try:
            return JobRecord.model_validate(store.get_json(key)[0])
        except (DicomisoError, ValueError):
            return None

    with ThreadPoolExecutor(8) as pool:
        records = [r for r in pool.map(read, keys) if r is not None]
    return sorted(records, key=lambda r: r.updated_at, reverse=True)[:RECENT]


def _done(jobs: Jobs, job_id: str) -> JobRecord:
    record = jobs.get(validate_job_id(job_id))
    if record.state != "succeeded":
        raise Conflict(f"package {record.id} is {record.state}, not ready")
    return record


def _still_stored(packaging: Packaging, record: JobRecord) -> JobRecord:
    """A link is signed only to an image that is still in the bucket (lifecycle expiry)."""
    if not packaging.is_current(record):
        raise ObjectMissing(
            f"package {record.id} has expired and was removed from the bucket; "
            "order it again (same accession numbers) to rebuild it"
        )
    return record


def _fresh_link(packaging: Packaging, record: JobRecord) -> FreshLink:
    return FreshLink.model_validate(packaging.fresh_links(record))


def make_router(
    jobs: Jobs, packaging: Packaging, settings: PackagerSettings, store: Store, guard: Any
) -> APIRouter:
    # The guard is per route: /mkiso shows the staff page to a browser without a token.
    # Every route here is the clerk's: make a disc, its status and link, e-mail it.
    guarded = [Depends(guard.role("clerk"))]
    router = APIRouter(tags=["packages"], responses=PROBLEM_RESPONSES)

    def submit(body: PackageRequest) -> JobRecord:
        request = canonical(body, settings)
        # Who the accessions belong to is checked before anything is retrieved: a mixed
        # request is a 409 here, and no job, retrieval or C-MOVE starts.
        with packaging.lookup() as lookup:
            one_patient(lookup.resolve(list(request.accession_numbers)))
        packaging.preflight(request)  # a series larger than the medium: 413 now, if known
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
            **_patient_and_studies(record),
        )

    @router.post(
        "/v1/packages",
        status_code=202,
        response_model=JobAccepted,
        dependencies=guarded,
        responses={
            409: PROBLEM_RESPONSES[422]
            | {"description": "The accession numbers belong to more than one patient"},
            413: PROBLEM_RESPONSES[422]
            | {
                "description": "A series of studies already retrieved is larger than one "
                "medium of the profile (the job fails with the same reason otherwise)"
            },
        },
        summary="Make a disc image of one patient's studies, by accession number",
    )
    def create(body: PackageRequest, request: Request, response: Response) -> JobAccepted:
        try:
            record = submit(body)
        except (Conflict, SeriesTooLarge, TooManyDiscs) as exc:  # refused, and on the record
            audit(
                store,
                settings,
                request,
                "package",
                "refused",
                accession_numbers=list(canonical(body, settings).accession_numbers),
                reason=str(exc),
            )
            raise
        audited(request, record)
        return accepted(record, request, response, "package_status")

    @router.get(
        "/v1/packages/{job_id}",
        response_model=PackageStatus,
        name="package_status",
        dependencies=guarded,
        summary="State and progress of a package; the link when it is done",
    )
    def status(job_id: str, wait: Wait = 0.0) -> PackageStatus:
        record = jobs.get(validate_job_id(job_id), wait=wait)
        # Reading writes nothing: the links shown were issued (and audited) when the package
        # was built, or by "new link" / "e-mail again", which write their own events.
        return PackageStatus.of_package(record)

    @router.get(
        "/v1/packages/{job_id}/download",
        status_code=307,
        response_class=RedirectResponse,
        name="package_download",
        dependencies=guarded,
        summary="Redirect to a freshly signed link to the image",
    )
    def download(
        job_id: str,
        request: Request,
        disc: int = Query(1, ge=1, le=99, description="Which disc of a set (1 = the first)"),
    ) -> RedirectResponse:
        record = jobs.get(validate_job_id(job_id))
        if record.state != "succeeded":
            raise Conflict(f"package {record.id} is {record.state}, not ready for download")
        _still_stored(packaging, record)
        discs = package_result(record).discs or ()
        key = package_key(record) if disc == 1 else None
        for d in discs:
            key = d.key if d.number == disc else key
        if key is None:
            raise ObjectMissing(f"package {record.id} has {len(discs) or 1} disc(s), not {disc}")
        link_issued(request, record, "download")
        ttl = package_request(record).expires_in or settings.link_ttl
        return RedirectResponse(store.presign_get(key, ttl), status_code=307)

    @router.get(
        "/v1/packages",
        dependencies=guarded,
        summary="The newest packages (from the job records in the bucket)",
    )
    def recent() -> list[PackageSummary]:
        return [package_summary(r, settings) for r in recent_packages(store, settings)]

    @router.post(
        "/v1/packages/{job_id}/link",
        dependencies=guarded,
        summary="Freshly signed links to a finished package (its online page re-signed too)",
    )
    def link(job_id: str, request: Request) -> FreshLink:
        record = _still_stored(packaging, _done(jobs, job_id))
        link_issued(request, record, "page")
        return _fresh_link(packaging, record)

    @router.post(
        "/v1/packages/{job_id}/email",
        dependencies=guarded,
        summary="Mail a fresh link to the patient",
    )
    def email(job_id: str, body: EmailRequest, request: Request) -> dict[str, Any]:
        to = check_email(body.email)
        record = _still_stored(packaging, _done(jobs, job_id))
        if not mail.mail_enabled(settings):
            raise Conflict(mail.NOT_CONFIGURED)
        about: dict[str, Any] = {
            "job_id": record.id,
            "email": to,
            "accession_numbers": list(package_request(record).accession_numbers),
            **_patient_and_studies(record),
        }
        audit(store, settings, request, "email", **about)
        fresh = _fresh_link(packaging, record)
        msg = mail.compose(settings, to, fresh.model_dump(), body.language)
        try:
            mail.send(settings, msg)
        except DicomisoError as exc:
            audit_trail.record_outcome(
                store, "packager", "email", "failed", **about, error=str(exc)
            )
            raise
        audit_trail.record_outcome(store, "packager", "email", "sent", **about)
        return {
            "state": "sent",
            "sent_at": datetime.now(UTC).isoformat(),
            "expires_at": fresh.expires_at,
        }

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
            return page(settings, accession_number, request)
        guard.role("clerk")(request)
        accessions = [a.strip(" ") for a in accession_number.split(",") if a.strip(" ")]
        if not accessions:
            raise InvalidInput("accession_number is empty")
        if len(accessions) > MAX_ACCESSIONS:
            raise InvalidInput(f"at most {MAX_ACCESSIONS} accession numbers at a time")
        record = submit(PackageRequest(accession_numbers=accessions))
        audited(request, record)
        route = "package_download" if record.state == "succeeded" else "package_status"
        return RedirectResponse(str(request.url_for(route, job_id=record.id)), status_code=303)

    return router
