"""Storage Commitment (PS3.4 J) after the C-STOREs: Orthanc as the commitment SCP, and a peer
that never sends the N-EVENT-REPORT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from dicomiso_common.store import Store
from dicomiso_forwarder.commitment import PUSH_MODEL, PUSH_MODEL_INSTANCE, report_key
from support.net import LOOPBACK, free_port
from support.peers import register_commitment_scu, silent_commitment_scp

from .conftest import seed

US = "CDFORWARD"  # the forwarder's own AE title: the PACS reports to its commitment SCP


def _peer(aet: str, port: int) -> dict[str, Any]:
    return {"aet": aet, "host": LOOPBACK, "port": port, "commitment": True}


def test_orthanc_commits_every_instance(
    make_forwarder: Any, orthanc_factory: Any, study_factory: Any, store: Store
) -> None:
    """Orthanc answers the N-ACTION, then reports on a new association to our commitment
    SCP: every instance is "committed", the counts say so, the job succeeds."""
    pacs = orthanc_factory(aet="COMMITPACS")
    port = free_port()
    register_commitment_scu(pacs, US, port)
    study = study_factory()
    seed(store, study.files, study.accession)
    forwarder = make_forwarder(
        {"pacs": _peer("COMMITPACS", pacs.dicom_port)}, calling_aet=US, commitment_port=port
    )

    status = forwarder.run({"accession_numbers": [study.accession], "destination": "pacs"})

    n = len(study.files)
    assert status["state"] == "succeeded", (status["error"], status["instances"])
    assert status["counts"]["committed"] == n and status["counts"]["not_committed"] == 0
    assert {r["commitment"] for r in status["instances"].values()} == {"committed"}
    assert pacs.sop_uids_of_study(study.study_uid) == set(study.sop_uids)


def test_an_instance_the_peer_did_not_keep_is_not_committed(
    make_forwarder: Any, orthanc_factory: Any, study_factory: Any, store: Store, tmp_path: Path
) -> None:
    """Orthanc's Lua filter drops one instance after the C-STORE: the commitment report names
    it failed (0x0112, no such object instance), the job fails saying "not committed", and a
    re-run, the filter gone, sends it again and gets it committed."""
    study = study_factory(ct=3, mr=0, with_sr=False, with_ko=False, with_pr=False)
    dropped = study.sop_uids[1]
    lua = tmp_path / "drop.lua"
    lua.write_text(
        "function ReceivedInstanceFilter(dicom, origin, info)\n"
        f"  return dicom.SOPInstanceUID ~= '{dropped}'\n"
        "end\n"
    )
    pacs = orthanc_factory(aet="COMMITPACS", extra_config={"LuaScripts": [str(lua)]})
    port = free_port()
    register_commitment_scu(pacs, US, port)
    seed(store, study.files, study.accession)
    forwarder = make_forwarder(
        {"pacs": _peer("COMMITPACS", pacs.dicom_port)}, calling_aet=US, commitment_port=port
    )
    body = {"accession_numbers": [study.accession], "destination": "pacs"}

    status = forwarder.run(body)

    assert status["state"] == "failed", status
    assert "not committed" in status["error"] and "0x0112" in status["error"], status["error"]
    lost = status["instances"][dropped]
    assert lost["status"] == "acknowledged"  # Orthanc answers 0x0000 to what its filter drops
    assert lost["commitment"] == "not committed", lost
    assert "0x0112 (no such object instance)" in lost["commitment_reason"]
    others = set(study.sop_uids) - {dropped}
    assert all(status["instances"][u]["commitment"] == "committed" for u in others)
    assert status["counts"]["committed"] == len(others)

    lua.write_text("function ReceivedInstanceFilter(dicom, origin, info)\n  return true\nend\n")
    pacs.restart()
    again = forwarder.run(body)
    assert again["state"] == "succeeded", (again["error"], again["instances"][dropped])
    assert again["instances"][dropped]["commitment"] == "committed"


def test_a_peer_that_never_reports_is_a_failure(
    make_forwarder: Any, study_factory: Any, store: Store
) -> None:
    """A peer that accepts the N-ACTION and never sends the N-EVENT-REPORT: after
    DICOMISO_COMMITMENT_TIMEOUT the job fails and every instance is "not committed", although
    each C-STORE was acknowledged."""
    study = study_factory(ct=2, mr=1, with_sr=False, with_ko=False, with_pr=False)
    seed(store, study.files, study.accession)
    with silent_commitment_scp() as peer:
        forwarder = make_forwarder(
            {"silent": _peer(peer.aet, peer.port)},
            calling_aet=US,
            commitment_port=free_port(),
            commitment_timeout=2.0,
            commitment_poll=0.2,
        )
        status = forwarder.run({"accession_numbers": [study.accession], "destination": "silent"})

    assert status["state"] == "failed", status
    assert "no commitment report within 2 s" in status["error"]
    assert sorted(peer.requested) == sorted(study.sop_uids) and len(peer.transactions) == 1
    for result in status["instances"].values():
        assert result["status"] == "acknowledged"
        assert result["commitment"] == "not committed"
    assert status["counts"]["committed"] == 0
    assert status["counts"]["not_committed"] == len(study.files)


def test_a_report_on_the_same_association_is_taken(
    make_forwarder: Any, study_factory: Any, store: Store
) -> None:
    """A peer that sends the N-EVENT-REPORT on the N-ACTION's own association (PS3.4 J.3.3):
    with no commitment SCP at all (port 0) every instance is committed."""
    study = study_factory(ct=2, mr=0, with_sr=False, with_ko=False, with_pr=False)
    seed(store, study.files, study.accession)
    with silent_commitment_scp(report_on_same_association=True) as peer:
        forwarder = make_forwarder(
            {"same": _peer(peer.aet, peer.port)},
            calling_aet=US,
            commitment_port=0,
            commitment_timeout=30.0,
        )
        status = forwarder.run({"accession_numbers": [study.accession], "destination": "same"})

    assert status["state"] == "succeeded", (status["error"], status["instances"])
    assert {r["commitment"] for r in status["instances"].values()} == {"committed"}
    assert len(peer.transactions) == 1
    assert store.exists(report_key(peer.transactions[0]))


def test_a_report_for_a_transaction_we_never_asked_about_is_refused(
    make_forwarder: Any, store: Store
) -> None:
    """Our commitment SCP answers 0x0110 to an N-EVENT-REPORT whose Transaction UID no job
    asked for, and stores nothing; an AE title that is no commitment peer is rejected."""
    port = free_port()
    make_forwarder({"pacs": _peer("COMMITPACS", 11112)}, calling_aet=US, commitment_port=port)
    txn = generate_uid()
    info = Dataset()
    info.TransactionUID = txn
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = generate_uid()
    info.ReferencedSOPSequence = [ref]

    ae = AE(ae_title="COMMITPACS")
    ae.add_requested_context(PUSH_MODEL)
    assoc = ae.associate(LOOPBACK, port, ae_title=US)
    assert assoc.is_established
    status, _ = assoc.send_n_event_report(info, 1, PUSH_MODEL, PUSH_MODEL_INSTANCE)
    assoc.release()
    assert int(status.Status) == 0x0110
    assert not store.exists(report_key(txn))

    stranger = AE(ae_title="STRANGER")
    stranger.add_requested_context(PUSH_MODEL)
    refused = stranger.associate(LOOPBACK, port, ae_title=US)
    assert refused.is_rejected
