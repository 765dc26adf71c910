"""Self-tests of the harness: every fixture and helper must work for real.

Later tests assert things like "the PACS received no C-FIND at all" on top of
these helpers, so the helpers themselves are proven here against a real
Orthanc, real DCMTK and a real moto server.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AllStoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from support.dcmtk import StoreSCP, dcmtk_bin, dcmtk_env
from support.net import LOOPBACK, NoDelayAE, free_port, nodelay_server, wait_for_port
from support.orthanc import Orthanc
from support.studies import Study, make_ct_series, make_study

if TYPE_CHECKING:  # only for annotations: "conftest" is ambiguous at runtime (one per dir)
    from conftest import OrthancFactory, S3Bucket, StudyFactory

# Study Root Q/R models (pynetdicom generates its SOP class names at runtime, invisible to mypy).
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"


def _associate(pacs: Orthanc, aet: str, *contexts: str) -> Association:
    ae = NoDelayAE(ae_title=aet)
    for context in contexts:
        ae.add_requested_context(context)
    return ae.associate(LOOPBACK, pacs.dicom_port, ae_title=pacs.aet)


def _stored_uid(event: Event) -> str:
    return str(cast(C_STORE, event.request).AffectedSOPInstanceUID)


def _study_query(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def _c_find(pacs: Orthanc, aet: str, study_uid: str) -> list[int | None]:
    """Statuses of one study-level C-FIND; ``[None]`` means the association was aborted."""
    assoc = _associate(pacs, aet, FIND)
    assert assoc.is_established
    responses = assoc.send_c_find(_study_query(study_uid), FIND)
    statuses = [s.Status if s else None for s, _ in responses]
    if assoc.is_established:
        assoc.release()
    return statuses


def _c_move(pacs: Orthanc, aet: str, dest: str, study_uid: str) -> Dataset | None:
    """Final C-MOVE response (``None`` if the association was aborted)."""
    assoc = _associate(pacs, aet, MOVE)
    assert assoc.is_established
    last = None
    for status, _ in assoc.send_c_move(_study_query(study_uid), dest, MOVE):
        last = status or None
    if assoc.is_established:
        assoc.release()
    return last


@pytest.fixture
def uploaded(orthanc: Orthanc, study_factory: StudyFactory) -> Study:
    study = study_factory()
    orthanc.upload(study.files)
    return study


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    with StoreSCP(tmp_path / "received", aet="HARNESSRCV") as scp:
        yield scp


def test_net_helpers() -> None:
    port = free_port()
    with pytest.raises(TimeoutError):
        wait_for_port(LOOPBACK, port, timeout=0.2)
    with pytest.raises(ValueError):
        wait_for_port("example.invalid", port, timeout=0.1)


def test_dcmtk_tools_are_dcmtk_not_pynetdicom_apps() -> None:
    path = dcmtk_bin("storescp")
    assert ".venv" not in path
    assert dcmtk_env()["TCP_NODELAY"] == "1"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    assert "$dcmtk: storescp" in out.stdout


def test_generator_output_passes_dciodvfy(tmp_path: Path) -> None:
    studies = [make_study(tmp_path / "a"), make_study(tmp_path / "b", patient_name="Nuñez^José")]
    kinds = {i.kind for i in studies[0].instances}
    assert kinds == {"ct", "mr", "sr", "ko", "pr", "sc", "nonascii", "mf"}
    samples = [s.of_kind(k)[0].path for s in studies for k in sorted(kinds)]
    for path in samples:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [ln for ln in (result.stdout + result.stderr).splitlines() if "Error" in ln]
        assert not errors, f"{path.name}: {errors}"


def test_generator_attributes(tmp_path: Path) -> None:
    study = make_study(tmp_path, accession="ACCX", patient_id="PIDX")
    datasets = [pydicom.dcmread(p) for p in study.files]
    assert len(set(study.sop_uids)) == len(study.files) == 11
    assert len(study.series_uids) == 8
    for ds in datasets:
        assert (ds.StudyInstanceUID, ds.PatientID, ds.AccessionNumber) == (
            study.study_uid,
            "PIDX",
            "ACCX",
        )
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    nonascii = pydicom.dcmread(study.of_kind("nonascii")[0].path)
    assert nonascii.SpecificCharacterSet == "ISO_IR 192"
    assert str(nonascii.PatientName) == "Dóe^Jane"
    assert pydicom.dcmread(study.of_kind("mf")[0].path).pixel_array.shape == (4, 64, 64)
    assert pydicom.dcmread(study.of_kind("sc")[0].path).pixel_array.shape == (64, 64, 3)
    again = make_study(tmp_path / "again", accession="ACCX", patient_id="PIDX")
    assert again.study_uid != study.study_uid
    assert pydicom.dcmread(again.files[0]).PixelData == datasets[0].PixelData  # seeded


def test_make_ct_series(tmp_path: Path) -> None:
    study = make_ct_series(tmp_path, 5, rows=128, cols=128)
    datasets = [pydicom.dcmread(p) for p in study.files]
    assert [ds.InstanceNumber for ds in datasets] == [1, 2, 3, 4, 5]
    assert len({ds.SOPInstanceUID for ds in datasets}) == 5
    assert datasets[0].pixel_array.shape == (128, 128) and datasets[0].BitsAllocated == 16


def test_study_factory_makes_unique_accessions(study_factory: StudyFactory) -> None:
    first, second = study_factory(ct=1, mr=0), study_factory(ct=1, mr=0)
    assert first.accession != second.accession and len(first.accession) <= 16
    assert first.files[0].parent != second.files[0].parent


def test_orthanc_stores_every_file_byte_for_byte(
    orthanc: Orthanc, study_factory: StudyFactory
) -> None:
    studies = [study_factory(), study_factory(patient_name="Nuñez^José")]
    for study in studies:
        ids = orthanc.upload(study.files)
        assert study.study_uid in orthanc.study_uids()
        assert sorted(orthanc.instance_ids_of_study(study.study_uid)) == sorted(ids)
        assert orthanc.sop_uids_of_study(study.study_uid) == set(study.sop_uids)
        for orthanc_id, path in zip(ids, study.files, strict=True):
            assert orthanc.instance_file(orthanc_id) == path.read_bytes()


def test_c_move_to_dcmtk_storescp(orthanc: Orthanc, uploaded: Study, storescp: StoreSCP) -> None:
    orthanc.register_modality(storescp.aet, LOOPBACK, storescp.port)
    orthanc.mark()
    final = _c_move(orthanc, storescp.aet, storescp.aet, uploaded.study_uid)
    assert final is not None and final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == len(uploaded.files)
    assert storescp.sop_uids() == set(uploaded.sop_uids)
    received = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in storescp.files()}
    for inst in uploaded.instances:  # every data element (file meta aside) arrives unchanged
        assert received[inst.sop_instance_uid] == pydicom.dcmread(inst.path)
    assert (orthanc.move_requests(), orthanc.find_requests(), orthanc.get_requests()) == (1, 0, 0)


def test_counters_count_exactly(orthanc: Orthanc, uploaded: Study) -> None:
    orthanc.register_modality("HARNESSQ", LOOPBACK, free_port())
    orthanc.mark()
    assert orthanc.find_requests() == 0 and orthanc.associations() == 0
    assert _c_find(orthanc, "HARNESSQ", uploaded.study_uid) == [0xFF00, 0x0000]
    assert orthanc.find_requests() == 1
    assert orthanc.associations() == 1
    threads = [
        threading.Thread(target=_c_move, args=(orthanc, "HARNESSQ", "NOWHERE", "1.2.3"))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert orthanc.move_requests() == 2 and orthanc.find_requests() == 1
    orthanc.mark()
    assert (orthanc.find_requests(), orthanc.move_requests()) == (0, 0)


def test_unknown_aet_aborted_but_counted(orthanc: Orthanc, uploaded: Study) -> None:
    orthanc.mark()
    assert _c_find(orthanc, "STRANGER", uploaded.study_uid) == [None]  # A-ABORT, no status
    assert orthanc.find_requests() == 1 and orthanc.count("refused_request") == 1
    assert _c_move(orthanc, "STRANGER", "STRANGER", uploaded.study_uid) is None
    assert orthanc.move_requests() == 1


def test_unknown_move_destination_fails(orthanc: Orthanc, uploaded: Study) -> None:
    orthanc.register_modality("HARNESSQ", LOOPBACK, free_port())
    final = _c_move(orthanc, "HARNESSQ", "NOSUCHDEST", uploaded.study_uid)
    assert final is not None and final.Status == 0xC000


def test_c_get_with_role_selection(orthanc: Orthanc, uploaded: Study) -> None:
    orthanc.register_modality("HARNESSGET", LOOPBACK, free_port())
    orthanc.mark()
    for sop_classes in (sorted(set(uploaded.sop_classes.values())), ["1.2.840.10008.5.1.4.1.1.2"]):
        got: list[str] = []

        def on_store(event: Event, got: list[str] = got) -> int:
            got.append(_stored_uid(event))
            return 0x0000

        ae = NoDelayAE(ae_title="HARNESSGET")
        ae.add_requested_context(GET)
        for sop_class in sop_classes:
            ae.add_requested_context(sop_class, pydicom.uid.ExplicitVRLittleEndian)
        roles: list[Any] = [build_role(sop_class, scp_role=True) for sop_class in sop_classes]
        assoc = ae.associate(
            LOOPBACK,
            orthanc.dicom_port,
            ae_title=orthanc.aet,
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        final = [s for s, _ in assoc.send_c_get(_study_query(uploaded.study_uid), GET)][-1]
        assoc.release()
        if len(sop_classes) > 1:
            assert final.Status == 0x0000 and set(got) == set(uploaded.sop_uids)
        else:  # the first sub-operation lacking a presentation context fails the whole C-GET
            assert final.Status == 0xC000 and final.NumberOfFailedSuboperations >= 1
            assert set(got) < set(uploaded.sop_uids)
    assert orthanc.get_requests() == 2 and orthanc.find_requests() == 0


def test_reject_policy_and_modality_registration(orthanc_factory: OrthancFactory) -> None:
    # Orthanc sends A-ASSOCIATE-RJ and closes at once; pynetdicom then reports either
    # is_rejected or is_aborted depending on a race, so only "not established" is asserted
    # and Orthanc's own log proves the rejection.
    pacs = orthanc_factory("REJECTPACS", unknown_aets="reject")
    assert not _associate(pacs, "NEWCOMER", FIND).is_established
    pacs.register_modality("NEWCOMER", LOOPBACK, free_port())
    assoc = _associate(pacs, "NEWCOMER", FIND)
    assert assoc.is_established
    assoc.release()
    assert not _associate(pacs, "newcomer", FIND).is_established  # AE titles are case-sensitive
    pacs.unregister_modality("NEWCOMER")
    assert not _associate(pacs, "NEWCOMER", FIND).is_established
    assert pacs.count("rejected_association") == 3 and pacs.associations() == 4
    ae = NoDelayAE(ae_title="NEWCOMER")
    ae.add_requested_context(FIND)
    assert not ae.associate(LOOPBACK, pacs.dicom_port, ae_title="WRONGCALLED").is_established
    assert pacs.count("rejected_association") == 4


def test_check_modality_host(orthanc_factory: OrthancFactory) -> None:
    pacs = orthanc_factory("HOSTPACS", unknown_aets="reject", check_modality_host=True)
    pacs.register_modality("HOSTED", "localhost", free_port())
    assert not _associate(pacs, "HOSTED", FIND).is_established  # Host compared as a string
    assert pacs.count("rejected_association") == 1
    pacs.register_modality("HOSTED", LOOPBACK, free_port())
    assoc = _associate(pacs, "HOSTED", FIND)
    assert assoc.is_established
    assoc.release()


def test_kill_mid_transfer_then_restart(orthanc_factory: OrthancFactory, tmp_path: Path) -> None:
    pacs = orthanc_factory("CRASHPACS")
    study = make_ct_series(tmp_path / "ct", 20, rows=64, cols=64)
    pacs.upload(study.files)
    received: list[str] = []
    crashed = threading.Event()

    def slow_store(event: Event) -> int:  # slow until the crash, so the kill lands mid-move
        received.append(_stored_uid(event))
        if not crashed.is_set():
            time.sleep(0.1)
        return 0x0000

    scp_ae = NoDelayAE(ae_title="SLOWRCV")
    scp_ae.supported_contexts = AllStoragePresentationContexts[:120]
    port = free_port()
    server = scp_ae.start_server(
        (LOOPBACK, port), block=False, evt_handlers=[(evt.EVT_C_STORE, slow_store)]
    )
    assert server is not None
    nodelay_server(server)
    try:
        pacs.register_modality("SLOWRCV", LOOPBACK, port)
        ports = (pacs.dicom_port, pacs.http_port)
        result: list[Dataset | None] = []
        mover = threading.Thread(
            target=lambda: result.append(_c_move(pacs, "SLOWRCV", "SLOWRCV", study.study_uid))
        )
        mover.start()
        deadline = time.monotonic() + 10
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        pacs.kill()
        crashed.set()
        mover.join(timeout=30)
        assert result == [None] and 2 <= len(received) < 20  # association died mid-move
        pacs.start()
        assert (pacs.dicom_port, pacs.http_port) == ports
        assert pacs.sop_uids_of_study(study.study_uid) == set(study.sop_uids)
        assert pacs.move_requests() == 0  # counters restart with the process
        final = _c_move(pacs, "SLOWRCV", "SLOWRCV", study.study_uid)  # registration re-applied
        assert final is not None and final.Status == 0x0000
        pacs.clear()
        assert pacs.study_uids() == []
    finally:
        server.shutdown()


def test_s3_bucket_round_trip(s3_bucket: S3Bucket) -> None:
    assert s3_bucket.endpoint_url.startswith(f"http://{LOOPBACK}:")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="a/b.dcm", Body=b"DICM" * 1000)
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="a/b.dcm")["Body"].read()
    assert body == b"DICM" * 1000
    listed = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)
    assert [o["Key"] for o in listed["Contents"]] == ["a/b.dcm"]
