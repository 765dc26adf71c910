"""The online page: the disc's own viewer, served from the bucket, open on the package.

`packages/{id}/view.html` is the viewer bundle's one HTML file with the study JSON put into
its marker (version 1, README.md "The online page"): every instance of the package with a
presigned GET, the download links, the expiry, the institution's contact. No service of ours
answers the patient: the page, the instances and the images all come from the S3 endpoint
(DICOMISO_S3_PUBLIC_URL) under presigned URLs, and the page's fetches stay on that origin.

Every URL in the page is signed at the same moment with the same lifetime as the page's own
link, so the whole page expires together. Issuing a new link (staff page, e-mail again)
re-writes the page with fresh signatures (`publish`), from the keys kept in the package
manifest; a page opened from an older, still valid link then reads the fresh ones too.
URLs and keys hold the job id and DICOM UIDs only, never anything of the patient.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dicomiso_common.models import PackageContents
from dicomiso_common.store import Store

from . import viewer
from .i18n import t, when
from .settings import PackagerSettings, contact_line

MARKER = viewer.STUDY_MARKER
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'wasm-unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:; connect-src 'self'"
)
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def view_key(package_id: str) -> str:
    return f"packages/{package_id}/view.html"


@functools.lru_cache(maxsize=4)
def _template(path: Path, mtime_ns: int) -> str:
    del mtime_ns  # part of the cache key only: a rebuilt bundle is read again
    return path.read_text("utf-8")


def template() -> str:
    """The bundled viewer page (scripts/build-viewer); raises ViewerMissing without it."""
    entry = viewer.bundle_html()
    return _template(entry, entry.stat().st_mtime_ns)


# -- what the page shows ------------------------------------------------------------------------


def _number(value: Any) -> int | None:
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def _series_order(series: tuple[str, dict[str, Any]]) -> tuple[bool, int, str]:
    number = _number(series[1].get("number"))
    return (number is None, number or 0, series[0])


def studies_of(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page's studies with bucket keys where the URLs will go (kept in the package
    manifest, so that a new link can re-sign them). Studies by date, series by number,
    instances by number: the viewer opens the first series of the first study."""
    studies = []
    for m in sorted(manifests, key=lambda m: str((m.get("study") or {}).get("date") or "")):
        study = m.get("study") or {}
        by_series: dict[str, list[dict[str, Any]]] = {}
        for e in m.get("instances") or []:
            by_series.setdefault(str(e["series_uid"]), []).append(e)
        described: dict[str, Any] = m.get("series") or {}
        series = []
        for uid, attrs in sorted(
            ((u, described.get(u) or {}) for u in by_series), key=_series_order
        ):
            entries = sorted(
                by_series[uid],
                key=lambda e: (
                    _number(e.get("instance_number")) is None,
                    _number(e.get("instance_number")) or 0,
                    e["sop_uid"],
                ),
            )
            series.append(
                {
                    "series_uid": uid,
                    "modality": str(attrs.get("modality") or ""),
                    "description": str(attrs.get("description") or ""),
                    "number": _number(attrs.get("number")),
                    "instances": [
                        {
                            "key": e["key"],
                            "sop_uid": e["sop_uid"],
                            "number": _number(e.get("instance_number")),
                            "size": int(e["size"]),
                            # in a segment: the bytes at offset (a ranged fetch of `key`)
                            **({"offset": int(e["offset"])} if e.get("offset") is not None else {}),
                        }
                        for e in entries
                    ],
                }
            )
        date = str(study.get("date") or "")
        studies.append(
            {
                "study_uid": m["study_uid"],
                "date": date if re.fullmatch(r"\d{8}", date) else "",
                "description": str(study.get("description") or ""),
                "series": series,
            }
        )
    return studies


def signed(studies: list[dict[str, Any]], sign: Callable[[str], str]) -> list[dict[str, Any]]:
    """The same studies with each instance's key replaced by its signed URL (one signature
    per object: the instances of one segment share its URL, each with its own range)."""
    urls: dict[str, str] = {}

    def once(key: str) -> str:
        if key not in urls:
            urls[key] = sign(key)
        return urls[key]

    return [
        {
            **st,
            "series": [
                {
                    **se,
                    "instances": [
                        {"url": once(i["key"]), **{k: v for k, v in i.items() if k != "key"}}
                        for i in se["instances"]
                    ],
                }
                for se in st["series"]
            ],
        }
        for st in studies
    ]


def instructions(settings: PackagerSettings) -> list[str]:
    """Three lines for the patient (the viewer shows the expiry and the contact itself)."""
    lang = settings.language
    return [
        t(lang, "online_first"),
        t(lang, "online_keep"),
        t(lang, "online_expiry_note", org=settings.institution_name),
    ]


def document(
    settings: PackagerSettings,
    studies: list[dict[str, Any]],
    downloads: list[dict[str, str]],
    expires_at: datetime,
) -> dict[str, Any]:
    """The study JSON (version 1) the viewer reads from its marker."""
    lang = settings.language
    contact = contact_line(settings)
    return {
        "version": 1,
        "page": {
            "lang": lang,
            "title": t(lang, "online_title", org=settings.institution_name),
            "institution": settings.institution_name,
            "contact": contact,
            "expires_at": expires_at.isoformat(),
            # Said in the page's language and time zone (Babel), shown as given by the viewer.
            "expires_text": t(lang, "online_until", when=when(expires_at, lang, settings.timezone)),
            "contact_text": t(lang, "online_contact", contact=contact) if contact else "",
            "instructions": instructions(settings),
            "downloads": downloads,
        },
        "studies": studies,
    }


def inject(page: str, data: dict[str, Any]) -> str:
    """Put the JSON into the marker (`<`, `>` and `&` escaped, so no text can end the
    script element) and the page's CSP as a meta element right after the charset."""
    if page.count(MARKER) != 1:
        raise viewer.ViewerMissing("the viewer page does not hold the study marker exactly once")
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    text = re.sub("[<>&]", lambda m: _ESCAPES[m.group(0)], text)
    filled = page.replace(MARKER, MARKER.replace(">null<", f">{text}<"))
    # A static policy, in force before any script of the page runs (the bundle's own, set
    # by its first script, is the same; two policies both apply, so it can only narrow).
    meta = f'\n<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    at = re.search(r"<meta charset=[^>]*>", filled, re.I) or re.search(
        r"<head(\s[^>]*)?>", filled, re.I
    )
    if at is None:
        raise viewer.ViewerMissing("the viewer page has no <head>")
    return filled[: at.end()] + meta + filled[at.end() :]


def downloads_of(contents: PackageContents) -> list[dict[str, Any]]:
    """The page's downloads, kept in the package manifest: the ISO (each disc of a set with
    its number, so the page says "disc 2 of 3"), then the ZIP."""
    discs = {d.key: d for d in contents.discs if d.total > 1}
    out: list[dict[str, Any]] = []
    for d in sorted(contents.downloads, key=lambda d: d.format != "iso"):
        entry: dict[str, Any] = {"format": d.format, "key": d.key}
        if d.key in discs:
            entry.update(number=discs[d.key].number, total=discs[d.key].total)
        out.append(entry)
    return out


# -- writing it ---------------------------------------------------------------------------------


def publish(
    store: Store,
    settings: PackagerSettings,
    package_id: str,
    view: dict[str, Any],
    ttl: int,
) -> dict[str, Any]:
    """Sign every URL, write `view.html`, and sign its link; all expire at `expires_at`.

    `view` is what the package manifest keeps: {"studies": studies_of(...) (with keys),
    "downloads": [{"format", "key", "label"?}]}; the answer's `urls` maps each download's
    key to its signed URL. The expiry shown is taken before signing, so every
    signature lives at least until the time the page states.
    """
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    downloads = [
        {
            "label": t(settings.language, "online_disc", number=d["number"], total=d["total"])
            if "number" in d
            else t(settings.language, f"online_{d['format']}"),
            "url": store.presign_get(d["key"], ttl),
        }
        for d in view["downloads"]
    ]
    studies = signed(view["studies"], lambda key: store.presign_get(key, ttl))
    page = inject(template(), document(settings, studies, downloads, expires_at))
    key = view_key(package_id)
    store.put_bytes(
        key,
        page.encode(),
        content_type="text/html; charset=utf-8",
        cache_control="private, no-store",
        content_disposition="inline",
    )
    return {
        "view_url": store.presign_get(key, ttl),
        "expires_at": expires_at.isoformat(),
        "urls": {d["key"]: u["url"] for d, u in zip(view["downloads"], downloads, strict=True)},
    }
