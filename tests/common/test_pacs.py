"""STUDY-level C-FIND through dicomiso_common.pacs, against the real Orthanc PACS."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dicomiso_common.errors import DicomError, InvalidInput
from dicomiso_common.pacs import PacsPeer, find_studies_by_accession, find_study_by_uid
from support.net import LOOPBACK, free_port
from support.orthanc import Orthanc
from support.studies import Study

StudyFactory = Callable[..., Study]  # tests/conftest.py's study_factory fixture

CALLING = "LOOKUP"


@pytest.fixture
def peer(orthanc: Orthanc) -> PacsPeer:
    """The session PACS, which knows our calling AE (it refuses unknown AEs' C-FIND)."""
    orthanc.register_modality(CALLING, LOOPBACK, free_port())
    return PacsPeer(
        aet=orthanc.aet,
        host=LOOPBACK,
        port=orthanc.dicom_port,
        calling_aet=CALLING,
        acse_timeout=5,
        dimse_timeout=10,
        network_timeout=10,
    )


def test_accession_finds_study_with_patient(
    peer: PacsPeer, orthanc: Orthanc, study_factory: StudyFactory
) -> None:
    """An exact accession returns its one study, with the patient and study details."""
    study = study_factory(patient_id="PID-PACS-1", patient_name="Doe^Jane")
    orthanc.upload(study.files)

    answers = find_studies_by_accession(peer, study.accession)

    assert len(answers) == 1
    answer = answers[0]
    assert answer.study_uid == study.study_uid
    assert answer.accession_number == study.accession
    assert answer.patient_id == "PID-PACS-1"
    assert answer.patient_name == "Doe^Jane"
    assert answer.instances == len(study.files)
    assert answer.study_date == "20240315"
    assert {"CT", "MR"} <= set(answer.modalities)
    assert find_study_by_uid(peer, study.study_uid) == answers


def test_non_ascii_patient_name_round_trips(
    peer: PacsPeer, orthanc: Orthanc, study_factory: StudyFactory
) -> None:
    """A name stored under ISO_IR 192 comes back decoded, not as mojibake."""
    study = study_factory(patient_name="Nuñez^José")
    orthanc.upload(study.files)

    (answer,) = find_studies_by_accession(peer, study.accession)

    assert answer.patient_name == "Nuñez^José"


def test_unknown_accession_finds_nothing(peer: PacsPeer, orthanc: Orthanc) -> None:
    """An accession the PACS does not hold is an empty answer, not an error."""
    orthanc.mark()

    assert find_studies_by_accession(peer, "NOSUCHACC0001") == []
    assert orthanc.find_requests() == 1  # the counter the wildcard test relies on works


@pytest.mark.parametrize("accession", ["*", "A*", "A?C", "", "  "])
def test_wildcard_never_reaches_pacs(peer: PacsPeer, orthanc: Orthanc, accession: str) -> None:
    """A wildcard or empty key is rejected before any C-FIND is sent (PS3.4 C.2.2.2.4)."""
    orthanc.mark()

    with pytest.raises(InvalidInput):
        find_studies_by_accession(peer, accession)

    assert orthanc.find_requests() == 0


def test_closed_port_is_unreachable() -> None:
    """Nothing listening is reported as unreachable, not as a refusal."""
    port = free_port()
    peer = PacsPeer(
        host=LOOPBACK, port=port, calling_aet=CALLING, acse_timeout=2, network_timeout=2
    )

    with pytest.raises(DicomError, match=f"PACS ABPACS at {LOOPBACK}:{port} unreachable"):
        find_studies_by_accession(peer, "ACC001")
