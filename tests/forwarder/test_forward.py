"""Forwarding studies from the bucket to real peers: Orthanc and dcmtk storescp."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from dicomiso_common.store import Store
from support.dcmtk import StoreSCP, dcmtk_bin, dcmtk_env
from support.dicomcmp import same_dataset
from support.net import free_port
from support.studies import many_classes

from .conftest import seed


def _peer(aet: str, port: int, **kw: Any) -> dict[str, Any]:
    return {"aet": aet, "host": "127.0.0.1", "port": port, **kw}


@pytest.mark.parametrize("kind", ["orthanc", "dcmqrscp"])
def test_study_arrives_complete_at_the_peer(
    make_forwarder: Any,
    orthanc_factory: Any,
    dcmqrscp_factory: Any,
    study_factory: Any,
    store: Store,
    kind: str,
) -> None:
    """Every instance of a multi-series, multi-SOP-class study equals the source at the peer.

    dcmqrscp names stored files by time, so two associations storing at once can overwrite
    one another's file: its peer entry has max_associations 1 (README, peer settings).
    """
    if kind == "orthanc":
        peer, extra = orthanc_factory(aet="PEERPACS"), {}
    else:
        peer, extra = dcmqrscp_factory(aet="PEERPACS"), {"max_associations": 1}
    study = study_factory()
    seed(store, study.files, study.accession)
    forwarder = make_forwarder({"peer": _peer("PEERPACS", peer.dicom_port, **extra)})

    status = forwarder.run({"accession_numbers": [study.accession], "destination": "peer"})

    n = len(study.files)
    assert status["state"] == "succeeded", status
    assert status["counts"]["acknowledged"] == n and status["counts"]["pending"] == 0
    assert set(status["instances"]) == set(study.sop_uids)
    by_sop = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in study.files}
    ids = peer.instance_ids_of_study(study.study_uid)
    assert len(ids) == n
    for instance_id in ids:
        theirs = peer.instance_file(instance_id)
        sop = pydicom.dcmread(io.BytesIO(theirs), stop_before_pixels=True)
        assert same_dataset(by_sop[sop.SOPInstanceUID].read_bytes(), theirs) == []


def _jpeg(files: list[Path], out: Path) -> list[Path]:
    """JPEG Lossless (process 14 SV1) copies made by dcmtk's dcmcjpeg."""
    out.mkdir()
    made = []
    for path in files:
        target = out / path.name
        subprocess.run([dcmtk_bin("dcmcjpeg"), str(path), str(target)], check=True, env=dcmtk_env())
        made.append(target)
    return made


def test_jpeg_study_reaches_an_uncompressed_only_peer_transcoded(
    make_forwarder: Any, study_factory: Any, store: Store, tmp_path: Path
) -> None:
    study = study_factory(
        ct=4,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )
    jpeg = _jpeg(study.files, tmp_path / "jpeg")
    assert pydicom.dcmread(jpeg[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    seed(store, jpeg, study.accession)
    with StoreSCP(tmp_path / "recv", aet="PLAINSCP", accept=("+xe",)) as scp:
        forwarder = make_forwarder({"plain": _peer("PLAINSCP", scp.port)})
        status = forwarder.run({"accession_numbers": [study.accession], "destination": "plain"})
        received = scp.wait_for_files(len(jpeg))

    assert status["state"] == "succeeded", status
    assert status["counts"]["transcoded"] == len(jpeg)
    assert all(r["transcoded"] for r in status["instances"].values())
    originals = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in study.files}
    for path in received:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.pixel_array.tobytes() == originals[ds.SOPInstanceUID].pixel_array.tobytes()


def test_peer_down_is_retried_then_fails_with_the_reason(
    make_forwarder: Any, study_factory: Any, store: Store
) -> None:
    study = study_factory(
        ct=1,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )
    seed(store, study.files, study.accession)
    forwarder = make_forwarder({"gone": _peer("GONE", free_port())}, send_attempts=3)

    status = forwarder.run({"accession_numbers": [study.accession], "destination": "gone"})

    assert status["state"] == "failed"
    assert "unreachable" in status["error"] and "after 3 attempts" in status["error"]
    assert status["counts"]["acknowledged"] == 0


def test_rerun_after_the_peer_died_sends_only_the_rest(
    make_forwarder: Any, study_factory: Any, store: Store, tmp_path: Path
) -> None:
    study = study_factory(
        ct=120,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
        rows=128,
        cols=128,
    )
    seed(store, study.files, study.accession)
    port = free_port()
    first = StoreSCP(tmp_path / "first", aet="FLAKY", port=port)
    first.start()
    forwarder = make_forwarder({"flaky": _peer("FLAKY", port, max_associations=1)}, send_attempts=2)
    body = {"accession_numbers": [study.accession], "destination": "flaky"}
    job = forwarder.post(body).json()["id"]
    first.wait_for_files(10, timeout=30)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    failed = forwarder.wait(job)
    first.stop()
    acknowledged = failed["counts"]["acknowledged"]
    assert failed["state"] == "failed" and 10 <= acknowledged < len(study.files)

    with StoreSCP(tmp_path / "second", aet="FLAKY", port=port) as second:
        again = forwarder.post(body).json()
        assert again["id"] == job
        done = forwarder.wait(job)
        resent = second.sop_uids()

    assert done["state"] == "succeeded" and done["attempt"] == 2
    assert len(resent) == len(study.files) - acknowledged
    # by file name (MODALITY.<SOP UID>.dcm): the file being written when storescp died is cut
    landed_first = {p.name.split(".", 1)[1].removesuffix(".dcm") for p in first.files()}
    assert resent | landed_first == set(study.sop_uids)


@pytest.mark.parametrize(
    "body",
    [
        {"accession_numbers": ["A1"], "destination": "nowhere"},
        {"accession_numbers": ["A1"], "destination": "peer", "host": "127.0.0.1", "port": 104},
        {"accession_numbers": ["A1"], "destination": {"aet": "X", "host": "127.0.0.1"}},
        {"study_uids": ["1.2.x"], "destination": "peer"},
        {"study_uids": ["../1"], "destination": "peer"},
        {"accession_numbers": ["A*"], "destination": "peer"},
        {"accession_numbers": ["A1"], "study_uids": ["1.2"], "destination": "peer"},
        {"destination": "peer"},
    ],
)
def test_bad_requests_are_422_and_send_nothing(
    make_forwarder: Any, store: Store, tmp_path: Path, body: dict[str, Any]
) -> None:
    with StoreSCP(tmp_path / "recv", aet="PEER") as scp:
        forwarder = make_forwarder({"peer": _peer("PEER", scp.port)})
        response = forwarder.post(body)
        time.sleep(0.2)
        assert response.status_code == 422, response.text
        assert scp.files() == []
    assert list(store.list("jobs/")) == []


def test_140_sop_classes_go_through_despite_the_128_context_limit(
    make_forwarder: Any, store: Store, tmp_path: Path
) -> None:
    files = many_classes(tmp_path / "many", 300, 140)
    study_uid = seed(store, files)
    with StoreSCP(tmp_path / "recv", aet="ANYSCP", accept=("--accept-all", "--promiscuous")) as scp:
        forwarder = make_forwarder({"any": _peer("ANYSCP", scp.port, max_associations=1)})
        status = forwarder.run({"study_uids": [study_uid], "destination": "any"})
        scp.wait_for_files(300)

    assert status["state"] == "succeeded", status
    assert status["counts"]["acknowledged"] == 300


def test_peers_lists_names_aets_and_reachability_only(make_forwarder: Any, tmp_path: Path) -> None:
    with StoreSCP(tmp_path / "recv", aet="LIVE") as scp:
        forwarder = make_forwarder(
            {"live": _peer("LIVE", scp.port), "dead": _peer("DEAD", free_port())}
        )
        peers = forwarder.client.get("/v1/peers").json()

    assert [(p["name"], p["aet"], p["reachable"]) for p in peers] == [
        ("dead", "DEAD", False),
        ("live", "LIVE", True),
    ]
    assert all("host" not in p and "port" not in p for p in peers)
