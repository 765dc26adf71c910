"""The audit trail: who asked for what, when, and how it ended; one bucket object per event.

Keys are `audit/{yyyy}/{mm}/{dd}/{uuid}.json` (UTC): they name a day and a random id, never a
patient or an accession number; those travel in the body. An event holds ids only (job ids,
accession numbers, Study UIDs, a peer's name), never pixel data or patient names. Reading
lists one day prefix after the other from the `since` date, so a query for the last hour
reads today's objects, not the whole trail.

With DICOMISO_AUDIT_SYSLOG_URL set, each event is also queued for the Audit Record Repository:
`audit-outbox/{UTC time}-{id}.json`, written in the same call after the trail's object (a
failed outbox write fails the call like a failed trail write), shipped in key order and
deleted once sent by the one shipper of the deployment (`audit_syslog`).
"""

from __future__ import annotations

import logging
import re
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import Request

from .errors import DicomisoError, InvalidInput, ObjectMissing
from .models import StudyManifest
from .settings import CommonSettings
from .store import Store

log = logging.getLogger(__name__)

PREFIX = "audit/"
MAX_DAYS = 400  # how far back one query may reach (one listing per day)
MAX_EVENTS = 10_000
_USER = re.compile(r"[^\w.@+ -]")
OUTBOX = "audit-outbox/"
# stores whose events are also queued, each with what to call once one is (a shipper's wake)
_OUTBOXED: weakref.WeakKeyDictionary[Store, Callable[[], None] | None] = weakref.WeakKeyDictionary()


def event_key(at: datetime, event_id: str) -> str:
    """The bucket key of one event: its UTC day and its id, nothing else."""
    return f"{PREFIX}{at.astimezone(UTC):%Y/%m/%d}/{event_id}.json"


def outbox_key(at: datetime, event_id: str) -> str:
    """The outbox key of one event: listing order is the order of the events' UTC times."""
    return f"{OUTBOX}{at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{event_id}.json"


def use_outbox(store: Store, on: bool = True, *, queued: Callable[[], None] | None = None) -> None:
    """Queue every event written through `store` for the syslog shipper too (or stop);
    `queued` is called after each event was queued."""
    if on:
        _OUTBOXED[store] = queued
    else:
        _OUTBOXED.pop(store, None)


def day_prefix(day: date) -> str:
    return f"{PREFIX}{day:%Y/%m/%d}/"


def requester(request: Request, settings: CommonSettings) -> str:
    """Who asked: a staff member's JWT names them (preferred_username, else the subject); a
    service token, the proxy's user header if configured and given, else `api-token`.

    Only called behind the guard (`auth.Guard`), which put the caller on `request.state`;
    the proxy's header is trusted only with the service token, never with a user's JWT.
    """
    principal: Any = getattr(request.state, "principal", None)
    kind = getattr(principal, "kind", None)
    if kind == "user":
        return str(principal.name)
    header = getattr(settings, "user_header", None)
    if header:
        name = _USER.sub("", request.headers.get(header, ""))[:128].strip()
        if name:
            return name
    if kind == "service" or (kind is None and settings.api_token.get_secret_value()):
        return "api-token"
    return "anonymous (auth off)"


def study_facts(manifests: Iterable[StudyManifest]) -> dict[str, Any]:
    """What a DICOM audit message names of stored studies (`atna.render`): the PatientID,
    the Study UIDs and each study's SOP classes with their counts. Ids only, never a name;
    for event bodies, never for logs."""
    manifests = list(manifests)
    patient_ids = sorted({(m.patient.id or "").strip() for m in manifests} - {""})
    return {
        "patient_id": patient_ids[0] if len(patient_ids) == 1 else None,
        "study_uids": [m.study_uid for m in manifests],
        "sop_classes": {
            m.study_uid: dict(Counter(i.sop_class_uid for i in m.instances)) for m in manifests
        },
    }


def write(
    store: Store,
    service: str,
    action: str,
    *,
    user: str,
    outcome: str,
    client: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Write one event and return it; a failed write raises (the caller decides)."""
    now = datetime.now(UTC)
    event = {
        "id": uuid.uuid4().hex,
        "at": now.isoformat(),
        "service": service,
        "action": action,
        "outcome": outcome,
        "user": user,
        "client": client,
        **{k: v for k, v in fields.items() if v is not None},
    }
    store.put_json(event_key(now, event["id"]), event)
    if store in _OUTBOXED:
        store.put_json(outbox_key(now, event["id"]), event)
        if (queued := _OUTBOXED.get(store)) is not None:
            queued()
    log.info(
        "audit event",
        extra={
            "event_id": event["id"],
            "action": action,
            "outcome": outcome,
            "job_id": fields.get("job_id"),
        },
    )
    return event


def record(
    store: Store,
    settings: CommonSettings,
    service: str,
    request: Request,
    action: str,
    outcome: str = "requested",
    **fields: Any,
) -> dict[str, Any]:
    """Audit something a caller asked for; raises if the event cannot be written, so nothing
    the trail does not show is ever done."""
    client = request.client.host if request.client else None
    return write(
        store,
        service,
        action,
        user=requester(request, settings),
        outcome=outcome,
        client=client,
        **fields,
    )


def record_outcome(store: Store, service: str, action: str, outcome: str, **fields: Any) -> None:
    """Audit how a job ended (best effort: the job record holds the outcome too)."""
    try:
        write(store, service, action, user="system (job)", outcome=outcome, **fields)
    except DicomisoError:
        log.warning(
            "audit event not written",
            extra={"action": action, "outcome": outcome, "job_id": fields.get("job_id")},
        )


def events_since(
    store: Store, since: datetime, *, now: datetime | None = None, limit: int = MAX_EVENTS
) -> tuple[list[dict[str, Any]], bool]:
    """Events at or after `since`, oldest first, and whether `limit` cut the list short.

    Lists one day prefix per day from `since` to today, never the whole trail.
    """
    now = now or datetime.now(UTC)
    since = since.astimezone(UTC)
    first, last = since.date(), now.astimezone(UTC).date()
    if (last - first).days > MAX_DAYS:
        raise InvalidInput(f"since reaches back more than {MAX_DAYS} days; ask for less")
    keys = [
        o.key
        for n in range((last - first).days + 1)
        for o in store.list(day_prefix(first + timedelta(days=n)))
    ]

    def read(key: str) -> dict[str, Any] | None:
        try:
            data, _ = store.get_json(key)
        except ObjectMissing:  # removed between listing and reading
            return None
        return data if isinstance(data, dict) else None

    with ThreadPoolExecutor(8) as pool:
        events = [e for e in pool.map(read, keys) if e is not None]
    events = [e for e in events if _at(e) >= since]
    events.sort(key=lambda e: (_at(e), str(e.get("id"))))
    return events[:limit], len(events) > limit


def _at(event: dict[str, Any]) -> datetime:
    try:
        at = datetime.fromisoformat(str(event.get("at")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)
