"""The staff page at `/` and the few JSON endpoints only it needs.

The page (HTML, CSS, plain JavaScript; no build step) is served without a token: it holds no
data. Everything it shows comes from `/v1/...` calls that need the bearer token like any API
call: entered once on the page (kept in sessionStorage), or put on every request by the
hospital's reverse proxy, which also names the staff member in `DICOMISO_USER_HEADER`. That
name is trusted only on requests that carried the valid token, and goes into the audit events.
With DICOMISO_OIDC_CLIENT_ID the page offers "Sign in" with the hospital's identity provider
instead (signin.py): a session cookie, sent with `X-Requested-With: dicom-iso`, and the page
shows only what the roles allow.
The page's URLs hold job ids only; patient data travels in request and response bodies.
"""

from __future__ import annotations

import html
import json
import logging
import re
import string
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from dicomiso_client import ForwarderClient, RetrieverClient
from dicomiso_common import audit as audit_trail
from dicomiso_common.dicom import validate_accession
from dicomiso_common.errors import (
    PROBLEM_RESPONSES,
    DicomisoError,
    InvalidInput,
    NotFound,
)
from dicomiso_common.jobs import Jobs, validate_job_id
from dicomiso_common.manifests import load_accession_index, load_manifest
from dicomiso_common.since import parse_since
from dicomiso_common.store import Store

from . import mail, signin
from .handout import handout_router
from .i18n import LANGS, NAMES, Lang, lang_of, negotiate, t
from .i18n.page import HTML as HTML_TEXTS
from .i18n.page import SCRIPT as SCRIPT_TEXTS
from .packaging import Packaging
from .settings import PackagerSettings

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
# The tab's icon: a disc, inline (no binary file in the repository); browsers ask for
# /favicon.ico whatever the page links, so both names answer.
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<circle cx="16" cy="16" r="15" fill="#0b5cad"/>'
    '<circle cx="16" cy="16" r="4" fill="#fff"/></svg>'
)
MAX_ACCESSIONS = 50
LANG_COOKIE = "dicomiso-lang"  # the switch's choice: a language tag, nothing of anyone
# A deliberately plain address check (no quoted local parts, no IP literals): the value goes
# into an SMTP envelope, so anything exotic is refused rather than interpreted.
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}"
    r"(\.[A-Za-z0-9-]{1,63})+"
)
# Everything the page loads is its own; data is rendered with textContent, never as markup.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def check_email(value: str) -> str:
    """Return the trimmed address, or raise InvalidInput (the reason never repeats it)."""
    email = value.strip()
    if not _EMAIL.fullmatch(email) or len(email) > 254:
        raise InvalidInput("email is not a plain address like name@example.org")
    return email


# -- the page ----------------------------------------------------------------------------------


def wants_html(request: Request) -> bool:
    """A browser navigating (Accept: text/html), not a script or API client."""
    return "text/html" in request.headers.get("accept", "")


def page_lang(request: Request | None) -> Lang:
    """The page's language: ?lang= (the switch), else the cookie it set, else the browser's
    Accept-Language; English when none of them names one we have."""
    if request is None:
        return "en"
    return (
        lang_of(request.query_params.get("lang"))
        or lang_of(request.cookies.get(LANG_COOKIE))
        or negotiate(request.headers.get("accept-language"))
    )


def _switch(lang: Lang) -> str:
    """Links to the page in each language; the current one marked for screen readers."""
    links = []
    for other in LANGS:
        current = ' aria-current="true"' if other == lang else ""
        links.append(
            f'<a href="/?lang={other}" lang="{other}" hreflang="{other}" '
            f'data-lang="{other}"{current}>{html.escape(NAMES[other])}</a>'
        )
    return " | ".join(links)


def page(
    settings: PackagerSettings, prefill: str = "", request: Request | None = None
) -> HTMLResponse:
    """The staff page in its language; `prefill` (the legacy URL's numbers) goes into the
    form, escaped; the JavaScript's texts ride along as a JSON data block (never run)."""
    lang = page_lang(request)
    template = string.Template((HERE / "templates" / "index.html").read_text("utf-8"))
    texts = {k: html.escape(v[lang]) for k, v in HTML_TEXTS.items()}
    script = json.dumps({k: v[lang] for k, v in SCRIPT_TEXTS.items()}, ensure_ascii=False)
    body = template.substitute(
        lang=lang,
        switch=_switch(lang),
        messages=re.sub("[<>&]", lambda m: f"\\u{ord(m.group(0)):04x}", script),
        institution=html.escape(settings.institution_name),
        prefill=html.escape(prefill.replace(",", "\n")),
        signin_mode="oidc" if signin.enabled(settings) else "token",
        **texts,
    )
    response = HTMLResponse(body, headers={**SECURITY_HEADERS, "Content-Language": lang})
    if request is not None and lang_of(request.query_params.get("lang")):
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict")
    return response


def page_router(settings: PackagerSettings) -> APIRouter:
    """`/` and its static files: public, they hold no data."""
    router = APIRouter(tags=["page"])

    @router.get("/", response_class=HTMLResponse, summary="The staff page")
    def index(request: Request) -> HTMLResponse:
        return page(settings, request=request)

    @router.get("/favicon.ico", include_in_schema=False)
    @router.get("/favicon.svg", include_in_schema=False)
    def favicon() -> Response:
        return Response(
            FAVICON,
            media_type="image/svg+xml",
            headers={"Cache-Control": "max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in STATIC:
            raise NotFound("no such file")
        return FileResponse(
            HERE / "static" / name,
            media_type=STATIC[name],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    return router


# -- who asked: the audit trail ----------------------------------------------------------------


def user_of(request: Request, settings: PackagerSettings) -> str:
    """The staff member: the proxy's header if configured and given, else how we were called.

    Only ever called behind the bearer guard, so the header came with the valid token.
    """
    return audit_trail.requester(request, settings)


def audit(
    store: Store,
    settings: PackagerSettings,
    request: Request,
    action: str,
    outcome: str = "requested",
    **fields: Any,
) -> None:
    """Write one event to audit/{yyyy}/{mm}/{dd}/{id}.json (the key names no one); raises
    if it cannot be written, so the action does not happen unrecorded."""
    audit_trail.record(store, settings, "packager", request, action, outcome, **fields)


# -- the JSON endpoints of the page ------------------------------------------------------------


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accession_numbers: list[Any] = Field(min_length=1, max_length=MAX_ACCESSIONS)


class ForwardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accession_numbers: list[Any] = Field(min_length=1, max_length=MAX_ACCESSIONS)
    destination: str = Field(min_length=1, max_length=64)


def _accessions(values: list[Any], lang: Lang = "en") -> list[str]:
    """Validate each number; the reason says which one by position (never by its value)."""
    checked = []
    for i, value in enumerate(values, 1):
        try:
            checked.append(validate_accession(value))
        except InvalidInput as exc:
            where = t(lang, "srv_nth_number", n=i, count=len(values)) if len(values) > 1 else ""
            raise InvalidInput(f"{where}{_clerk_reason(str(exc), lang)}") from exc
    return list(dict.fromkeys(checked))


_LONG = re.compile(r"accession number is (\d+) characters long")


def _clerk_reason(reason: str, lang: Lang) -> str:
    """validate_accession's reason (for IT, in English) as a clerk reads it, with what to
    do; a reason not known here is passed on as it is."""
    if long := _LONG.match(reason):
        return t(lang, "srv_bad_long", length=long.group(1))
    if "wildcard" in reason:
        return t(lang, "srv_bad_wildcard")
    if "only letters, digits" in reason or "backslash" in reason or "control" in reason:
        return t(lang, "srv_bad_chars")
    return reason


def unknown_reason(lookup: Any, accessions: list[str], lang: Lang = "en") -> str:
    """What a clerk reads when numbers are not found: which ones, and what to do."""
    missing = []
    for accession in accessions:
        try:
            lookup.resolve([accession])
        except NotFound:
            missing.append(accession)
    if len(missing) == 1:
        return t(lang, "srv_unknown_one", number=missing[0])
    listed = ", ".join(missing) if missing else ", ".join(accessions)
    return t(lang, "srv_unknown_many", numbers=listed)


def studies_in_bucket(store: Store, accession: str) -> dict[str, Any] | None:
    """The accession's studies and patient details if they were retrieved before, else None."""
    try:
        known = load_accession_index(store, accession)
        studies, patient = [], {}
        for uid in known.study_uids:
            manifest = load_manifest(store, uid)
            modalities = sorted({s.modality or "" for s in manifest.series.values()} - {""})
            patient = {"birth_date": manifest.patient.birth_date, "sex": manifest.patient.sex}
            studies.append(
                {
                    "date": manifest.study.date,
                    "description": manifest.study.description,
                    "modalities": modalities,
                    "instances": manifest.instance_count,
                }
            )
    except DicomisoError:
        return None
    return {"studies": studies, **patient}


def studies_in_pacs(settings: PackagerSettings, accession: str) -> dict[str, Any] | None:
    """What the PACS says of the accession's studies: a C-FIND through the retriever, nothing
    is moved before the clerk confirms. None when the PACS cannot be asked just now."""
    try:
        with RetrieverClient(settings.retriever_url, settings.outgoing_token()) as retriever:
            found = retriever.studies(accession)
    except DicomisoError as exc:
        log.warning("study details not available from the PACS: %s", type(exc).__name__)
        return None
    first = found[0] if found else {}
    return {
        "studies": [
            {k: f.get(k) for k in ("date", "description", "modalities", "instances")} for f in found
        ],
        "birth_date": first.get("patient_birth_date"),
        "sex": first.get("patient_sex"),
    }


def identity(
    store: Store, settings: PackagerSettings, accession: str, ask_pacs: bool
) -> dict[str, Any]:
    """Birth date, sex and studies for the identity check: the bucket if retrieved before,
    else the PACS (the HIS gives name and patient ID only; a refused request asks no PACS)."""
    known = studies_in_bucket(store, accession)
    if known is None and ask_pacs:
        known = studies_in_pacs(settings, accession)
    return known or {"studies": None, "birth_date": None, "sex": None}


def make_web_router(
    jobs: Jobs, packaging: Packaging, settings: PackagerSettings, store: Store, guard: Any
) -> APIRouter:
    router = APIRouter(
        prefix="/v1", dependencies=[Depends(guard)], tags=["page"], responses=PROBLEM_RESPONSES
    )

    def forwarder() -> ForwarderClient:
        return ForwarderClient(settings.forwarder_url, settings.outgoing_token())

    @router.get("/session", summary="Who is signed in and what this packager offers")
    def session(request: Request) -> dict[str, Any]:
        return {
            "user": user_of(request, settings),
            "roles": sorted(getattr(request.state.principal, "roles", ())),
            "institution": settings.institution_name,
            "mail": mail.mail_enabled(settings),
            "default_profile": settings.default_profile,
            "link_ttl": settings.link_ttl,
        }

    clerk = [Depends(guard.role("clerk"))]  # check a patient
    sender = [Depends(guard.role("sender"))]  # send to a PACS
    auditor = [Depends(guard.role("auditor"))]  # read the audit trail

    @router.post(
        "/previews",
        dependencies=clerk,
        summary="Whom accession numbers belong to; nothing is retrieved",
    )
    def preview(body: PreviewRequest, request: Request) -> dict[str, Any]:
        lang = negotiate(request.headers.get("accept-language"))
        accessions = _accessions(body.accession_numbers, lang)
        audit(store, settings, request, "preview", accession_numbers=accessions)
        with packaging.lookup() as lookup:
            try:
                resolved = lookup.resolve(accessions)
            except NotFound as exc:
                audit(
                    store, settings, request, "preview", "not_found", accession_numbers=accessions
                )
                raise NotFound(unknown_reason(lookup, accessions, lang)) from exc
        # Whom the clerk looked up: the PatientIDs go into the event body (atna: Query).
        audit(
            store,
            settings,
            request,
            "preview",
            "succeeded",
            accession_numbers=accessions,
            patient_ids=sorted({a.patient_id for a in resolved.accessions if a.patient_id}),
        )
        with ThreadPoolExecutor(4) as pool:
            details = list(
                pool.map(
                    lambda a: identity(store, settings, a.accession_number, resolved.same_patient),
                    resolved.accessions,
                )
            )
        rows = [
            {
                "accession_number": a.accession_number,
                "patient_id": a.patient_id,
                "patient_name": a.patient_name.display,
                "source": a.source,
                **more,
            }
            for a, more in zip(resolved.accessions, details, strict=True)
        ]
        patients = len({a.patient_id.strip().casefold() for a in resolved.accessions})
        reason = None if resolved.same_patient else t(lang, "srv_two_patients", patients=patients)
        return {
            "accessions": rows,
            "same_patient": resolved.same_patient,
            "patients": patients,
            "reason": reason,
        }

    @router.get(
        "/peers",
        dependencies=sender,
        summary="PACS peers the forwarder can send to (and whether they answer)",
    )
    def peers() -> Any:
        with forwarder() as client:
            return client.json("GET", "/v1/peers")

    @router.post(
        "/forwards",
        status_code=202,
        dependencies=sender,
        summary="Send the studies to a configured peer",
    )
    def forward(body: ForwardRequest, request: Request) -> dict[str, Any]:
        accessions = _accessions(body.accession_numbers)
        with forwarder() as client:
            view = client.start({"accession_numbers": accessions, "destination": body.destination})
        audit(
            store,
            settings,
            request,
            "forward",
            job_id=view.id,
            accession_numbers=accessions,
            destination=body.destination,
        )
        return {"id": view.id, "state": view.state}

    @router.get("/audit", dependencies=auditor, summary="Audit events since a time, oldest first")
    def audit_events(
        since: str = Query(
            max_length=64,
            description=(
                "A duration back from now (90s, 30m, 1h, 2d, 1w) or an ISO date / date-time"
            ),
        ),
        limit: int = Query(1000, ge=1, le=audit_trail.MAX_EVENTS),
    ) -> dict[str, Any]:
        start = parse_since(since)
        events, truncated = audit_trail.events_since(store, start, limit=limit)
        return {"since": start.isoformat(), "events": events, "truncated": truncated}

    @router.get("/forwards/{job_id}", dependencies=sender, summary="State and counts of a forward")
    def forward_status(job_id: str) -> dict[str, Any]:
        with forwarder() as client:
            return client.status(validate_job_id(job_id)).model_dump()

    return router


def include(
    app: FastAPI,
    jobs: Jobs,
    packaging: Packaging,
    settings: PackagerSettings,
    store: Store,
    guard: Any,
) -> None:
    """Add the page and its endpoints to the packager app."""
    app.include_router(page_router(settings))
    app.include_router(make_web_router(jobs, packaging, settings, store, guard))
    app.include_router(handout_router(jobs, settings, guard))
