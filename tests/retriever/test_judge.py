"""Unit tests of how final C-MOVE/C-GET answers are judged (no PACS needed for these cases)."""

from __future__ import annotations

import pytest

from dicomiso_common.errors import DicomError
from dicomiso_common.pacs import StudyAnswer
from dicomiso_retriever.manifest import IncompleteStudy
from dicomiso_retriever.retrieval import Retrieval
from dicomiso_retriever.settings import RetrieverSettings
from dicomiso_retriever.transfer import TransferResult


def _judge(hit: StudyAnswer, result: TransferResult) -> None:
    Retrieval(RetrieverSettings(), None, None, None)._judge(  # type: ignore[arg-type]
        hit, result, "move", hit.instances or 0
    )


def test_warning_with_failed_uids_is_incomplete() -> None:
    """PS3.4 C.4.2.1.5: the final response may omit counts; the UID list still says it failed."""
    with pytest.raises(IncompleteStudy, match="1 of 10 instances failed"):
        _judge(
            StudyAnswer("1.2", 10),
            TransferResult(status=0xB000, completed=9, failed_uids=["1.2.3"]),
        )


@pytest.mark.parametrize("status", [0xA701, 0xA801, 0xC000, None])
def test_failure_status_fails(status: int | None) -> None:
    with pytest.raises(DicomError):
        _judge(StudyAnswer("1.2", 1), TransferResult(status=status))


def test_aborted_association_fails_with_counts() -> None:
    with pytest.raises(DicomError, match="aborted .* 3 of 10 instances arrived"):
        _judge(StudyAnswer("1.2", 10), TransferResult(completed=3, aborted=True))


def test_success_and_warning_without_failures_pass() -> None:
    _judge(StudyAnswer("1.2", 2), TransferResult(status=0x0000, completed=2))
    _judge(StudyAnswer("1.2", 2), TransferResult(status=0xB000, completed=1, warning=1))


def test_without_any_count_the_image_level_listing_decides() -> None:
    """No NumberOfStudyRelatedInstances: the IMAGE-level C-FIND's instances are the count;
    with neither, the transfer's own counts (and a transfer that counts nothing fails later)."""
    from dicomiso_retriever.retrieval import _expectation

    listed = {"1.2.3": {"1.2.3.1": None, "1.2.3.2": "1.2.840.10008.5.1.4.1.1.2"}}
    assert _expectation(StudyAnswer("1.2", 5), listed, TransferResult())[0] == 5
    assert _expectation(StudyAnswer("1.2"), listed, TransferResult(completed=9)) == (
        2,
        "SOPInstanceUIDs listed by IMAGE-level C-FIND",
    )
    assert _expectation(StudyAnswer("1.2"), {}, TransferResult(completed=3, warning=1))[0] == 4
