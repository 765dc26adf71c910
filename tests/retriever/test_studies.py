"""GET /v1/studies: what the PACS holds for an accession, by C-FIND alone (the staff page's
identity check asks it before the clerk confirms, so nothing may be moved)."""

from __future__ import annotations

from typing import Any

from support.stored import stored_keys


def test_studies_answers_study_level_details_and_moves_nothing(
    make_retriever: Any, any_pacs: Any, study_factory: Any
) -> None:
    study = study_factory(with_sr=False, with_ko=False, with_pr=False, study_date="20260417")
    any_pacs.upload(study.files)
    retriever = make_retriever(pacs=any_pacs)

    response = retriever.client.get("/v1/studies", params={"accession_number": study.accession})

    assert response.status_code == 200, response.text
    [found] = response.json()
    assert found["study_uid"] == study.study_uid
    assert found["date"] == "20260417" and found["description"] == "Synthetic study"
    assert found["patient_birth_date"] == "19700101" and found["patient_sex"] == "F"
    assert found["instances"] in (None, len(study.files))  # dcmqrscp does not count
    assert stored_keys(retriever.store) == [] and retriever.keys("jobs/") == []


def test_studies_of_an_unknown_accession_is_empty_and_a_wildcard_is_refused(
    make_retriever: Any, orthanc: Any
) -> None:
    retriever = make_retriever()
    orthanc.mark()

    unknown = retriever.client.get("/v1/studies", params={"accession_number": "NOPE.9"})
    wildcard = retriever.client.get("/v1/studies", params={"accession_number": "MR*"})

    assert unknown.status_code == 200 and unknown.json() == []
    assert wildcard.status_code == 422 and "wildcard" in wildcard.json()["detail"]
    assert orthanc.move_requests() == 0
