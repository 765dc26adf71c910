"""Patient names: parts for JSON, full form kept, one file-name rule for every service."""

from __future__ import annotations

import pytest

from dicomiso_common.names import ascii_filename_part, person_name


def test_dicom_pn_is_split_into_parts() -> None:
    name = person_name("O'Brien^Mary Ann^^Dr.^Jr.")
    assert (name.family, name.given, name.middle, name.prefix, name.suffix) == \
        ("O'Brien", "Mary Ann", None, "Dr.", "Jr.")
    assert name.display == "Dr. Mary Ann O'Brien, Jr."


def test_free_text_is_kept_whole() -> None:
    name = person_name("Dewi Anggraini, S.Kom.")
    assert (name.display, name.family, name.given) == \
        ("Dewi Anggraini, S.Kom.", "Dewi Anggraini, S.Kom.", None)


def test_ideographic_groups_are_not_in_the_display() -> None:
    assert person_name("Yamada^Tarou=山田^太郎").display == "Tarou Yamada"


@pytest.mark.parametrize(("text", "reduced"), [
    ("Budi Santoso", "BudiSantoso"), ("Nuñez^José", "NunezJose"), ("MR.001", "MR001"),
    ("O'Brien, Mary-Ann", "OBrienMaryAnn"), ("Ægir Øre Łódź", "AEgirOreLodz"), ("山田", ""),
])
def test_file_name_part_is_ascii_letters_and_digits(text: str, reduced: str) -> None:
    assert ascii_filename_part(text) == reduced
