"""Patient names: parts for JSON, full form kept, one file-name rule for every service."""

from __future__ import annotations

import pytest

from dicomiso_common.names import ascii_filename_part, person_name


def test_dicom_pn_is_split_into_parts() -> None:
    name = person_name("O'Brien^Mary Ann^^Dr.^Jr.")
    assert (name.family, name.given, name.middle, name.prefix, name.suffix) == (
        "O'Brien",
        "Mary Ann",
        None,
        "Dr.",
        "Jr.",
    )
    assert name.display == "Dr. Mary Ann O'Brien, Jr."


def test_free_text_is_kept_whole() -> None:
    name = person_name("Dewi Anggraini, S.Kom.")
    assert (name.display, name.family, name.given) == (
        "Dewi Anggraini, S.Kom.",
        "Dewi Anggraini, S.Kom.",
        None,
    )


def test_all_groups_are_kept_and_the_first_non_empty_one_is_displayed() -> None:
    both = person_name("Yamada^Tarou=山田^太郎")
    assert (both.display, both.original) == ("Tarou Yamada", "Yamada^Tarou=山田^太郎")
    only_ideographic = person_name("=山田^太郎")
    assert (only_ideographic.family, only_ideographic.display) == ("山田", "太郎 山田")


@pytest.mark.parametrize(
    ("text", "reduced"),
    [
        ("Budi Santoso", "BudiSantoso"),
        ("Nuñez^José", "NunezJose"),
        ("MR.001", "MR001"),
        ("O'Brien, Mary-Ann", "OBrienMaryAnn"),
        ("Ægir Øre Łódź", "AEgirOreLodz"),
        ("山田", ""),
    ],
)
def test_file_name_part_is_ascii_letters_and_digits(text: str, reduced: str) -> None:
    assert ascii_filename_part(text) == reduced
