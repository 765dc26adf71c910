"""The validators that stand between a request and a C-FIND key or a bucket key."""

from __future__ import annotations

import pytest

from dicomiso_common.dicom import (
    accession_key,
    instance_key,
    validate_accession,
    validate_uid,
)
from dicomiso_common.errors import InvalidInput

BAD_ACCESSIONS = {
    "": "empty",
    "*": "wildcard",
    "AB*": "wildcard",
    "A?C": "wildcard",
    "A\\B": "backslash",
    "A" * 17: "at most 16",
    " ACC1": "leading or trailing",
    "ACC1 ": "leading or trailing",
    "AC\x00C": "control",
    "AC\nC": "control",
    "AC\x1bC": "control",
    "' OR 1=1 --": "only letters",
    "%": "only letters",
    "_": "only letters",
    "A/B": "only letters",
    "..": "only letters",
    "Ünï": "only letters",
}


@pytest.mark.parametrize("value", list(BAD_ACCESSIONS))
def test_bad_accession_is_refused_with_a_reason(value: str) -> None:
    """Every universal-match, wildcard or unsafe value is a 422 that says why, not echoes it."""
    with pytest.raises(InvalidInput) as err:
        validate_accession(value)
    assert BAD_ACCESSIONS[value] in str(err.value)
    if len(value) > 1:
        assert value not in str(err.value)


@pytest.mark.parametrize("value", ["A", "ACC001", "MR.001", "CT-2024-0001", "A" * 16, "12345"])
def test_good_accession_passes_unchanged(value: str) -> None:
    assert validate_accession(value) == value


def test_non_string_accession_is_refused() -> None:
    with pytest.raises(InvalidInput):
        validate_accession(12345)


@pytest.mark.parametrize(
    "value", ["", "1..2", ".1", "1.", "1.2.a", "1/2", "../1", "1." + "2" * 63, "1.2 ", "*"]
)
def test_bad_uid_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        validate_uid(value)


def test_uid_of_64_characters_passes() -> None:
    uid = "1." + "2" * 62
    assert validate_uid(uid) == uid


def test_keys_cannot_escape_their_prefix() -> None:
    """Even an unvalidated UID cannot add a path separator to a bucket key."""
    assert instance_key("1.2", "../x", "3/4") == "instances/1.2/____/3_4.dcm"
    assert accession_key("MR.001") == "accessions/MR.001.json"
    with pytest.raises(InvalidInput):
        accession_key("../etc")
