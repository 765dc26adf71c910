"""Delivery by STOW-RS to a real DICOMweb peer: Orthanc 1.10 with Debian's DICOMweb plugin."""

from __future__ import annotations

import hashlib
import io
import threading
import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomiso_common.dicom import instance_key
from dicomiso_common.store import Store
from dicomiso_forwarder.send import Item
from dicomiso_forwarder.stow import plan_stow, read_response
from support.orthanc import Orthanc
from support.peers import dicomweb_config, dicomweb_url
from support.tcpproxy import TcpProxy

from .conftest import seed


class CountingProxy(TcpProxy):
    """Counts HTTP POSTs passing to the peer and cuts the first `cut` of them."""

    def __init__(self, target_port: int, cut: int = 0) -> None:
        super().__init__(target_port)
        self.posts = 0
        self.cut = cut
        self._count_lock = threading.Lock()

    def passes(self, data: bytes) -> bool:
        if not data.startswith(b"POST "):
            return True
        with self._count_lock:
            self.posts += 1
            return self.posts > self.cut


@pytest.fixture
def web_pacs(orthanc_factory: Any) -> Orthanc:
    pacs: Orthanc = orthanc_factory(aet="WEBPACS", extra_config=dicomweb_config())
    return pacs


def _web_peer(url: str, **kw: Any) -> dict[str, Any]:
    return {"type": "dicomweb", "url": url, **kw}


def test_stow_delivers_the_study_byte_equal_in_batches(
    make_forwarder: Any, web_pacs: Orthanc, study_factory: Any, store: Store
) -> None:
    """Every instance of a multi-SOP-class study arrives as stored in the bucket (STOW-RS
    carries the Part 10 file as is), sent in several requests of at most 3 instances."""
    study = study_factory()
    seed(store, study.files, study.accession)
    proxy = CountingProxy(web_pacs.http_port).start()
    try:
        url = f"http://127.0.0.1:{proxy.port}/dicom-web"
        forwarder = make_forwarder({"web": _web_peer(url, batch_instances=3)})
        status = forwarder.run({"accession_numbers": [study.accession], "destination": "web"})
    finally:
        proxy.stop()

    n = len(study.files)
    assert status["state"] == "succeeded", status
    assert status["counts"]["acknowledged"] == n and status["counts"]["pending"] == 0
    assert proxy.posts == -(-n // 3)  # ceil: one request per batch
    source = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in study.files}
    ids = web_pacs.instance_ids_of_study(study.study_uid)
    assert len(ids) == n
    for orthanc_id in ids:
        theirs = web_pacs.instance_file(orthanc_id)
        sop = pydicom.dcmread(io.BytesIO(theirs), stop_before_pixels=True)
        assert theirs == source[sop.SOPInstanceUID].read_bytes()


def _plant_foreign_instance(store: Store, study_uid: str, path: Path) -> str:
    """Overwrite one instance in the bucket with a copy that names another study (a corrupt
    bucket object); returns its SOP Instance UID."""
    ds = pydicom.dcmread(path)
    key = instance_key(study_uid, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    ds.StudyInstanceUID = generate_uid()
    foreign = path.with_suffix(".foreign")
    ds.save_as(foreign, enforce_file_format=True)
    data = foreign.read_bytes()
    store.put_bytes(key, data, metadata={"sha256": hashlib.sha256(data).hexdigest()})
    return str(ds.SOPInstanceUID)


def test_an_instance_the_peer_refuses_fails_alone_with_its_reason(
    make_forwarder: Any, web_pacs: Orthanc, study_factory: Any, store: Store
) -> None:
    """Orthanc lists an instance of another study than the request's in the Failed SOP
    Sequence (0x0110) and stores the rest: the job fails naming the reason, that instance is
    `failed` with the code, the others are acknowledged and at the peer."""
    study = study_factory(ct=3, mr=0, with_sr=False, with_ko=False, with_pr=False)
    seed(store, study.files, study.accession)
    bad = _plant_foreign_instance(store, study.study_uid, study.files[1])
    forwarder = make_forwarder({"web": _web_peer(dicomweb_url(web_pacs))})

    status = forwarder.run({"accession_numbers": [study.accession], "destination": "web"})

    assert status["state"] == "failed", status
    assert "1 of" in status["error"] and "0x0110" in status["error"], status["error"]
    assert status["instances"][bad]["status"] == "failed"
    assert status["instances"][bad]["code"] == 0x0110
    good = set(study.sop_uids) - {bad}
    assert all(status["instances"][u]["status"] == "acknowledged" for u in good)
    assert web_pacs.sop_uids_of_study(study.study_uid) == good


def test_a_cut_connection_is_retried_and_a_rerun_sends_only_what_is_missing(
    make_forwarder: Any, web_pacs: Orthanc, study_factory: Any, store: Store
) -> None:
    """The first STOW-RS connection is cut mid-request: the batch is tried again. An instance
    missing from the bucket fails the job; once it is back, the same request again sends
    that one instance only (one request), from forwards/{id}/results.json."""
    study = study_factory(ct=3, mr=2, with_sr=False, with_ko=False, with_pr=False)
    seed(store, study.files, study.accession)
    ds = pydicom.dcmread(study.files[0], stop_before_pixels=True)
    key = instance_key(study.study_uid, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    kept = study.files[0].read_bytes()  # what seed() put there
    store.delete(key)
    proxy = CountingProxy(web_pacs.http_port, cut=1).start()
    try:
        url = f"http://127.0.0.1:{proxy.port}/dicom-web"
        forwarder = make_forwarder({"web": _web_peer(url, batch_instances=2)})
        body = {"accession_numbers": [study.accession], "destination": "web"}
        first = forwarder.run(body)
        assert first["state"] == "failed", first
        assert first["instances"][str(ds.SOPInstanceUID)]["reason"] == (
            "instance missing from the bucket"
        )
        assert first["counts"]["acknowledged"] == len(study.files) - 1
        batches = -(-len(study.files) // 2)
        assert proxy.posts == batches + 1  # the cut one was sent again

        store.put_bytes(key, kept)
        posts_before = proxy.posts
        second = forwarder.run(body)
    finally:
        proxy.stop()
    assert second["state"] == "succeeded", (second["error"], second["counts"], second["instances"])
    assert proxy.posts - posts_before == 1
    assert web_pacs.sop_uids_of_study(study.study_uid) == set(study.sop_uids)


def test_a_refused_token_fails_the_job_without_showing_it(
    make_forwarder: Any, orthanc_factory: Any, study_factory: Any, store: Store, tmp_path: Path
) -> None:
    """An archive that wants another bearer token answers 403 (Orthanc's Lua HTTP filter
    checks the Authorization header): each instance fails with "HTTP 403 (not allowed)",
    nothing is stored, and the token is nowhere in the job's status. With the right token,
    read from the mounted file at each use, the same forward succeeds."""
    right = "right-" + uuid.uuid4().hex
    lua = tmp_path / "bearer.lua"
    lua.write_text(
        "function IncomingHttpRequestFilter(method, uri, ip, username, headers)\n"
        "  if string.sub(uri, 1, 10) ~= '/dicom-web' then return true end\n"
        f"  return headers['authorization'] == 'Bearer {right}'\n"
        "end\n"
    )
    pacs = orthanc_factory(aet="AUTHPACS", extra_config=dicomweb_config([lua]))
    token = tmp_path / "token"
    wrong = "wrong-" + uuid.uuid4().hex
    token.write_text(wrong + "\n")
    study = study_factory(ct=2, mr=0, with_sr=False, with_ko=False, with_pr=False)
    seed(store, study.files, study.accession)
    peer = _web_peer(dicomweb_url(pacs), auth="bearer", token_file=str(token))
    forwarder = make_forwarder({"web": peer})
    body = {"accession_numbers": [study.accession], "destination": "web"}

    refused = forwarder.run(body)

    assert refused["state"] == "failed", refused
    assert "HTTP 403 (not allowed)" in refused["error"]
    assert wrong not in str(refused)
    assert pacs.sop_uids_of_study(study.study_uid) == set()

    token.write_text(right)
    assert forwarder.run(body)["state"] == "succeeded"
    assert pacs.sop_uids_of_study(study.study_uid) == set(study.sop_uids)


def test_read_response_takes_warnings_and_names_what_is_missing() -> None:
    """A Referenced SOP with a Warning Reason is delivered as `warning`; 0xA7xx is tried
    again; an instance in neither sequence failed (Orthanc drops unparsable parts so)."""
    items = [Item(f"k{n}", f"1.2.{n}", "1.2.840.10008.5.1.4.1.1.2", "1.2", "9.9") for n in range(4)]

    def ref(uid: str, **tags: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"00081155": {"vr": "UI", "Value": [uid]}}
        entry.update({tag: {"vr": "US", "Value": [v]} for tag, v in tags.items()})
        return entry

    body = {
        "00081199": {"vr": "SQ", "Value": [ref("1.2.0"), ref("1.2.1", **{"00081196": 0xB000})]},
        "00081198": {"vr": "SQ", "Value": [ref("1.2.2", **{"00081197": 0xA700})]},
    }
    outcomes, again = read_response(body, items)

    assert outcomes["1.2.0"].status == "acknowledged"
    assert (outcomes["1.2.1"].status, outcomes["1.2.1"].code) == ("warning", 0xB000)
    assert [i.sop_uid for i in again] == ["1.2.2"] and "1.2.2" not in outcomes
    assert outcomes["1.2.3"].status == "failed"
    assert outcomes["1.2.3"].reason == "not in the peer's STOW-RS response"


def test_batches_keep_one_study_and_the_byte_bound() -> None:
    items = [Item(f"k{n}", f"1.{n}", "c", "t", "S1" if n < 5 else "S2", 40) for n in range(8)]
    batches = plan_stow(items, max_instances=10, max_bytes=100)
    assert [[i.sop_uid for i in b] for b in batches] == [
        ["1.0", "1.1"],
        ["1.2", "1.3"],
        ["1.4"],
        ["1.5", "1.6"],
        ["1.7"],
    ]
