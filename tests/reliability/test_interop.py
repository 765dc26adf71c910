# ruff: noqa: F811 - fixtures imported from the service folders are parameters here
"""Interoperability: each operation against each PACS, the results as docs/conformance.md's matrix.

Orthanc 1.10.1 and dcmtk's dcmqrscp 3.6.7 are real, independent Q/R SCPs; dcmqrscp is also
run with the options that make it behave like the archives a site meets (Patient Root only,
big endian or JPEG on its moves, one association at a time, a 4 KiB PDU). Behaviours no
real server here offers on demand (padding, stray answers, silent drops, foreign instances,
aborts, wrong SOP classes) come from a small pynetdicom SCP (support.quirkypacs).

Every test records its cell; the last test of the module renders the matrix and compares it
with the block `interop-matrix` of docs/conformance.md. After a deliberate change:
`DICOMISO_WRITE_DOCS=1 uv run --frozen pytest tests/reliability/test_interop.py` rewrites it.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from forwarder.conftest import make_forwarder, seed, store  # noqa: F401 - fixtures
from lookup.conftest import make_lookup  # noqa: F401 - fixture
from pynetdicom import AllStoragePresentationContexts
from retriever.conftest import make_retriever  # noqa: F401 - fixture

from dicomiso_common.instances import open_instances
from dicomiso_common.manifests import load_manifest
from support.dcmtk import dcmtk_bin, dcmtk_env
from support.dicomcmp import same_dataset
from support.net import free_port
from support.quirkypacs import Quirks, QuirkyPacs
from support.stored import stored_sops
from support.studies import many_classes

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
OPS = ["lookup (C-FIND)", "C-MOVE", "C-GET", "forward (C-STORE)"]
ROWS: dict[str, str] = {}  # row key -> label, in the order the tests record them
CELLS: dict[tuple[str, str], str] = {}
MR = "1.2.840.10008.5.1.4.1.1.4"
# Storage SOP classes newer than dcmtk 3.6.7: Orthanc 1.10.1 (built on it) accepts them with
# UnknownSopClassAccepted but cannot send them as C-GET sub-operations (the association
# gets no context with the SCP role for them), as it cannot for private classes.
_NEWER_THAN_DCMTK_367 = {
    "1.2.840.10008.5.1.4.1.1." + s
    for s in (
        "11.12 481.23 481.24 481.25 6.3 66.7 66.8 77.1.8 77.1.9 88.77 9.1.4 9.100.1 9.100.2"
    ).split()
} | {"1.2.840.10008.5.1.4.34.10", "1.2.840.10008.5.1.4.34.7"}
STANDARD_CLASSES = sorted(
    str(c.abstract_syntax)
    for c in AllStoragePresentationContexts
    if str(c.abstract_syntax) not in _NEWER_THAN_DCMTK_367
)


def record(row: str, label: str, op: str, result: str) -> None:
    ROWS.setdefault(row, label)
    CELLS[(row, op)] = result


def small(study_factory: Any, **kw: Any) -> Any:
    """Two CT slices and one MR slice: two series, two SOP classes."""
    flags = dict.fromkeys(
        ("with_sr", "with_ko", "with_pr", "with_sc", "with_nonascii", "with_multiframe"), False
    )
    return study_factory(ct=2, mr=1, rows=32, cols=32, **{**flags, **kw})


def retrieve(make_retriever: Any, pacs: Any, study: Any, method: str, **kw: Any) -> Any:
    retriever = make_retriever(pacs=pacs, **kw)
    status = retriever.run({"accession_numbers": [study.accession], "method": method})
    return retriever, status


def stored(retriever: Any, study: Any) -> set[str]:
    return stored_sops(retriever.store, study.study_uid)


def stored_bytes(retriever: Any, study_uid: str) -> list[bytes]:
    """Every instance of the study's manifest, read as the packager reads it."""
    manifest = load_manifest(retriever.store, study_uid)
    return [body.read() for _, body in open_instances(retriever.store, manifest.instances)]


def assert_complete(retriever: Any, status: dict[str, Any], study: Any) -> None:
    assert status["state"] == "succeeded", status.get("error")
    assert stored(retriever, study) == set(study.sop_uids)


def assert_failed(retriever: Any, status: dict[str, Any], study: Any, reason: str) -> None:
    """The job failed saying `reason`, and the study was not presented as complete."""
    assert status["state"] == "failed", status
    assert reason in status["error"], status["error"]
    assert not retriever.keys(f"studies/{study.study_uid}/manifest.json")


def _label(pacs: Any) -> str:
    return {"orthanc": "Orthanc 1.10.1", "dcmqrscp": "dcmqrscp 3.6.7"}[pacs.name]


# -- the two PACS implementations, every operation ------------------------------------------


@pytest.mark.parametrize("method", ["move", "get"])
def test_retrieval(make_retriever: Any, any_pacs: Any, study_factory: Any, method: str) -> None:
    """Each PACS: the study arrives whole by C-MOVE and by C-GET; the job says how it judged
    completeness and, for C-GET, which classes it negotiated and why."""
    study = small(study_factory)
    any_pacs.upload(study.files)
    retriever, status = retrieve(make_retriever, any_pacs, study, method)
    assert_complete(retriever, status, study)
    done = status["result"]["studies"][0]
    if any_pacs.name == "orthanc":
        assert done["completeness"]["from"].startswith("NumberOfStudyRelatedInstances")
    else:
        assert done["completeness"] == {
            "expected": 3,
            "from": "SOPInstanceUIDs listed by IMAGE-level C-FIND",
        }
    if method == "get":
        source = done["negotiation"]["source"]
        assert source.startswith("SOPClassesInStudy" if any_pacs.name == "orthanc" else "default")
    op = "C-MOVE" if method == "move" else "C-GET"
    record(any_pacs.name, _label(any_pacs), op, "works")


def test_lookup_fallback(make_lookup: Any, any_pacs: Any, study_factory: Any) -> None:
    """No HIS: lookup finds the patient by one STUDY-level C-FIND at each PACS."""
    study = small(study_factory, patient_id="INTEROP-1")
    any_pacs.upload(study.files)
    any_pacs.register_modality("CDRECORD", "127.0.0.1", free_port())
    client = make_lookup(pacs_aet=any_pacs.aet, pacs_port=any_pacs.dicom_port)
    r = client.get(f"/v1/accessions/{study.accession}")
    assert r.status_code == 200, r.text
    assert (r.json()["source"], r.json()["patient_id"]) == ("pacs", "INTEROP-1")
    record(any_pacs.name, _label(any_pacs), "lookup (C-FIND)", "works")


def test_forward(make_forwarder: Any, store: Any, any_pacs: Any, study_factory: Any) -> None:
    """Each PACS as a forward peer receives every instance; dcmqrscp with max_associations 1
    (it names files by time and can overwrite one when two associations store at once)."""
    study = small(study_factory)
    seed(store, study.files, study.accession)
    peer = {"aet": any_pacs.aet, "host": "127.0.0.1", "port": any_pacs.dicom_port}
    if any_pacs.name == "dcmqrscp":
        peer["max_associations"] = 1
    forwarder = make_forwarder({"peer": peer})
    status = forwarder.run({"accession_numbers": [study.accession], "destination": "peer"})
    assert status["state"] == "succeeded", status.get("error")
    assert any_pacs.sop_uids_of_study(study.study_uid) == set(study.sop_uids)
    record(any_pacs.name, _label(any_pacs), "forward (C-STORE)", "works")


def test_a_get_needing_more_contexts_than_one_association_is_split_by_series(
    make_retriever: Any, orthanc_factory: Any, tmp_path: Path
) -> None:
    """Orthanc holds one study of 140 private SOP classes in 2 series of 70: more than the 126
    storage contexts one C-GET association can propose. The retriever splits the C-GET by
    series over two associations (SOPClassUID from IMAGE-level C-FIND says which series holds
    which classes) and every instance arrives, byte for byte as Orthanc holds it."""
    pacs = orthanc_factory(aet="MANYPACS", extra_config={"UnknownSopClassAccepted": True})
    files = many_classes(
        tmp_path / "many", 140, STANDARD_CLASSES[:140], series=2, accession="MANY-GET"
    )
    pacs.upload(files)
    study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    retriever = make_retriever(pacs=pacs)
    status = retriever.run({"accession_numbers": ["MANY-GET"], "method": "get"})
    assert status["state"] == "succeeded", status.get("error")
    assert status["counts"]["received"] == 140, status["counts"]
    negotiation = status["result"]["studies"][0]["negotiation"]
    assert negotiation["split_by_series"] is True
    assert negotiation["associations"] == 2
    assert all(n <= 126 for n in negotiation["contexts"]), negotiation
    assert len(negotiation["sop_classes"]) == 140
    held = {}
    for orthanc_id in pacs.instance_ids_of_study(study_uid):
        data = pacs.instance_file(orthanc_id)
        held[str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)] = data
    assert len(held) == 140
    for data in stored_bytes(retriever, study_uid):
        sop_uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
        assert same_dataset(data, held.pop(sop_uid)) == [], sop_uid
    assert not held, f"{len(held)} instances never arrived"
    record(
        "split",
        "Orthanc 1.10.1, one study of 140 SOP classes in 2 series",
        "C-GET",
        "works: split by series over 2 associations",
    )


# -- dcmqrscp configured like the archives a site meets --------------------------------------


def test_patient_root_only(make_retriever: Any, dcmqrscp_factory: Any, study_factory: Any) -> None:
    """-QS: dcmqrscp without the Study Root model for move and get; they go by Patient Root
    (with PatientID). It still answers a Study Root C-FIND: the C-FIND fallback to Patient
    Root is proven against quirkypacs (test_patient_root_only_for_find_move_and_get)."""
    pacs = dcmqrscp_factory(options=("-QS",))
    study = small(study_factory)
    pacs.upload(study.files)
    for method, op in (("move", "C-MOVE"), ("get", "C-GET")):
        retriever, status = retrieve(make_retriever, pacs, study, method)
        assert_complete(retriever, status, study)
        record(
            "qs",
            "dcmqrscp 3.6.7 `-QS`: Patient Root only for move/get (C-FIND still Study Root)",
            op,
            "works (Patient Root)",
        )


JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"


def _syntaxes(retriever: Any, study: Any) -> set[str]:
    found = set()
    for data in stored_bytes(retriever, study.study_uid):
        found.add(
            str(pydicom.dcmread(_io(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
        )
    return found


def test_compressed_archive(
    make_retriever: Any, dcmqrscp_factory: Any, study_factory: Any, tmp_path: Path
) -> None:
    """dcmqrscp holds JPEG Lossless and proposes it (`-xs`): by C-MOVE and by C-GET the
    instances arrive and are stored as sent (the packager re-encodes for the disc)."""
    pacs = dcmqrscp_factory(options=("-xs", "+xs"))
    study = small(study_factory)
    out = tmp_path / "jpeg"
    out.mkdir()
    for path in study.files:
        cmd = [dcmtk_bin("dcmcjpeg"), str(path), str(out / path.name)]
        subprocess.run(cmd, check=True, env=dcmtk_env())
    pacs.upload(sorted(out.iterdir()), "-xs")
    label = "dcmqrscp 3.6.7 holds JPEG Lossless and proposes it (`+xs -xs`)"
    # dcmqrscp 3.6.7 sends a C-GET's instance on the first context accepted for its SOP
    # class (ours: uncompressed) and cannot decompress: every sub-operation fails, the retry
    # has nothing new to propose, the job fails with the reason and nothing is stored.
    retriever, status = retrieve(make_retriever, pacs, study, "get")
    assert_failed(retriever, status, study, "3 of 3 instances failed during C-GET")
    record("xs", label, "C-GET", "job fails: dcmqrscp does not decompress (use C-MOVE)")
    retriever, status = retrieve(make_retriever, pacs, study, "move")
    assert_complete(retriever, status, study)
    assert _syntaxes(retriever, study) == {JPEG_LOSSLESS}
    record("xs", label, "C-MOVE", "works (JPEG Lossless stored as sent)")


def _io(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def test_one_association_at_a_time(
    make_retriever: Any,
    make_forwarder: Any,
    store: Any,
    dcmqrscp_factory: Any,
    study_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MaxAssociations 1: two studies moved in parallel; the second association is rejected
    as transient ("local limit exceeded") and retried until the first is done."""
    pacs = dcmqrscp_factory(max_associations=1)
    first, second = small(study_factory), small(study_factory, patient_id="PID001")
    pacs.upload(first.files + second.files)
    retriever = make_retriever(pacs=pacs, move_parallel=2)
    status = retriever.run({"accession_numbers": [first.accession, second.accession]})
    assert status["state"] == "succeeded", status.get("error")
    assert stored(retriever, first) == set(first.sop_uids)
    assert stored(retriever, second) == set(second.sop_uids)
    assert any("transient rejection" in r.getMessage() for r in caplog.records)
    record(
        "one",
        "dcmqrscp 3.6.7, one association at a time (`MaxAssociations 1`)",
        "C-MOVE",
        "works (busy: retried)",
    )
    third = small(study_factory)
    seed(store, third.files, third.accession)
    peer = {"aet": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port, "max_associations": 1}
    status = make_forwarder({"peer": peer}).run(
        {"accession_numbers": [third.accession], "destination": "peer"}
    )
    assert status["state"] == "succeeded", status.get("error")
    assert pacs.sop_uids_of_study(third.study_uid) == set(third.sop_uids)
    record("one", "", "forward (C-STORE)", "works with `max_associations: 1`")


def test_small_maximum_pdu(make_retriever: Any, dcmqrscp_factory: Any, study_factory: Any) -> None:
    """MaxPDUSize 4096 at the PACS and 4096 at our SCP: data sets span many PDUs both ways."""
    pacs = dcmqrscp_factory(max_pdu=4096)
    study = small(study_factory)
    pacs.upload(study.files)
    for method, op in (("move", "C-MOVE"), ("get", "C-GET")):
        retriever, status = retrieve(make_retriever, pacs, study, method, scp_max_pdu=4096)
        assert_complete(retriever, status, study)
        record("pdu", "dcmqrscp 3.6.7 and our SCP, maximum PDU 4096", op, "works")


def test_an_instance_missing_from_the_archive_fails_the_job(
    make_retriever: Any, dcmqrscp_factory: Any, study_factory: Any
) -> None:
    """The archive's index lists an instance whose file is gone: the sub-operation fails and
    so does the job, with nothing presented as complete (no manifest)."""
    pacs = dcmqrscp_factory()
    study = small(study_factory)
    pacs.upload(study.files)
    Path(pacs.instance_ids_of_study(study.study_uid)[0]).unlink()
    for method, op in (("move", "C-MOVE"), ("get", "C-GET")):
        retriever, status = retrieve(make_retriever, pacs, study, method)
        assert_failed(retriever, status, study, "1 of 3 instances failed")
        record(
            "gone",
            "dcmqrscp 3.6.7 with one instance's file deleted",
            op,
            "job fails: 1 of 3 instances failed",
        )


# -- behaviours from a small pynetdicom SCP ---------------------------------------------------

Q = "pynetdicom SCP (quirkypacs): "  # the rows below: which server proved them


@pytest.fixture
def quirky() -> Iterator[Any]:
    made: list[QuirkyPacs] = []

    def make(quirks: Quirks) -> QuirkyPacs:
        pacs = QuirkyPacs(quirks=quirks)
        pacs.start()
        made.append(pacs)
        return pacs

    yield make
    for pacs in made:
        pacs.stop()


def test_accession_in_other_padding_is_matched(
    make_lookup: Any, make_retriever: Any, quirky: Any, study_factory: Any
) -> None:
    """The PACS answers ' ACC' + NUL: not significant for SH (PS3.5 6.2), so it matches."""
    study = small(study_factory)
    pacs = quirky(Quirks(accession_as=f" {study.accession}\x00"))
    pacs.upload(study.files)
    retriever, status = retrieve(make_retriever, pacs, study, "move")
    assert_complete(retriever, status, study)
    r = make_lookup(pacs_aet=pacs.aet, pacs_port=pacs.dicom_port).get(
        f"/v1/accessions/{study.accession}"
    )
    assert r.status_code == 200, r.text
    record("pad", Q + "accession answered as `' ACC\\0'`", "lookup (C-FIND)", "works")
    record("pad", "", "C-MOVE", "works")


PATIENT_ROOT = {
    "1.2.840.10008.5.1.4.1.2.1.1",  # FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # GET
}


def test_patient_root_only_for_find_move_and_get(
    make_lookup: Any, make_retriever: Any, quirky: Any, study_factory: Any
) -> None:
    """A PACS that accepts no Study Root model at all, C-FIND included, and holds Patient Root
    to its hierarchy (PatientID on every move, get and query below STUDY level, else A900):
    retrieval by accession works by C-MOVE and by C-GET, and lookup's PACS fallback finds
    the patient, every request on a Patient Root model."""
    pacs = quirky(Quirks(patient_root_only=True))
    label = Q + "Patient Root only for find, move and get"
    for method, op in (("move", "C-MOVE"), ("get", "C-GET")):
        study = small(study_factory, patient_id="PROOT-1")  # a new one: nothing reused
        pacs.upload(study.files)
        retriever, status = retrieve(make_retriever, pacs, study, method)
        assert_complete(retriever, status, study)
        record("proot", label, op, "works (Patient Root)")
    r = make_lookup(pacs_aet=pacs.aet, pacs_port=pacs.dicom_port).get(
        f"/v1/accessions/{study.accession}"
    )
    assert r.status_code == 200, r.text
    assert (r.json()["source"], r.json()["patient_id"]) == ("pacs", "PROOT-1")
    assert pacs.models == PATIENT_ROOT
    assert pacs.requests["Move"] == 1 and pacs.requests["Get"] == 1, pacs.requests
    record("proot", label, "lookup (C-FIND)", "works (Patient Root)")


def test_stray_answers_are_dropped(
    make_lookup: Any, make_retriever: Any, quirky: Any, study_factory: Any
) -> None:
    """Answers with another accession, a wildcard, or another patient's study under our
    accession's request are dropped: only the study we asked for is retrieved."""
    study = small(study_factory)
    other = small(study_factory, patient_id="OTHER-9")
    stray = [
        {
            "StudyInstanceUID": other.study_uid,
            "AccessionNumber": other.accession,
            "PatientID": "OTHER-9",
        },
        {"StudyInstanceUID": other.study_uid, "AccessionNumber": "*", "PatientID": "OTHER-9"},
        {"StudyInstanceUID": "1.2.3.4", "AccessionNumber": study.accession[:-1] + "?"},
    ]
    pacs = quirky(Quirks(extra_answers=stray))
    pacs.upload(study.files + other.files)
    retriever, status = retrieve(make_retriever, pacs, study, "move")
    assert_complete(retriever, status, study)
    assert [s["study_uid"] for s in status["result"]["studies"]] == [study.study_uid]
    assert not stored_sops(retriever.store, other.study_uid)
    r = make_lookup(pacs_aet=pacs.aet, pacs_port=pacs.dicom_port).get(
        f"/v1/accessions/{study.accession}"
    )
    assert r.status_code == 200 and r.json()["patient_id"] == study.patient_id, r.text
    record(
        "stray",
        Q + "answers with other accessions, wildcards, other patients",
        "lookup (C-FIND)",
        "stray answers dropped",
    )
    record("stray", "", "C-MOVE", "only the asked study stored")


@pytest.mark.parametrize("method", ["move", "get"])
def test_an_instance_listed_but_never_sent_fails_the_job(
    make_retriever: Any, quirky: Any, study_factory: Any, method: str
) -> None:
    """No NumberOfStudyRelatedInstances; the PACS lists 3 instances at IMAGE level, sends 2
    and reports success with 2 completed: the IMAGE-level listing decides, the job fails.

    The job waits the whole settle_timeout (30 s) for the missing instance. With a
    job_stale_after of 3 s (the fixture's, until it became 10 s) the job gives itself up
    after 2 s without a confirmed heartbeat; one slow write to the in-process S3 mock in
    those 30 s (a loaded CI machine) then has the sweeper take the job over and run it
    again from the start, 30 s more, past the 60 s the test waits. So this test's jobs
    tolerate a slow heartbeat."""
    study = small(study_factory)
    pacs = quirky(Quirks(count_instances=False, drop={study.sop_uids[-1]}))
    pacs.upload(study.files)
    retriever, status = retrieve(make_retriever, pacs, study, method, job_stale_after=30.0)
    assert_failed(retriever, status, study, "2 of 3 instances arrived")
    assert "IMAGE-level C-FIND" in status["error"]
    record(
        "drop",
        Q + "lists an instance it never sends, no counts",
        "C-MOVE" if method == "move" else "C-GET",
        "job fails: instance did not arrive",
    )


def test_a_get_that_sends_another_studys_instance_fails(
    make_retriever: Any, quirky: Any, study_factory: Any
) -> None:
    """The foreign instance is refused (0xA900, never stored); the PACS counts it failed."""
    study, other = small(study_factory), small(study_factory)
    pacs = quirky(Quirks(foreign=[other.files[0]]))
    pacs.upload(study.files)
    retriever, status = retrieve(make_retriever, pacs, study, "get")
    assert_failed(retriever, status, study, "failed during C-GET")
    assert not stored_sops(retriever.store, other.study_uid)
    record(
        "foreign",
        Q + "C-GET sends an instance of another study",
        "C-GET",
        "job fails; foreign instance refused",
    )


@pytest.mark.parametrize("method", ["move", "get"])
def test_an_association_aborted_mid_study_fails(
    make_retriever: Any, quirky: Any, study_factory: Any, method: str
) -> None:
    """After one instance the PACS aborts: the job fails saying so; no manifest."""
    study = small(study_factory)
    pacs = quirky(Quirks(abort_after=1))
    pacs.upload(study.files)
    retriever, status = retrieve(make_retriever, pacs, study, method)
    assert_failed(retriever, status, study, "aborted the association")
    record(
        "abort",
        Q + "aborts the association mid-study",
        "C-MOVE" if method == "move" else "C-GET",
        "job fails with the reason",
    )


def test_big_endian_only_on_a_move(
    make_retriever: Any, quirky: Any, study_factory: Any, tmp_path: Path
) -> None:
    """The PACS proposes nothing but Explicit VR Big Endian on its C-MOVE sub-association:
    the instances arrive big endian, complete, stored as sent (the disc re-encodes them)."""
    study = small(study_factory)
    pacs = quirky(Quirks(move_syntaxes=["1.2.840.10008.1.2.2"]))
    big = tmp_path / "big"
    big.mkdir()
    for path in study.files:
        cmd = [dcmtk_bin("dcmconv"), "+tb", str(path), str(big / path.name)]
        subprocess.run(cmd, check=True, env=dcmtk_env())
    pacs.upload(sorted(big.iterdir()))
    retriever, status = retrieve(make_retriever, pacs, study, "move")
    assert_complete(retriever, status, study)
    assert _syntaxes(retriever, study) == {"1.2.840.10008.1.2.2"}
    record(
        "be",
        Q + "sends only big endian on its moves",
        "C-MOVE",
        "works (big endian stored as sent)",
    )


def test_wrong_sop_classes_in_study_are_retried_with_the_needed_context(
    make_retriever: Any, quirky: Any, study_factory: Any
) -> None:
    """SOPClassesInStudy names CT only: the MR sub-operation fails for lack of a context; the
    retry proposes MR (from IMAGE-level SOPClassUID) and the study completes."""
    study = small(study_factory)
    pacs = quirky(Quirks(sop_classes_in_study=["1.2.840.10008.5.1.4.1.1.2"]))
    pacs.upload(study.files)
    retriever, status = retrieve(make_retriever, pacs, study, "get")
    assert_complete(retriever, status, study)
    negotiation = status["result"]["studies"][0]["negotiation"]
    assert negotiation["sop_classes"] == ["1.2.840.10008.5.1.4.1.1.2"]
    assert [MR in r["sop_classes"] for r in negotiation["retries"]] == [True]
    record("classes", Q + "SOPClassesInStudy misses a class", "C-GET", "works after one retry")


# -- the matrix -------------------------------------------------------------------------------


def matrix() -> str:
    lines = ["| PACS | " + " | ".join(OPS) + " |", "|" + "---|" * (len(OPS) + 1)]
    for row, label in ROWS.items():
        cells = [CELLS.get((row, op), "—") for op in OPS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def test_interop_matrix_is_the_one_in_the_doc() -> None:
    """docs/conformance.md shows what these tests found (run the whole module)."""
    import re

    from reliability.test_conformance import _BLOCK

    rendered = matrix()
    text = DOC.read_text("utf-8")
    fresh = _BLOCK.sub(
        lambda m: (
            m.group(1) + rendered + m.group(4) if m.group(2) == "interop-matrix" else m.group(0)
        ),
        text,
    )
    if os.environ.get("DICOMISO_WRITE_DOCS") == "1":
        DOC.write_text(fresh, "utf-8")
        return
    assert re.search(r"<!-- generated:interop-matrix -->", text), "no interop-matrix block"
    assert fresh == text, (
        "docs/conformance.md's interop matrix is stale: "
        "DICOMISO_WRITE_DOCS=1 uv run --frozen pytest tests/reliability/test_interop.py"
    )
