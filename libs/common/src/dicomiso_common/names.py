"""Patient names: structured parts for JSON, and the legacy file-name rule.

Names come either as DICOM PN (`Family^Given^Middle^Prefix^Suffix`, PS3.5 6.2.1) or as the
HIS's free text (`Budi Santoso`, `Dewi Anggraini, S.Kom.`). Both keep their full form; only
file names are reduced, by one function that the packager uses too.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
# Latin letters that Unicode does not decompose into a base letter plus accent.
_TRANSLIT = str.maketrans(
    {
        "Æ": "AE",
        "æ": "ae",
        "Ø": "O",
        "ø": "o",
        "Œ": "OE",
        "œ": "oe",
        "ß": "ss",
        "Ð": "D",
        "ð": "d",
        "Þ": "Th",
        "þ": "th",
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "ı": "i",
    }
)


@dataclass(frozen=True)
class PersonName:
    original: str  # exactly as the source gave it (all PN groups included)
    display: str
    family: str | None = None
    given: str | None = None
    middle: str | None = None
    prefix: str | None = None
    suffix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def person_name(raw: str) -> PersonName:
    """Split a name into parts; the display form reads naturally, nothing is dropped.

    A DICOM PN's alphabetic group is split at `^`; free text has no reliable parts, so it is
    kept whole as `family` (HL7's convention for unparsed names) and as `display`.
    """
    raw = raw.strip()
    if "^" not in raw and "=" not in raw:
        return PersonName(raw, display=raw, family=raw or None)
    # PS3.5 6.2.1.2: alphabetic=ideographic=phonetic; the first non-empty group is shown.
    text = next((g.strip() for g in raw.split("=") if g.strip()), "")
    parts = [p.strip() or None for p in text.split("^")] + [None] * 5
    family, given, middle, prefix, suffix = parts[:5]
    display = " ".join(p for p in (prefix, given, middle, family) if p)
    if suffix:
        display = f"{display}, {suffix}"
    return PersonName(raw, display, family, given, middle, prefix, suffix)


def ascii_filename_part(text: str) -> str:
    """Reduce text to ASCII letters and digits, accents transliterated first.

    The legacy scripts' rule (README.md, Run the packager): `Budi Santoso` -> `BudiSantoso`,
    `Nuñez^José` -> `NunezJose`, `MR.001` -> `MR001`.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_ALNUM.sub("", ascii_only)
