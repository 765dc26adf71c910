"""A real package run leaves audit events that become valid DICOM audit messages.

Orthanc, the retriever, lookup (MariaDB) and the packager run for real; every event the run
writes to the bucket is rendered (`atna.render`) and checked against PS3.15 A.5.1's schema.
The events carry the PatientID and the study (with its SOP classes) that ATNA names; the
patient's name is in no message.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pydicom
from lxml import etree

from dicomiso_common import atna
from support.atna import valid
from support.mariadb import add_patient


def _events(stack: Any) -> list[dict[str, Any]]:
    return [stack.store.get_json(k)[0] for k in stack.keys("audit/")]


def _one(events: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [e for e in events if all(e.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(e["service"], e["action"], e["outcome"]) for e in events])
    return found[0]


def _event_id(message: etree._Element) -> str:
    found = message.find("EventIdentification/EventID")
    assert found is not None
    return str(found.get("csd-code"))


def test_a_package_run_is_audited_as_query_transfer_and_export(
    make_stack: Any, orthanc: Any, study_factory: Any
) -> None:
    """C-FIND -> Query, the C-MOVE -> Begin Transferring and Instances Transferred, the disc
    and a new link -> Export with Destination Media; each names patient and study."""
    study = study_factory(
        ct=2, mr=1, with_ko=False, with_pr=False, with_multiframe=False, patient_id="RM-ATNA-1"
    )
    orthanc.upload(study.files)
    stack = make_stack()
    add_patient(stack.his, "RM-ATNA-1", "Dewi Anggraini", [study.accession])

    status = stack.run({"accession_numbers": [study.accession]})
    assert status["state"] == "succeeded", status
    assert stack.packager.post(f"/v1/packages/{status['id']}/link").status_code == 200
    preview = stack.packager.post("/v1/previews", json={"accession_numbers": [study.accession]})
    assert preview.status_code == 200, preview.text

    events = _events(stack)
    built = _one(events, service="packager", action="package", outcome="succeeded")
    assert built["patient_id"] == "RM-ATNA-1"
    assert built["study_uids"] == [study.study_uid]
    classes = Counter(
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in study.files
    )
    assert built["sop_classes"] == {study.study_uid: dict(classes)}
    relinked = _one(events, service="packager", action="link", via="page")
    assert (relinked["patient_id"], relinked["study_uids"]) == ("RM-ATNA-1", [study.study_uid])
    looked_up = _one(events, service="packager", action="preview", outcome="succeeded")
    assert looked_up["patient_ids"] == ["RM-ATNA-1"]
    queried = _one(events, service="retriever", action="query", user=atna.SYSTEM_USER)
    assert (queried["patient_id"], queried["peer_aet"]) == ("RM-ATNA-1", orthanc.aet)
    assert queried["query"] == {"QueryRetrieveLevel": "STUDY", "AccessionNumber": study.accession}
    moved = _one(events, service="retriever", action="retrieve", outcome="succeeded")
    assert moved["sop_classes"] == {study.study_uid: dict(classes)}

    rendered = {e["id"]: atna.render(e) for e in events}
    messages = {i: valid(x) for i, x in rendered.items() if x is not None}
    ids = Counter(_event_id(m) for m in messages.values())
    assert ids["110106"] >= 2 and ids["110112"] >= 2, ids  # export: disc + link; queries
    assert ids["110102"] >= 1 and ids["110104"] >= 1, ids
    export = messages[built["id"]]
    assert export.xpath("ParticipantObjectIdentification/@ParticipantObjectID") == [
        "RM-ATNA-1",
        study.study_uid,
    ]
    everything = b"".join(x for x in rendered.values() if x is not None)
    assert b"Dewi" not in everything and b"Anggraini" not in everything
    assert b"Signature" not in everything
    assert "Dewi" not in json.dumps(events)
