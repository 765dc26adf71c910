"""DICOM audit messages from the JSON trail: each kind valid against PS3.15 A.5.1's schema.

Events are written by `audit.write` into a real (moto) bucket and read back, so the messages
are rendered from what the trail really stores. The schema is the standard's, transcribed
into RELAX NG's XML form (`tests/support/dicom-audit-message.rng`) and checked with libxml2 (lxml).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from lxml import etree
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from dicomiso_common import atna, audit
from dicomiso_common.store import Store
from support.atna import SCHEMA, valid

STUDY = "1.2.826.0.1.3680043.8.498.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
PATIENT = {"patient_id": "PID-4711", "patient_name": "DOE^JANE"}  # the name must never show


def _stored(store: Store, service: str, action: str, **fields: Any) -> dict[str, Any]:
    """Write one event as the services do and read it back from the bucket."""
    user = fields.pop("user", "clerk.ani")
    outcome = fields.pop("outcome", "succeeded")
    written = audit.write(store, service, action, user=user, outcome=outcome, **fields)
    data, _ = store.get_json(audit.event_key(audit._at(written), written["id"]))
    assert isinstance(data, dict)
    return data


_valid = valid


def _one(node: etree._Element, path: str) -> etree._Element:
    found = node.find(path)
    assert found is not None, path
    return found


def _get(node: etree._Element, path: str, name: str) -> str | None:
    value = _one(node, path).get(name)
    return None if value is None else str(value)


def _nodes(node: etree._Element, xpath: str) -> list[etree._Element]:
    found = node.xpath(xpath)
    assert isinstance(found, list)
    return [n for n in found if isinstance(n, etree._Element)]


def _strings(node: etree._Element, xpath: str) -> list[str]:
    found = node.xpath(xpath)
    assert isinstance(found, list)
    return [str(v) for v in found]


def _event_id(doc: etree._Element) -> str:
    return str(_get(doc, "EventIdentification/EventID", "csd-code"))


KINDS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "disc built": (
        "packager",
        "package",
        {
            "user": atna.SYSTEM_USER,
            "job_id": "a" * 32,
            "study_uids": [STUDY],
            "accession_numbers": ["CT.1"],
            "sop_classes": {STUDY: {CT: 12}},
            "profile": "STD-GEN-CD",
            **PATIENT,
        },
        "110106",
    ),
    "link issued": (
        "packager",
        "link",
        {"outcome": "issued", "job_id": "a" * 32, "via": "page", "client": "10.0.0.7", **PATIENT},
        "110106",
    ),
    "link e-mailed": (
        "packager",
        "email",
        {"outcome": "sent", "email": "jane@example.org", "study_uids": [STUDY], **PATIENT},
        "110106",
    ),
    "retrieval started": (
        "retriever",
        "retrieve",
        {"outcome": "started", "our_aet": "CDRECORD", "peer_aet": "ABPACS", **PATIENT},
        "110102",
    ),
    "retrieval done": (
        "retriever",
        "retrieve",
        {
            "user": atna.SYSTEM_USER,
            "our_aet": "CDRECORD",
            "peer_aet": "ABPACS",
            "peer_host": "127.0.0.1",
            "study_uids": [STUDY],
            "sop_classes": {STUDY: {CT: 3}},
            "accessions": {"CT.1": [STUDY]},
            **PATIENT,
        },
        "110104",
    ),
    "forward requested": (
        "forwarder",
        "forward",
        {"outcome": "requested", "destination": "reading-room", "study_uids": [STUDY]},
        "110102",
    ),
    "forward failed": (
        "forwarder",
        "forward",
        {
            "user": atna.SYSTEM_USER,
            "outcome": "failed",
            "our_aet": "DICOMISO",
            "peer_aet": "REMOTE",
            "peer_host": "pacs.example.org",
            "error": "association rejected",
            "study_uids": [STUDY],
            **PATIENT,
        },
        "110104",
    ),
    "c-find": (
        "retriever",
        "query",
        {
            "protocol": "c-find",
            "our_aet": "CDRECORD",
            "peer_aet": "ABPACS",
            "query": {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "CT.1", "PatientName": ""},
            **PATIENT,
        },
        "110112",
    ),
    "qido": (
        "retriever",
        "query",
        {"protocol": "qido", "path": "studies", "query": {"AccessionNumber": "CT.1"}},
        "110112",
    ),
    "preview": (
        "packager",
        "preview",
        {"accession_numbers": ["CT.1", "CT.2"], "patient_ids": ["PID-4711", "PID-0815"]},
        "110112",
    ),
    "sign-in": ("packager", "sign-in", {"client": "10.0.0.7"}, "110114"),
    "sign-out": ("packager", "sign-out", {"client": "::1"}, "110114"),
    "refused token": (
        "packager",
        "security-alert",
        {"outcome": "refused", "reason": "token signed by an unknown key", "path": "/v1/x"},
        "110113",
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_event_renders_a_message_the_schema_accepts(store: Store, kind: str) -> None:
    """One stored event per kind gives a message valid against PS3.15 A.5.1, of its EventID."""
    service, action, fields, event_id = KINDS[kind]

    doc = _valid(atna.render(_stored(store, service, action, **fields)))

    assert _event_id(doc) == event_id
    assert _get(doc, "AuditSourceIdentification", "AuditSourceID") == service
    assert doc.findall("ActiveParticipant")


def test_an_export_names_the_medium_the_patient_and_the_study(store: Store) -> None:
    """A disc: Destination Media (CD for a CD profile), patient by PatientID, the study with
    its SOP classes and accession; a job's event has our process as the requestor."""
    _, action, fields, _ = KINDS["disc built"]
    doc = _valid(atna.render(_stored(store, "packager", action, **fields)))

    (media,) = _nodes(doc, "ActiveParticipant[RoleIDCode/@csd-code='110154']")
    assert _get(media, "MediaIdentifier/MediaType", "csd-code") == "110032"
    assert _strings(doc, "ActiveParticipant[@UserID='packager']/@UserIsRequestor") == ["true"]
    patient, study = doc.findall("ParticipantObjectIdentification")
    assert (patient.get("ParticipantObjectID"), patient.get("ParticipantObjectTypeCode")) == (
        "PID-4711",
        "1",
    )
    assert patient.get("ParticipantObjectTypeCodeRole") == "1"
    assert _get(patient, "ParticipantObjectIDTypeCode", "csd-code") == "2"
    assert study.get("ParticipantObjectID") == STUDY
    assert _get(study, "ParticipantObjectIDTypeCode", "csd-code") == "110180"
    sop = _one(study, "ParticipantObjectDescription/SOPClass")
    assert (sop.get("UID"), sop.get("NumberOfInstances")) == (CT, "12")
    assert _get(study, "ParticipantObjectDescription/Accession", "Number") == "CT.1"


def test_a_link_is_named_never_its_presigned_url(store: Store) -> None:
    """Even an event holding a real presigned URL gives a message without it or its signature."""
    url = store.presign_get("packages/x/disc.iso", 600)
    assert "Signature=" in url
    event = _stored(
        store, "packager", "link", outcome="issued", download_url=url, view_url=url, **PATIENT
    )

    xml = atna.render(event)
    doc = _valid(xml)

    assert xml is not None and b"Signature" not in xml and url.encode() not in xml
    assert _strings(doc, "ActiveParticipant[RoleIDCode/@csd-code='110154']/@UserID") == [
        "download link"
    ]


def test_the_e_mail_address_is_the_medium(store: Store) -> None:
    _, action, fields, _ = KINDS["link e-mailed"]
    doc = _valid(atna.render(_stored(store, "packager", action, **fields)))

    (media,) = _nodes(doc, "ActiveParticipant[RoleIDCode/@csd-code='110154']")
    assert media.get("UserID") == "jane@example.org"
    assert media.get("NetworkAccessPointTypeCode") == "4"
    assert _get(media, "MediaIdentifier/MediaType", "csd-code") == "110031"


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_patient_name_in_any_message(store: Store, kind: str) -> None:
    """The name is in the event, and nowhere in the message, nor in a base64 query."""
    service, action, fields, _ = KINDS[kind]
    event = _stored(store, service, action, **{**fields, "patient_name": "DOE^JANE"})
    event["query"] = {**event.get("query", {}), "PatientName": "DOE^JANE"}

    xml = atna.render(event)
    doc = _valid(xml)

    assert xml is not None and b"DOE" not in xml
    for value in _strings(
        doc, "//ParticipantObjectQuery/text() | //ParticipantObjectDetail/@value"
    ):
        assert b"DOE" not in base64.b64decode(value)


def test_a_c_find_carries_its_identifier_in_explicit_vr_little_endian(store: Store) -> None:
    """The query is the C-FIND identifier, base64, with its transfer syntax (PS3.15 A.5.3.10)."""
    _, action, fields, _ = KINDS["c-find"]
    doc = _valid(atna.render(_stored(store, "retriever", action, **fields)))

    (query,) = _nodes(doc, "ParticipantObjectIdentification[ParticipantObjectQuery]")
    assert query.get("ParticipantObjectID") == atna.FIND_MODEL
    raw = base64.b64decode(query.findtext("ParticipantObjectQuery") or "")
    fp: Any = DicomBytesIO(raw)  # read_dataset is typed for BinaryIO; DicomBytesIO is one
    ds = read_dataset(fp, is_implicit_VR=False, is_little_endian=True)
    assert (ds.QueryRetrieveLevel, ds.AccessionNumber) == ("STUDY", "CT.1")
    syntax = _get(query, "ParticipantObjectDetail[@type='TransferSyntax']", "value")
    assert base64.b64decode(syntax or "") == b"1.2.840.10008.1.2.1"


def test_sign_in_and_sign_out_are_login_and_logout(store: Store) -> None:
    for action, code in (("sign-in", "110122"), ("sign-out", "110123")):
        doc = _valid(atna.render(_stored(store, "packager", action, client="10.0.0.7")))
        assert _get(doc, "EventIdentification/EventTypeCode", "csd-code") == code
        (user,) = _nodes(doc, "ActiveParticipant[@UserID='clerk.ani']")
        assert (user.get("UserIsRequestor"), user.get("NetworkAccessPointTypeCode")) == (
            "true",
            "2",
        )


@pytest.mark.parametrize(
    ("outcome", "indicator"), [("succeeded", "0"), ("refused", "4"), ("failed", "8")]
)
def test_our_outcome_is_the_event_outcome_indicator(
    store: Store, outcome: str, indicator: str
) -> None:
    event = _stored(store, "packager", "sign-in", outcome=outcome)
    doc = _valid(atna.render(event))
    assert _get(doc, "EventIdentification", "EventOutcomeIndicator") == indicator


def test_the_audit_source_id_is_a_setting(store: Store) -> None:
    doc = _valid(atna.render(_stored(store, "packager", "sign-in"), source_id="HOSP-DICOMISO"))
    assert _get(doc, "AuditSourceIdentification", "AuditSourceID") == "HOSP-DICOMISO"


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        ("package", "requested"),
        ("package", "refused"),
        ("email", "requested"),
        ("preview", "requested"),
        ("other", "x"),
    ],
)
def test_events_without_an_atna_counterpart_render_nothing(
    store: Store, action: str, outcome: str
) -> None:
    assert atna.render(_stored(store, "packager", action, outcome=outcome)) is None


def _broken(doc: etree._Element, how: str) -> etree._Element:
    if how == "no audit source":
        doc.remove(_one(doc, "AuditSourceIdentification"))
    elif how == "outcome 1":
        _one(doc, "EventIdentification").set("EventOutcomeIndicator", "1")
    elif how == "no participant":
        for part in doc.findall("ActiveParticipant"):
            doc.remove(part)
    elif how == "object before participant":
        obj = _one(doc, "ParticipantObjectIdentification")
        doc.remove(obj)
        doc.insert(1, obj)
    elif how == "query not base64":
        _one(doc, "ParticipantObjectIdentification/ParticipantObjectQuery").text = "not base64!"
    return doc


@pytest.mark.parametrize(
    "how",
    [
        "no audit source",
        "outcome 1",
        "no participant",
        "object before participant",
        "query not base64",
    ],
)
def test_a_broken_message_fails_the_schema(store: Store, how: str) -> None:
    """The schema check can fail: each breakage of a valid message is refused."""
    _, action, fields, _ = KINDS["c-find"]
    doc = _valid(atna.render(_stored(store, "retriever", action, **fields)))

    assert not SCHEMA.validate(_broken(doc, how))


def test_an_event_without_a_time_is_refused() -> None:
    with pytest.raises(ValueError, match="valid time"):
        atna.render({"service": "packager", "action": "sign-in", "outcome": "succeeded"})


def test_control_characters_in_an_error_still_give_well_formed_xml(store: Store) -> None:
    """A peer's error text may hold any byte; the message stays parseable and valid."""
    event = _stored(store, "forwarder", "forward", outcome="failed", error="bad\x00\x1b[0m end")

    doc = _valid(atna.render(event))

    assert _one(doc, "EventIdentification/EventOutcomeDescription").text == "bad??[0m end"
