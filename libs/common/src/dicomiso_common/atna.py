"""DICOM audit messages (PS3.15 A.5, the IHE ATNA format) rendered from our JSON audit events.

`render(event)` maps one event of the JSON trail (`audit.write`) to one Audit Message, UTF-8
XML valid against the schema of PS3.15 A.5.1 (`atna.rng`, checked in tests), or returns None
for an event that has no ATNA counterpart (a request that is not yet an export, a refusal
before anything was read). The JSON event stays the record; the message is derived from it,
so a shipper can render again what it could not send.

What an event may carry for its message (all optional but `at`, `service`, `action`,
`outcome`, `user`): `client` (the caller's address), `patient_id` (PatientID: the patient
participant; `patient_ids` for a preview of several), `study_uids`, `sop_classes` ({study
uid: {SOP class uid: count}}), `accessions` ({accession: [study uids]}), `our_aet`,
`peer_aet`, `peer_host` (the DICOM nodes of a transfer or query), `query` ({keyword:
value}, the match keys) with `protocol` ("c-find", "qido"), `email`, `profile`, `job_id`,
`alert`, `path`, `error` / `reason`.

Never rendered: the patient's name (ParticipantObjectName stays empty: the schema wants the
element, PS3.15 A.5.3 makes the name user-optional), and never a link: a link's media is
named "download link", not its URL, so no signature reaches the repository.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

Code = tuple[str, str, str]  # csd-code, codeSystemName, originalText (the Code Meaning)

# PS3.16 CID 400 (event ids), CID 401 (event type codes), CID 402 (roles), CID 405 (media)
EXPORT: Code = ("110106", "DCM", "Export")
BEGIN_TRANSFERRING: Code = ("110102", "DCM", "Begin Transferring DICOM Instances")
INSTANCES_TRANSFERRED: Code = ("110104", "DCM", "DICOM Instances Transferred")
QUERY: Code = ("110112", "DCM", "Query")
SECURITY_ALERT: Code = ("110113", "DCM", "Security Alert")
USER_AUTHENTICATION: Code = ("110114", "DCM", "User Authentication")
LOGIN: Code = ("110122", "DCM", "Login")
LOGOUT: Code = ("110123", "DCM", "Logout")
SOURCE: Code = ("110153", "DCM", "Source Role ID")
DESTINATION: Code = ("110152", "DCM", "Destination Role ID")
DESTINATION_MEDIA: Code = ("110154", "DCM", "Destination Media")
STUDY_UID: Code = ("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID: Code = ("110181", "DCM", "SOP Class UID")
# PS3.15 A.5.1.2.4: the RFC 3881 participant object id types
PATIENT_NUMBER: Code = ("2", "RFC-3881", "Patient Number")
SEARCH_CRITERIA: Code = ("10", "RFC-3881", "Search Criteria")
URI: Code = ("12", "RFC-3881", "URI")

MEDIA: dict[str, Code] = {
    "usb": ("110030", "DCM", "USB Disk Emulation"),
    "email": ("110031", "DCM", "Email"),
    "cd": ("110032", "DCM", "CD"),
    "dvd": ("110033", "DCM", "DVD"),
    "uri": ("110037", "DCM", "URI"),
}
# PS3.16 CID 403, the Security Alert type codes an event's `alert` may name
ALERTS: dict[str, Code] = {
    "node-authentication": ("110126", "DCM", "Node Authentication"),
    "security-configuration": ("110129", "DCM", "Security Configuration"),
    "restricted-function": ("110132", "DCM", "Use of Restricted Function"),
    "user-security-attributes": ("110137", "DCM", "User Security Attributes Changed"),
}
DEFAULT_ALERT = "restricted-function"  # a refused token or a missing role

FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Q/R FIND, what the retriever asks
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SYSTEM_USER = "system (job)"  # who `audit.record_outcome` names: our process, not a person

# PS3.15 A.5.2 EventOutcomeIndicator; "0" where our outcome says nothing (as the standard asks)
_OUTCOME = {"refused": "4", "denied": "4", "rejected": "4", "failed": "8", "unavailable": "12"}
_NO_EXPORT_YET = {"requested", "refused", "not_requested", "queued"}
# The match keys a query message may carry: identifiers, never a name or a birth date
QUERY_KEYS = frozenset(
    {
        "QueryRetrieveLevel",
        "AccessionNumber",
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "StudyDate",
        "ModalitiesInStudy",
    }
)
_STARTED = {"requested", "started", "queued", "running"}


def render(event: Mapping[str, Any], *, source_id: str | None = None) -> bytes | None:
    """The DICOM Audit Message for one JSON audit event, or None if it has no counterpart.

    Args:
        event: One event as `audit.write` stored it.
        source_id: AuditSourceID (DICOMISO_AUDIT_SOURCE_ID); default the event's service.

    Raises:
        ValueError: The event has no valid `at` time (it was not written by `audit.write`).
    """
    build = _builder(event)
    if build is None:
        return None
    event = _scrubbed(event)
    source = _XML_ILLEGAL.sub("?", source_id or str(event.get("service") or "dicom-iso"))
    xml: bytes = ET.tostring(build(event, source), encoding="utf-8", xml_declaration=True)
    return xml


Builder = Callable[[Mapping[str, Any], str], ET.Element]
# Characters XML 1.0 cannot carry at all (ElementTree would write them, unparseable)
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _scrubbed(value: Any) -> Any:
    """The event with every string made XML-safe (an error text may hold any byte)."""
    if isinstance(value, str):
        return _XML_ILLEGAL.sub("?", value)
    if isinstance(value, Mapping):
        return {str(_scrubbed(k)): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def _builder(event: Mapping[str, Any]) -> Builder | None:
    action, outcome = event.get("action"), str(event.get("outcome"))
    if action == "package":  # the disc image: an export once it is built (or failed)
        return None if outcome in _NO_EXPORT_YET else _export
    if action in ("link", "email"):
        return None if outcome in _NO_EXPORT_YET else _export
    if action in ("forward", "retrieve"):
        return _begin if outcome in _STARTED else _transferred
    if action == "preview":  # the lookup is audited when asked, the Query once answered
        return None if outcome == "requested" else _query
    if action == "query":
        return _query
    if action in ("sign-in", "sign-out"):
        return _authentication
    if action == "security-alert":
        return _alert
    return None


# -- the messages (PS3.15 A.5.3) ---------------------------------------------------------------


def _export(event: Mapping[str, Any], source: str) -> ET.Element:
    """A.5.3.5 Export: our data left on a medium (a disc image, a link, an e-mail)."""
    parts = [*_people(event), _ours(event, source, SOURCE), _media(event)]
    return _message(event, source, EXPORT, "R", parts, [*_patient(event), *_studies(event)])


def _begin(event: Mapping[str, Any], source: str) -> ET.Element:
    """A.5.3.2 Begin Transferring DICOM Instances: a retrieval or a forward started."""
    return _message(event, source, BEGIN_TRANSFERRING, "E", _nodes(event, source), _objects(event))


def _transferred(event: Mapping[str, Any], source: str) -> ET.Element:
    """A.5.3.4 DICOM Instances Transferred: C for what we received, R for what we sent."""
    action = "C" if event.get("action") == "retrieve" else "R"
    return _message(
        event, source, INSTANCES_TRANSFERRED, action, _nodes(event, source), _objects(event)
    )


def _query(event: Mapping[str, Any], source: str) -> ET.Element:
    """A.5.3.10 Query: who asked what of whom (the match keys, never a name)."""
    parts = [*_people(event), _ours(event, source, SOURCE, requestor=True)]
    if event.get("peer_aet") or event.get("peer_host"):
        parts.append(_peer(event, DESTINATION))
    return _message(event, source, QUERY, "E", parts, [*_patient(event), _query_object(event)])


def _authentication(event: Mapping[str, Any], source: str) -> ET.Element:
    """A.5.3.11 User Authentication: a sign-in (Login) or a sign-out (Logout)."""
    kind = LOGIN if event.get("action") == "sign-in" else LOGOUT
    parts = [*_people(event), _participant(source, requestor=False)]
    return _message(event, source, USER_AUTHENTICATION, "E", parts, [], types=[kind])


def _alert(event: Mapping[str, Any], source: str) -> ET.Element:
    """A.5.3.10 Security Alert: a refused token or a missing role, and where it was used."""
    alert = ALERTS.get(str(event.get("alert")), ALERTS[DEFAULT_ALERT])
    user = str(event.get("user") or "unknown")
    parts = [_participant(user, requestor=True, nap=event.get("client"))]
    parts.append(_participant(source, requestor=False))
    subject = _object(URI, str(event.get("path") or source), type_code="2", role="13", name="")
    reason = event.get("reason") or event.get("error")
    if reason:
        _detail(subject, "Alert Description", str(reason))
    return _message(event, source, SECURITY_ALERT, "E", parts, [subject], types=[alert])


# -- parts ---------------------------------------------------------------------------------------


def _message(
    event: Mapping[str, Any],
    source: str,
    event_id: Code,
    action: str,
    participants: Iterable[ET.Element],
    objects: Iterable[ET.Element],
    *,
    types: Iterable[Code] = (),
) -> ET.Element:
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(
        root,
        "EventIdentification",
        EventActionCode=action,
        EventDateTime=_when(event.get("at")),
        EventOutcomeIndicator=_OUTCOME.get(str(event.get("outcome")), "0"),
    )
    _code(ident, "EventID", event_id)
    for code in types:
        _code(ident, "EventTypeCode", code)
    reason = event.get("error") or event.get("reason")
    if reason:
        ET.SubElement(ident, "EventOutcomeDescription").text = str(reason)[:1024]
    root.extend(participants)
    audit_source = ET.SubElement(root, "AuditSourceIdentification", AuditSourceID=source)
    ET.SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": "4"})  # application server
    root.extend(objects)
    return root


def _when(at: object) -> str:
    """EventDateTime in UTC (PS3.15 A.5.2.5), from the event's ISO time."""
    try:
        when = datetime.fromisoformat(str(at))
    except ValueError as exc:
        raise ValueError(f"audit event without a valid time: {at!r}") from exc
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    value, system, meaning = code
    attrs = {"csd-code": value, "codeSystemName": system, "originalText": meaning}
    return ET.SubElement(parent, tag, attrs)


def _participant(
    user_id: str,
    *,
    requestor: bool,
    roles: Iterable[Code] = (),
    aet: object = None,
    nap: object = None,
    media: Code | None = None,
    nap_type: str | None = None,
) -> ET.Element:
    attrs = {"UserID": user_id, "UserIsRequestor": "true" if requestor else "false"}
    if aet:
        attrs["AlternativeUserID"] = f"AETITLES={aet}"  # PS3.15 A.5.2.1
    if nap:
        attrs["NetworkAccessPointID"] = str(nap)
        attrs["NetworkAccessPointTypeCode"] = nap_type or _nap_type(str(nap))
    part = ET.Element("ActiveParticipant", attrs)
    for role in roles:
        _code(part, "RoleIDCode", role)
    if media is not None:
        _code(ET.SubElement(part, "MediaIdentifier"), "MediaType", media)
    return part


def _nap_type(nap: str) -> str:
    """2 for an IP address, 1 for a machine name (PS3.15 A.5.1 NetworkAccessPointTypeCode)."""
    try:
        ipaddress.ip_address(nap.strip("[]"))
    except ValueError:
        return "1"
    return "2"


def _people(event: Mapping[str, Any]) -> list[ET.Element]:
    """The person (or calling service) who asked; none for what a job did on its own."""
    user = event.get("user")
    if not user or user == SYSTEM_USER:
        return []
    return [_participant(str(user), requestor=True, nap=event.get("client"))]


def _ours(
    event: Mapping[str, Any], source: str, role: Code, *, requestor: bool | None = None
) -> ET.Element:
    """Our process: its AE title where it spoke DICOM, else the audit source (the service)."""
    aet = event.get("our_aet")
    asked = requestor if requestor is not None else not _people(event)
    return _participant(str(aet or source), requestor=asked, roles=[role], aet=aet)


def _peer(event: Mapping[str, Any], role: Code) -> ET.Element:
    aet = event.get("peer_aet")
    name = aet or event.get("peer_host") or event.get("destination") or "PACS"
    return _participant(
        str(name), requestor=False, roles=[role], aet=aet, nap=event.get("peer_host")
    )


def _nodes(event: Mapping[str, Any], source: str) -> list[ET.Element]:
    """Source and destination of a transfer: the PACS to us for a retrieval, us to the peer
    for a forward. Our process asked for it (C-MOVE, C-GET or C-STORE), so it is a requestor."""
    if event.get("action") == "retrieve":
        nodes = [_peer(event, SOURCE), _ours(event, source, DESTINATION, requestor=True)]
    else:
        nodes = [_ours(event, source, SOURCE, requestor=True), _peer(event, DESTINATION)]
    return [*_people(event), *nodes]


def _media(event: Mapping[str, Any]) -> ET.Element:
    """The Destination Media participant: the address an e-mail went to, a "download link"
    (never its URL: a presigned URL carries its signature), or the disc image."""
    action, job = event.get("action"), event.get("job_id")
    if action == "email":
        email = str(event.get("email") or "e-mail")
        return _participant(
            email,
            requestor=False,
            roles=[DESTINATION_MEDIA],
            media=MEDIA["email"],
            nap=event.get("email"),
            nap_type="4",
        )
    if action == "link":
        name = f"download link (package {job})" if job else "download link"
        return _participant(name, requestor=False, roles=[DESTINATION_MEDIA], media=MEDIA["uri"])
    profile = str(event.get("profile") or "").upper()
    kind = "cd" if "-CD" in profile else "usb" if "USB" in profile else "dvd"
    name = f"disc image (package {job})" if job else "disc image"
    return _participant(name, requestor=False, roles=[DESTINATION_MEDIA], media=MEDIA[kind])


def _object(
    id_type: Code,
    object_id: str,
    *,
    type_code: str,
    role: str,
    name: str | None = None,
    query: bytes | None = None,
) -> ET.Element:
    obj = ET.Element(
        "ParticipantObjectIdentification",
        ParticipantObjectID=object_id,
        ParticipantObjectTypeCode=type_code,
        ParticipantObjectTypeCodeRole=role,
    )
    _code(obj, "ParticipantObjectIDTypeCode", id_type)
    if query is not None:
        ET.SubElement(obj, "ParticipantObjectQuery").text = base64.b64encode(query).decode()
    else:
        ET.SubElement(obj, "ParticipantObjectName").text = name or ""
    return obj


def _detail(obj: ET.Element, kind: str, value: str) -> None:
    """A ParticipantObjectDetail, placed before any description as the schema orders them."""
    detail = ET.Element("ParticipantObjectDetail", type=kind)
    detail.set("value", base64.b64encode(value.encode()).decode())
    first = next((i for i, c in enumerate(obj) if c.tag == "ParticipantObjectDescription"), None)
    obj.insert(len(obj) if first is None else first, detail)


def _patient(event: Mapping[str, Any]) -> list[ET.Element]:
    """The patient (type 1 person, role 1 patient), by PatientID; the name stays out. A
    preview of several patients' accessions (refused, but looked up) names each."""
    ids = event.get("patient_ids") or [event.get("patient_id")]
    return [_object(PATIENT_NUMBER, str(i), type_code="1", role="1", name="") for i in ids if i]


def _studies(event: Mapping[str, Any]) -> list[ET.Element]:
    """One object per study (type 2, role 3 report), with its SOP classes and accession
    numbers where the event knows them (PS3.15 A.5.1 DICOMObjectDescriptionContents)."""
    uids = [str(u) for u in event.get("study_uids") or ()]
    classes: Mapping[str, Mapping[str, int]] = event.get("sop_classes") or {}
    by_study: dict[str, list[str]] = {}
    for accession, studies in (event.get("accessions") or {}).items():
        for uid in studies:
            by_study.setdefault(str(uid), []).append(str(accession))
    if len(uids) == 1 and not by_study:
        by_study[uids[0]] = [str(a) for a in event.get("accession_numbers") or ()]
    found = []
    for uid in uids:
        obj = _object(STUDY_UID, uid, type_code="2", role="3", name="")
        if event.get("job_id"):
            _detail(obj, "dicomiso-job-id", str(event["job_id"]))
        accessions, counts = by_study.get(uid, []), classes.get(uid, {})
        if accessions or counts:
            described = ET.SubElement(obj, "ParticipantObjectDescription")
            for accession in accessions:
                ET.SubElement(described, "Accession", Number=accession)
            for sop_class, count in sorted(counts.items()):
                ET.SubElement(described, "SOPClass", UID=sop_class, NumberOfInstances=str(count))
        found.append(obj)
    return found


def _objects(event: Mapping[str, Any]) -> list[ET.Element]:
    return [*_patient(event), *_studies(event)]


def _query_object(event: Mapping[str, Any]) -> ET.Element:
    """The query: a C-FIND identifier (Explicit VR Little Endian, base64, with its transfer
    syntax), a QIDO-RS query string, or our lookup's accession numbers (a preview)."""
    wanted = (event.get("query") or {}).items()
    keys = {str(k): str(v) for k, v in wanted if k in QUERY_KEYS and v is not None}
    protocol = event.get("protocol")
    if event.get("action") == "preview":
        accessions = ",".join(str(a) for a in event.get("accession_numbers") or ())
        raw = urlencode({"AccessionNumber": accessions}).encode()
        return _object(SEARCH_CRITERIA, "lookup", type_code="2", role="24", query=raw)
    if protocol == "qido":
        path = str(event.get("path") or "studies")
        return _object(URI, path, type_code="2", role="3", query=urlencode(keys).encode())
    obj = _object(SOP_CLASS_UID, FIND_MODEL, type_code="2", role="3", query=_identifier(keys))
    _detail(obj, "TransferSyntax", EXPLICIT_LE)
    return obj


def _identifier(keys: Mapping[str, str]) -> bytes:
    """The match keys as a C-FIND identifier in Explicit VR Little Endian (PS3.15 A.5.3.10)."""
    ds = Dataset()
    for keyword, value in sorted(keys.items(), key=lambda kv: tag_for_keyword(kv[0]) or 0):
        if tag_for_keyword(keyword) is not None:
            setattr(ds, keyword, value)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()
