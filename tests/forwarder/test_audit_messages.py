"""A forward's audit events name the nodes and the studies, and become valid DICOM audit
messages: Begin Transferring when asked, DICOM Instances Transferred when it ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom

from dicomiso_common import atna
from dicomiso_common.store import Store
from support.atna import valid
from support.dcmtk import StoreSCP
from support.net import free_port

from .conftest import seed

SMALL = {
    "ct": 2,
    "mr": 0,
    "with_sr": False,
    "with_ko": False,
    "with_pr": False,
    "with_sc": False,
    "with_nonascii": False,
    "with_multiframe": False,
}


def _forward_events(store: Store) -> list[dict[str, Any]]:
    events = [store.get_json(o.key)[0] for o in store.list("audit/")]
    return sorted((e for e in events if e["action"] == "forward"), key=lambda e: e["at"])


def _nodes(message: Any) -> dict[str, str]:
    """Role code -> UserID of the active participants."""
    return {
        str(p.find("RoleIDCode").get("csd-code")): str(p.get("UserID"))
        for p in message.findall("ActiveParticipant")
        if p.find("RoleIDCode") is not None
    }


def test_a_forward_is_begin_transferring_then_instances_transferred(
    make_forwarder: Any, study_factory: Any, store: Store, tmp_path: Path
) -> None:
    """Source is our AE title, destination the peer's; the study and its patient by id."""
    study = study_factory(**SMALL)
    patient_id = str(pydicom.dcmread(study.files[0], stop_before_pixels=True).PatientID)
    seed(store, study.files, study.accession)
    with StoreSCP(tmp_path / "recv", aet="PLAINSCP") as scp:
        forwarder = make_forwarder(
            {"plain": {"aet": "PLAINSCP", "host": "127.0.0.1", "port": scp.port}}
        )
        status = forwarder.run({"accession_numbers": [study.accession], "destination": "plain"})
    assert status["state"] == "succeeded", status

    asked, ended = _forward_events(store)
    assert (asked["outcome"], ended["outcome"]) == ("requested", "succeeded")
    assert ended["peer_aet"] == asked["peer_aet"] == "PLAINSCP"
    assert (ended["patient_id"], ended["study_uids"]) == (patient_id, [study.study_uid])
    begin, done = valid(atna.render(asked)), valid(atna.render(ended))
    assert begin.find("EventIdentification/EventID").get("csd-code") == "110102"  # type: ignore[union-attr]
    assert done.find("EventIdentification/EventID").get("csd-code") == "110104"  # type: ignore[union-attr]
    ours = ended["our_aet"]
    assert ours and ours == asked["our_aet"]
    assert _nodes(done) == {"110153": ours, "110152": "PLAINSCP"}
    assert done.xpath("ParticipantObjectIdentification/@ParticipantObjectID") == [
        patient_id,
        study.study_uid,
    ]


def test_a_failed_forward_is_a_serious_failure_with_its_reason(
    make_forwarder: Any, study_factory: Any, store: Store
) -> None:
    study = study_factory(**SMALL)
    seed(store, study.files, study.accession)
    port = free_port()
    forwarder = make_forwarder({"gone": {"aet": "GONE", "host": "127.0.0.1", "port": port}})

    status = forwarder.run({"accession_numbers": [study.accession], "destination": "gone"})

    assert status["state"] == "failed"
    ended = _forward_events(store)[-1]
    done = valid(atna.render(ended))
    event = done.find("EventIdentification")
    assert event is not None and event.get("EventOutcomeIndicator") == "8"
    assert "unreachable" in (event.findtext("EventOutcomeDescription") or "")
