"""English and Bahasa Indonesia: one typed message table, formatted with Babel.

Why a table and not gettext catalogs: every string lives in Python next to its translation
(`page.py` for the staff page, `patient.py` for the e-mail, the hand-out and the online page,
`disc.py` for README.TXT and INDEX.HTM), so a fresh clone runs with no compile step, mypy and
ruff see it all, and `tests/packager/test_i18n.py` fails when a key lacks a language or the
two languages name different placeholders. A new string is one more entry with both texts.
Placeholders are `{name}` (str.format here, the same syntax in the page's JavaScript).
Dates, times and numbers come from Babel (CLDR): English as in en_GB (day month year, 24-hour
clock, never 12/5/2026), Indonesian as in id.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from babel import dates, negotiate_locale, numbers

from .disc import DISC
from .page import PAGE
from .patient import PATIENT

Lang = Literal["en", "id"]
LANGS: tuple[Lang, ...] = get_args(Lang)
NAMES: dict[Lang, str] = {"en": "English", "id": "Bahasa Indonesia"}
_LOCALES: dict[Lang, str] = {"en": "en_GB", "id": "id"}
MESSAGES: dict[str, dict[str, str]] = {**PAGE, **PATIENT, **DISC}


def lang_of(value: str | None) -> Lang | None:
    """ "id", "id-ID", "EN" -> the language; anything else None."""
    head = (value or "").strip().lower().replace("_", "-").split("-")[0]
    return next((lang for lang in LANGS if lang == head), None)


def negotiate(accept_language: str | None, default: Lang = "en") -> Lang:
    """The first language of an Accept-Language header we have, by the header's q order."""
    wanted = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        if tag and weight > 0:
            wanted.append((-weight, i, tag.strip()))
    found = negotiate_locale([t for _, _, t in sorted(wanted)], list(LANGS), sep="-")
    return lang_of(found) or default


def t(lang: Lang, key: str, **values: Any) -> str:
    """The message `key` in `lang`, with its placeholders filled."""
    return MESSAGES[key][lang].format(**values)


def table(lang: Lang, keys: list[str]) -> dict[str, str]:
    """The raw messages (placeholders unfilled) for the page's JavaScript."""
    return {key: MESSAGES[key][lang] for key in keys}


def number(value: float, lang: Lang, digits: int = 0) -> str:
    """12345 -> "12,345" (en) or "12.345" (id)."""
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return numbers.format_decimal(value, pattern, locale=_LOCALES[lang])


def megabytes(size: int, lang: Lang) -> str:
    return f"{number(size / 1e6, lang, 1)} MB"


def day(value: date, lang: Lang) -> str:
    """5 December 2026 / 5 Desember 2026."""
    return dates.format_date(value, "long", locale=_LOCALES[lang])


def dicom_day(value: str | None, lang: Lang) -> str:
    """A DICOM DA (YYYYMMDD) as a day in words; anything else as given."""
    text = (value or "").strip()
    try:
        return day(datetime.strptime(text, "%Y%m%d").date(), lang) if len(text) == 8 else text
    except ValueError:
        return text


def when(value: datetime, lang: Lang, timezone: str = "UTC") -> str:
    """5 December 2026, 08:33 WIB / 5 Desember 2026, 08.33 WIB: the zone always named."""
    zone = ZoneInfo(timezone)
    local = value.astimezone(zone)
    loc = _LOCALES[lang]
    name = dates.format_datetime(value, "z", tzinfo=zone, locale=loc)
    if name.startswith(("+", "-")):
        name = f"UTC{name[:3]}:{name[3:]}"
    clock = dates.format_skeleton("Hm", value, tzinfo=zone, locale=loc)
    return f"{day(local.date(), lang)}, {clock} {name}"
