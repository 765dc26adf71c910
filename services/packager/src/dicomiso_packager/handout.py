"""The patient's hand-out: the link as a QR code, its expiry, what it gives, who to ask.

The staff page shows it after a disc is made and prints it with its print stylesheet (only
the hand-out is printed). The words are the e-mail's too (`words`, used by `mail.compose`).
It never holds a diagnosis, a study description or the patient's name: only what the link
gives and the institution's name, address and telephone. Reading it writes nothing: the link
is the one issued (and audited) when the package was built or re-linked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import segno
from fastapi import APIRouter, Depends, Query, Request

from dicomiso_common.errors import PROBLEM_RESPONSES, Conflict
from dicomiso_common.jobs import Jobs, validate_job_id
from dicomiso_common.models import PackageJobResult

from .i18n import LANGS, Lang, lang_of, negotiate, t, when
from .settings import PackagerSettings

QUIET_ZONE = 4  # modules of white around the code (ISO/IEC 18004 asks for 4)


def qr_path(link: str) -> dict[str, Any]:
    """The QR code of `link` as one SVG path (one unit square per dark module, quiet zone
    included), so the page draws it with setAttribute only, never parsing markup."""
    code = segno.make(link, error="m", micro=False)
    rows = list(code.matrix_iter(scale=1, border=QUIET_ZONE))
    squares = [
        f"M{x} {y}h1v1h-1z" for y, row in enumerate(rows) for x, dark in enumerate(row) if dark
    ]
    return {"size": len(rows), "path": "".join(squares), "version": code.version}


def contact(settings: PackagerSettings, lang: Lang) -> list[str]:
    """The institution's lines: name, address, telephone, and the free contact text."""
    lines = [settings.institution_name, settings.institution_address.strip()]
    if settings.institution_phone.strip():
        lines.append(t(lang, "contact_phone", phone=settings.institution_phone.strip()))
    lines.append(settings.institution_contact.strip())
    return [line for line in lines if line]


def words(settings: PackagerSettings, lang: Lang, expires_at: datetime) -> dict[str, Any]:
    """The hand-out's texts (and the e-mail's): title, what the link gives, two steps, the
    expiry, privacy, contact."""
    org = settings.institution_name
    return {
        "title": t(lang, "handout_title"),
        "intro": t(lang, "handout_intro", org=org),
        "gives": t(lang, "handout_gives"),
        "steps": [t(lang, "handout_step1"), t(lang, "handout_step2")],
        "expiry": t(
            lang, "handout_expiry", org=org, when=when(expires_at, lang, settings.timezone)
        ),
        "privacy": t(lang, "handout_privacy"),
        "contact": contact(settings, lang),
        "link_label": t(lang, "handout_link"),
    }


def handout(settings: PackagerSettings, lang: Lang, links: dict[str, Any]) -> dict[str, Any]:
    """Everything the page prints: the words, the link (the online page when there is one,
    else the download) and its QR code."""
    link = links.get("view_url") or links["download_url"]
    expires_at = datetime.fromisoformat(links["expires_at"])
    return {"lang": lang, "link": link, "qr": qr_path(link), **words(settings, lang, expires_at)}


def handout_router(jobs: Jobs, settings: PackagerSettings, guard: Any) -> APIRouter:
    router = APIRouter(
        prefix="/v1",
        dependencies=[Depends(guard.role("clerk"))],
        tags=["page"],
        responses=PROBLEM_RESPONSES,
    )

    @router.get("/packages/{job_id}/handout", summary="The patient's hand-out of a package")
    def get_handout(
        job_id: str,
        request: Request,
        lang: str | None = Query(None, max_length=16, description=f"one of {', '.join(LANGS)}"),
    ) -> dict[str, Any]:
        chosen = lang_of(lang) or negotiate(request.headers.get("accept-language"))
        record = jobs.get(validate_job_id(job_id))
        if record.state != "succeeded":
            raise Conflict(f"package {record.id} is {record.state}, not ready")
        r = PackageJobResult.model_validate(record.result)
        if not r.download_url or not r.expires_at:
            raise Conflict(f"package {record.id} has no link yet")
        links = {"download_url": r.download_url, "view_url": r.view_url}
        return handout(settings, chosen, {**links, "expires_at": r.expires_at})

    return router
