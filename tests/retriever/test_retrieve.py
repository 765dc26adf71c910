"""Retrieval by accession number from a real Orthanc into a real S3 endpoint."""

from __future__ import annotations

import concurrent.futures
import io
from typing import Any

import pydicom
import pytest

from dicomiso_common.dicom import manifest_key
from dicomiso_common.instances import open_instances
from dicomiso_common.manifests import load_manifest
from support.dicomcmp import same_dataset
from support.stored import stored_keys, stored_sops


@pytest.fixture
def uploaded(orthanc: Any, study_factory: Any) -> Any:
    """A fresh multi-series study (CT, MR, SR, KO, PR, SC, non-ASCII name, multi-frame)."""
    study = study_factory()
    orthanc.upload(study.files)
    return study


@pytest.mark.parametrize("method", ["move", "get"])
def test_every_instance_arrives_equal_to_the_pacs_copy(
    make_retriever: Any, any_pacs: Any, study_factory: Any, method: str
) -> None:
    """Each stored object equals the PACS's copy (all non-0002 elements and pixel bytes).

    Against Orthanc (every optional key answered) and dcmqrscp (no instance counts, no SOP
    classes in its C-FIND answers), so C-GET's negotiation and the completeness rule are
    proven where the PACS tells us least.
    """
    uploaded = study_factory()
    any_pacs.upload(uploaded.files)
    retriever = make_retriever(pacs=any_pacs)
    status = retriever.run({"accession_numbers": [uploaded.accession], "method": method})

    assert status["state"] == "succeeded", status
    n = len(uploaded.files)
    assert status["counts"]["received"] == n
    assert status["counts"]["expected"] == n
    assert stored_sops(retriever.store, uploaded.study_uid) == set(uploaded.sop_uids)
    stored = load_manifest(retriever.store, uploaded.study_uid)
    ours = {e.sop_uid: f.read() for e, f in open_instances(retriever.store, stored.instances)}
    assert all(e.offset is not None for e in stored.instances)  # ranges of segments
    for instance_id in any_pacs.instance_ids_of_study(uploaded.study_uid):
        theirs = any_pacs.instance_file(instance_id)
        sop = pydicom.dcmread(io.BytesIO(theirs), stop_before_pixels=True).SOPInstanceUID
        assert same_dataset(ours[str(sop)], theirs) == [], sop
    manifest, _ = retriever.store.get_json(manifest_key(uploaded.study_uid))
    assert manifest["instance_count"] == n
    assert {i["sop_uid"] for i in manifest["instances"]} == set(uploaded.sop_uids)
    assert all(len(i["sha256"]) == 64 and i["size"] > 0 for i in manifest["instances"])
    assert manifest["method"] == method
    index, _ = retriever.store.get_json(f"accessions/{uploaded.accession}.json")
    assert index["study_uids"] == [uploaded.study_uid]


def test_same_request_twice_is_the_same_job_and_no_second_transfer(
    retriever: Any, orthanc: Any, uploaded: Any
) -> None:
    first = retriever.run({"accession_numbers": [uploaded.accession]})
    orthanc.mark()
    again = retriever.post({"accession_numbers": [uploaded.accession]})

    assert again.status_code == 202
    assert again.json()["id"] == first["id"] and again.json()["state"] == "succeeded"
    assert orthanc.move_requests() == 0 and orthanc.find_requests() == 0


def test_study_already_in_the_bucket_is_not_moved_again(
    retriever: Any, orthanc: Any, uploaded: Any
) -> None:
    """A different request (C-GET now) over a complete study re-uses it: C-FIND, no transfer."""
    retriever.run({"accession_numbers": [uploaded.accession]})
    orthanc.mark()
    status = retriever.run({"accession_numbers": [uploaded.accession], "method": "get"})

    assert status["state"] == "succeeded"
    assert status["result"]["studies"][0]["transferred"] is False
    assert status["counts"]["reused"] == len(uploaded.files)
    assert orthanc.move_requests() == 0 and orthanc.get_requests() == 0


def test_two_studies_under_one_accession_are_both_retrieved(
    retriever: Any, orthanc: Any, study_factory: Any
) -> None:
    one = study_factory(accession="TWIN1", ct=2, mr=1)
    two = study_factory(accession="TWIN1", patient_id=one.patient_id, ct=1, mr=2)
    orthanc.upload(one.files + two.files)

    status = retriever.run({"accession_numbers": ["TWIN1"]})

    assert status["state"] == "succeeded", status
    assert sorted(s["study_uid"] for s in status["result"]["studies"]) == sorted(
        [one.study_uid, two.study_uid]
    )
    for study in (one, two):
        assert len(stored_sops(retriever.store, study.study_uid)) == len(study.files)
        assert retriever.store.exists(manifest_key(study.study_uid))


def test_two_accessions_in_one_request_make_one_job(
    retriever: Any, orthanc: Any, study_factory: Any
) -> None:
    a = study_factory(ct=2, mr=1)
    b = study_factory(patient_id=a.patient_id, ct=1, mr=1)
    orthanc.upload(a.files + b.files)

    status = retriever.run({"accession_numbers": [a.accession, b.accession]})

    assert status["state"] == "succeeded", status
    assert set(status["result"]["accessions"]) == {a.accession, b.accession}
    assert status["counts"]["received"] == len(a.files) + len(b.files)


def test_by_study_uid(retriever: Any, uploaded: Any) -> None:
    status = retriever.run({"study_uids": [uploaded.study_uid]})
    assert status["state"] == "succeeded"
    assert len(stored_sops(retriever.store, uploaded.study_uid)) == len(uploaded.files)


BAD = [
    "",
    "*",
    "AB*",
    "A?C",
    "A\\B",
    "A" * 17,
    " ACC1",
    "ACC1 ",
    "AC\x00C",
    "AC\tC",
    "%",
    "' OR 1=1 --",
]


@pytest.mark.parametrize("value", BAD)
def test_bad_accession_is_422_and_the_pacs_hears_nothing(
    retriever: Any, orthanc: Any, value: str
) -> None:
    orthanc.mark()
    response = retriever.post({"accession_numbers": ["GOOD1", value]})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"]
    assert orthanc.find_requests() == 0 and orthanc.associations() == 0
    assert retriever.keys("jobs/") == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"accession_numbers": []},
        {"accession_numbers": ["A1"], "study_uids": ["1.2"]},
        {"study_uids": ["1.2.x"]},
        {"study_uids": ["../1"]},
        {"accession_numbers": "A1"},
        {"accession_numbers": [1234]},
        {"accession_numbers": ["A1"], "method": "telnet"},
        {"accession_numbers": ["A1"], "host": "127.0.0.1"},
    ],
)
def test_malformed_request_is_422(retriever: Any, orthanc: Any, body: dict[str, Any]) -> None:
    orthanc.mark()
    response = retriever.post(body)
    assert response.status_code == 422, response.text
    assert orthanc.associations() == 0


def test_unknown_accession_fails_the_job_and_writes_nothing(retriever: Any) -> None:
    status = retriever.run({"accession_numbers": ["NOSUCH404"]})

    assert status["state"] == "failed"
    assert status["error"] == "no study found for accession NOSUCH404"
    assert stored_keys(retriever.store) == [] and retriever.keys("accessions/") == []


def test_unknown_job_id_is_404_and_malformed_is_422(retriever: Any) -> None:
    assert retriever.client.get(f"/v1/retrievals/{'0' * 32}").status_code == 404
    assert retriever.client.get("/v1/retrievals/..%2Fx").status_code in (404, 422)
    assert retriever.client.get("/v1/retrievals/xyz").status_code == 422
    # a long poll longer than 30 s, or negative, is refused with the reason, not held
    for wait in ("31", "-1", "soon"):
        answer = retriever.client.get(f"/v1/retrievals/{'0' * 32}", params={"wait": wait})
        assert answer.status_code == 422 and "wait" in answer.text, answer.text
    assert retriever.client.get(f"/v1/retrievals/{'0' * 32}?wait=30").status_code == 404


def test_two_concurrent_identical_requests_reach_the_pacs_once(
    retriever: Any, orthanc: Any, uploaded: Any
) -> None:
    orthanc.mark()
    body = {"accession_numbers": [uploaded.accession]}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: retriever.post(body), range(2)))

    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert retriever.wait(ids.pop())["state"] == "succeeded"
    assert orthanc.move_requests() == 1 and orthanc.find_requests() == 1


def test_multi_valued_character_set_is_kept_in_the_manifest(
    retriever: Any, orthanc: Any, study_factory: Any
) -> None:
    """ISO 2022 code extensions make SpecificCharacterSet multi-valued (PS3.3 C.12.1.1.2)."""
    study = study_factory(
        ct=2,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )
    for path in study.files:
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = ["ISO 2022 IR 6", "ISO 2022 IR 100"]
        ds.save_as(path)
    orthanc.upload(study.files)

    status = retriever.run({"accession_numbers": [study.accession]})

    assert status["state"] == "succeeded", status
    manifest, _ = retriever.store.get_json(manifest_key(study.study_uid))
    assert manifest["charset"] == ["ISO 2022 IR 6", "ISO 2022 IR 100"]


def test_openapi_documents_problem_json_errors(retriever: Any) -> None:
    spec = retriever.client.get("/openapi.json").json()
    post = spec["paths"]["/v1/retrievals"]["post"]["responses"]
    assert set(post) >= {"202", "401", "422", "503"}
    assert "application/problem+json" in post["422"]["content"]
    assert "Problem" in spec["components"]["schemas"]
    assert "/v1/retrievals/{job_id}" in spec["paths"]


def test_two_replicas_one_job_and_the_other_replicas_scp_receives(
    make_retriever: Any, orthanc: Any, uploaded: Any
) -> None:
    """Two replicas share the bucket; the PACS sends to whichever SCP its AE entry names.

    The same request posted to both at once makes one job and one C-MOVE; the replica that
    did not start the move receives the instances (its bucket lease look-up says the study is
    wanted) and the job's replica still proves the study complete from the bucket.
    """
    one = make_retriever(replica_id="replica-one")
    two = make_retriever(replica_id="replica-two")  # CDRECORD now points at two's SCP
    orthanc.mark()
    body = {"accession_numbers": [uploaded.accession]}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda r: r.post(body), [one, two]))

    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    job = ids.pop()
    status = one.wait(job)
    assert status["state"] == "succeeded", status
    assert two.wait(job)["state"] == "succeeded"
    assert orthanc.move_requests() == 1
    assert len(stored_sops(one.store, uploaded.study_uid)) == len(uploaded.files)
    assert two.app.state.scp.stored == len(uploaded.files)


def test_overlapping_jobs_move_a_study_once(retriever: Any, orthanc: Any, uploaded: Any) -> None:
    """By accession and by Study UID are two jobs; the study lease makes one wait for the other."""
    orthanc.mark()
    bodies = [{"accession_numbers": [uploaded.accession]}, {"study_uids": [uploaded.study_uid]}]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        ids = [r.json()["id"] for r in pool.map(retriever.post, bodies)]

    assert ids[0] != ids[1]
    results = [retriever.wait(i) for i in ids]
    assert [r["state"] for r in results] == ["succeeded", "succeeded"]
    assert orthanc.move_requests() == 1
    transferred = [r["result"]["studies"][0]["transferred"] for r in results]
    assert sorted(transferred) == [False, True]
