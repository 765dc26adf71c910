"""The non-DICOM part of a patient disc: README.TXT, the web pages and their JPEG previews.

IHE RAD PDI (RAD TF-1 15, RAD TF-3 4.47.4.1.2) puts next to DICOMDIR a README.TXT at the root
and, with web content, INDEX.HTM at the root and everything else under IHE_PDI/. Every name is
an ISO 9660 Level 1 8.3 upper-case name (RAD TF-3 4.47.4.1.2; PS3.12 F.3.1). The pages are
XHTML 1.0 Strict and JPEG only, with relative links, no scripts or other active content and no
external resource, so INDEX.HTM works from the disc in any browser without a server or network.
"""

from __future__ import annotations

import html
import io
import logging
import posixpath
import re
import textwrap
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import IO, Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut

from dicomiso_common.models import InstanceEntry, PatientInfo, SeriesInfo, StudyManifest
from dicomiso_common.names import person_name

from .i18n import Lang, day, dicom_day, number, t

log = logging.getLogger(__name__)

# SR (PS3.4 B.5: ...88.x), Presentation States (...11.x) and Key Objects (88.59) hold no pixels.
_NON_IMAGE_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.")
_NAME_83 = re.compile(r"^[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?$")  # ISO 9660 Level 1 d-characters
_CRLF = "\r\n"
_WIDTH = 76
_DECODE_ERRORS = (
    InvalidDicomError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    NotImplementedError,
    RuntimeError,
    OSError,
    EOFError,
)
_STYLE = (
    "body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse}"
    "th,td{border:1px solid #999;padding:.2em .5em;text-align:left;vertical-align:top}"
    "p.note{font-size:90%}img{max-width:100%}"
    "p.view a{display:inline-block;font-size:130%;font-weight:bold;padding:.5em 1em;"
    "background:#2d5fa8;color:#fff;text-decoration:none;border-radius:4px}"
)


@dataclass(frozen=True)
class DiscSet:
    """This disc is `number` of `total`; `others` maps each other disc to its studies (the
    study manifests cut down to the series on that disc)."""

    number: int
    total: int
    volume_id: str
    others: dict[int, list[StudyManifest]] = field(default_factory=dict)


def is_name_83(name: str) -> bool:
    """An ISO 9660 Level 1 file name: 8.3 upper-case d-characters (ECMA-119 7.5.1)."""
    return bool(_NAME_83.fullmatch(name))


def _version() -> str:
    try:
        return metadata.version("dicomiso-packager")
    except metadata.PackageNotFoundError:
        return "unknown"


def _is_image(entry: InstanceEntry) -> bool:
    return bool(entry.rows and entry.columns) and not entry.sop_class_uid.startswith(
        _NON_IMAGE_PREFIXES
    )


def _series_of(manifest: StudyManifest) -> list[tuple[str, SeriesInfo, int]]:
    """(series_uid, series attributes, image count) in Series Number order.

    Images are instances with pixels; an SR, KO or PR series is listed with 0 images.
    """
    counts: dict[str, int] = {}
    for entry in manifest.instances:
        uid = entry.series_uid
        counts[uid] = counts.get(uid, 0) + _is_image(entry)
    uids = dict.fromkeys([*manifest.series, *counts])
    rows = [(uid, manifest.series_info(uid), counts.get(uid, 0)) for uid in uids]
    return sorted(rows, key=lambda r: (r[1].number is None, r[1].number or 0, r[0]))


def _modalities(manifest: StudyManifest) -> str:
    found = {s.modality for _, s, _ in _series_of(manifest) if s.modality}
    return ", ".join(sorted(found))


def _sorted_studies(manifests: list[StudyManifest]) -> list[StudyManifest]:
    return sorted(manifests, key=lambda m: (m.study.date or "", m.study_uid))


def _date(value: Any) -> str:
    """DICOM DA (PS3.5 6.2) YYYYMMDD as YYYY-MM-DD; anything else is shown as given."""
    text = str(value or "").strip()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if re.fullmatch(r"\d{8}", text) else text


def _patient(manifests: list[StudyManifest]) -> PatientInfo:
    """The disc holds one patient (README.md, Run the packager); the first complete record wins."""
    return next((m.patient for m in manifests if m.patient != PatientInfo()), PatientInfo())


# -- README.TXT ------------------------------------------------------------------------------


def _ascii(text: str) -> str:
    """Fold text to printable ASCII: accents dropped (PS3.12 default repertoire ISO 646)."""
    folded = unicodedata.normalize("NFKD", text)
    kept = (c for c in folded if not unicodedata.combining(c))
    return "".join(c if " " <= c <= "~" else "?" for c in kept)


def readme_text(
    manifests: list[StudyManifest],
    *,
    institution: str,
    profile: str,
    created_at: datetime,
    viewer: str | None,
    contact: str | None = None,
    viewer_page: tuple[str, ...] | None = None,
    disc_set: DiscSet | None = None,
    lang: Lang = "en",
) -> bytes:
    """Return README.TXT: what the disc is, how to open it, who made it, what it holds.

    RAD TF-3 4.47.4.1.2 asks for contact information of the creator, the creating application
    and its version, general information on the organisation of the media (explicitly not
    specific to the patient data) and, with a viewer, what it needs. So the file names no
    patient: the disc label and INDEX.HTM identify the patient, and a file that must stay
    ASCII could not spell most names right anyway. Plain ASCII with CRLF lines reads the same
    in every editor; README.TXT is also what DICOM calls a File-set Descriptor File, whose
    default repertoire is ISO 646 (PS3.3 F.3.2.1, (0004,1142) absent). No diagnosis, ever.
    """
    instances = [e for m in manifests for e in m.instances]
    images = sum(1 for e in instances if _is_image(e))
    series = sum(len(_series_of(m)) for m in manifests)
    modalities = sorted({x for m in manifests for x in _modalities(m).split(", ") if x})
    who = _ascii(institution).strip() or t(lang, "the_hospital")
    paragraphs = [
        t(lang, "readme_title"),
        t(lang, "readme_made", who=who, day=day(created_at, lang), version=_version()),
    ]
    if disc_set is not None:
        paragraphs += [
            t(lang, "readme_disc", number=disc_set.number, total=disc_set.total),
            t(lang, "readme_disc_set", number=disc_set.number, total=disc_set.total),
        ]
    paragraphs += [
        t(
            lang,
            "readme_contents",
            studies=number(len(manifests), lang),
            study_word=t(lang, "study_one" if len(manifests) == 1 else "study_many"),
            series=number(series, lang),
            images=number(images, lang),
            files=number(len(instances), lang),
            modalities=", ".join(modalities) or t(lang, "none"),
            profile=_ascii(profile),
        ),
        t(lang, "readme_how"),
        t(lang, "readme_step1"),
        t(lang, "readme_step2"),
    ]
    if viewer_page:
        paragraphs.append(t(lang, "readme_step3_page", page="\\".join(viewer_page)))
    elif viewer:
        paragraphs.append(t(lang, "readme_step3_folder", folder=_ascii(viewer)))
    else:
        paragraphs.append(t(lang, "readme_step3_none"))
    paragraphs += [
        t(lang, "readme_privacy"),
        t(lang, "readme_keep"),
        t(lang, "readme_no_diagnosis", who=who),
        t(lang, "readme_contact"),
        f"{who}" + (f": {_ascii(contact)}" if contact else ""),
    ]
    lines: list[str] = []
    for paragraph in paragraphs:
        lines += textwrap.wrap(
            paragraph,
            _WIDTH,
            subsequent_indent="   " if paragraph[:2] in ("1.", "2.", "3.") else "",
        ) + [""]
    return _CRLF.join(_ascii(line) for line in lines).encode("ascii")


# -- web content -----------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escape for XHTML text and attribute values (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def _href(page: tuple[str, ...], target: tuple[str, ...]) -> str:
    """Relative link from one page to a file, both given as path components on the disc."""
    for part in target:
        if not _NAME_83.fullmatch(part):
            raise ValueError(f"not an ISO 9660 8.3 name: {part!r}")
    start = posixpath.join(".", *page[:-1])
    return posixpath.relpath(posixpath.join(".", *target), start)


def _page(title: str, body: Iterable[str], lang: Lang = "en") -> bytes:
    """An XHTML 1.0 Strict page that also parses as HTML (XHTML 1.0 Appendix C).

    Non-ASCII characters become character references, so the bytes are ASCII and show right
    whatever charset a browser guesses for a file:// page; the meta still declares UTF-8.
    """
    text = "\n".join(
        [
            '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
            '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">',
            f'<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="{lang}" lang="{lang}">',
            "<head>",
            '<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />',
            f"<title>{_e(title)}</title>",
            f'<style type="text/css">{_STYLE}</style>',
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
    return text.encode("ascii", "xmlcharrefreplace")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A table; head is plain text, cells are XHTML fragments already escaped."""
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return [*out, "</table>"]


def _header(institution: str, created_at: datetime, lang: Lang) -> list[str]:
    """The informative header RAD TF-3 4.47.4.1.2 asks of INDEX.HTM, with the privacy note."""
    made = t(lang, "web_made", org=institution, day=day(created_at, lang), version=_version())
    return [f"<p>{_e(made)}</p>", f'<p class="note">{_e(t(lang, "web_note"))}</p>']


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _sex(value: str | None, lang: Lang) -> str:
    return t(lang, f"js_sex_{value}") if value in ("M", "F", "O") else value or ""


def _patient_block(patient: PatientInfo, lang: Lang) -> list[str]:
    name = person_name(patient.name or "").display
    head = [t(lang, k) for k in ("col_patient", "col_patient_id", "col_birth", "col_sex")]
    return _table(
        head,
        [
            [
                _e(name),
                _e(patient.id),
                _e(dicom_day(patient.birth_date, lang)),
                _e(_sex(patient.sex, lang)),
            ]
        ],
    )


def _study_page(
    manifest: StudyManifest,
    page: tuple[str, ...],
    institution: str,
    previews: dict[str, tuple[str, ...]],
    created_at: datetime,
    lang: Lang,
) -> bytes:
    study = manifest.study
    title = " ".join(x for x in (dicom_day(study.date, lang), study.description or "") if x)
    title = title or t(lang, "web_study")
    rows = []
    for uid, series, count in _series_of(manifest):
        series_number = series.number
        preview = previews.get(uid)
        cell = (
            f'<img src="{_e(_href(page, preview))}" alt="'
            f'{_e(t(lang, "web_preview_of", number=_text(series_number)))}" />'
            if preview
            else _e(t(lang, "web_no_preview"))
        )
        rows.append(
            [_e(series_number), _e(series.modality), _e(series.description), _e(count), cell]
        )
    body = [
        f'<p><a href="{_e(_href(page, ("INDEX.HTM",)))}">{_e(t(lang, "web_back"))}</a></p>',
        f"<h1>{_e(title)}</h1>",
        *_header(institution, created_at, lang),
        *_patient_block(manifest.patient, lang),
        "<p>"
        + _e(
            t(
                lang,
                "web_accession",
                accession=study.accession_number or "",
                modalities=_modalities(manifest),
            )
        )
        + "</p>",
        *_table(
            [t(lang, k) for k in ("col_series", "col_modality", "col_description", "col_images")]
            + [t(lang, "col_preview")],
            rows,
        ),
    ]
    return _page(title, body, lang)


def web_pages(
    manifests: list[StudyManifest],
    *,
    institution: str,
    previews: dict[str, tuple[str, ...]],
    created_at: datetime,
    viewer: str | None = None,
    viewer_page: tuple[str, ...] | None = None,
    disc_set: DiscSet | None = None,
    lang: Lang = "en",
) -> list[tuple[tuple[str, ...], bytes]]:
    """Return INDEX.HTM and one IHE_PDI/STUDYnnn.HTM per study, as (path, bytes).

    INDEX.HTM carries what RAD TF-3 4.47.4.1.2 lists: the creating institution, a privacy
    note, a link to README.TXT (written by readme_text), the manifest of the importable DICOM
    content and the viewer's place. It shows the patient's name, ID and birth date: the disc
    is the patient's own. `previews` maps a series UID to its JPEG's path on the disc; links
    are relative to each page. Everything shown comes through html.escape.

    Raises:
        ValueError: More than 999 studies, or a preview path that is not 8.3 upper case.
    """
    studies = _sorted_studies(manifests)
    if len(studies) > 999:
        raise ValueError(f"{len(studies)} studies: STUDYnnn.HTM names run out at 999")
    index = ("INDEX.HTM",)
    pages: list[tuple[tuple[str, ...], bytes]] = []
    rows = []
    for nth, manifest in enumerate(studies, start=1):
        path = ("IHE_PDI", f"STUDY{nth:03d}.HTM")
        pages.append((path, _study_page(manifest, path, institution, previews, created_at, lang)))
        study = manifest.study
        series = _series_of(manifest)
        rows.append(
            [
                _e(dicom_day(study.date, lang)),
                _e(study.description),
                _e(_modalities(manifest)),
                _e(study.accession_number),
                _e(number(len(series), lang)),
                _e(number(sum(c for _, _, c in series), lang)),
                f'<a href="{_e(_href(index, path))}">{_e(t(lang, "web_open"))}</a>',
            ]
        )
    viewer_note = (
        f"<p>{_e(t(lang, 'web_viewer_folder', folder=viewer))}</p>"
        if viewer and not viewer_page
        else ""
    )
    view = (
        [
            f'<p class="view"><a href="{_e(_href(index, viewer_page))}">'
            f"{_e(t(lang, 'web_view'))}</a></p>",
            f'<p class="note">{_e(t(lang, "web_view_note"))}</p>',
        ]
        if viewer_page
        else []
    )
    columns = ("date", "description", "modalities", "accession", "series", "images", "details")
    readme = _e(_href(index, ("README.TXT",)))
    body = [
        f"<h1>{_e(t(lang, 'web_title'))}</h1>",
        *_set_note(disc_set, lang),
        *view,
        *_header(institution, created_at, lang),
        *_patient_block(_patient(studies), lang),
        f"<h2>{_e(t(lang, 'web_studies'))}</h2>",
        *_table([t(lang, f"col_{c}") for c in columns], rows),
        *_other_discs(disc_set, lang),
        f'<p>{_e(t(lang, "web_about"))} <a href="{readme}">README.TXT</a></p>',
        viewer_note,
    ]
    title = t(lang, "web_title_of", org=institution)
    if disc_set is not None:
        title = t(
            lang, "web_title_disc", number=disc_set.number, total=disc_set.total, org=institution
        )
    return [(index, _page(title, body, lang)), *pages]


def _set_note(disc_set: DiscSet | None, lang: Lang) -> list[str]:
    """Which disc of the set this is (nothing for a disc that is the whole package)."""
    if disc_set is None:
        return []
    n, total = disc_set.number, disc_set.total
    return [
        f"<h2>{_e(t(lang, 'web_disc', number=n, total=total))}</h2>",
        f"<p>{_e(t(lang, 'web_disc_set', total=total))}</p>",
    ]


def _other_discs(disc_set: DiscSet | None, lang: Lang) -> list[str]:
    """One row per study on each other disc of the set (a study split over two discs is
    listed on both, each with the series it holds)."""
    if disc_set is None or not disc_set.others:
        return []
    rows = []
    for n in sorted(disc_set.others):
        for manifest in _sorted_studies(disc_set.others[n]):
            series = _series_of(manifest)
            rows.append(
                [
                    _e(t(lang, "web_disc_of", number=n, total=disc_set.total)),
                    _e(dicom_day(manifest.study.date, lang)),
                    _e(manifest.study.description),
                    _e(_modalities(manifest)),
                    _e(manifest.study.accession_number),
                    _e(number(len(series), lang)),
                    _e(number(sum(c for _, _, c in series), lang)),
                ]
            )
    columns = ("disc", "date", "description", "modalities", "accession", "series", "images")
    head = [t(lang, f"col_{c}") for c in columns]
    return [f"<h2>{_e(t(lang, 'web_other_discs'))}</h2>", *_table(head, rows)]


# -- previews --------------------------------------------------------------------------------


def preview_candidate(manifest: StudyManifest, series_uid: str) -> InstanceEntry | None:
    """The series' middle image instance by Instance Number, or None without one."""
    images = [e for e in manifest.instances if e.series_uid == series_uid and _is_image(e)]
    images.sort(key=lambda e: (e.instance_number is None, e.instance_number or 0, e.sop_uid))
    return images[len(images) // 2] if images else None


def _first(value: Any) -> float:
    """The first of a multi-valued window attribute (PS3.3 C.11.2.1.2: pairs, first default)."""
    return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)


def _scaled(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low
    out = (arr.astype(np.float64) - low) / span if span > 0 else np.zeros(arr.shape)
    return np.asarray(np.clip(out, 0.0, 1.0) * 255.0 + 0.5, dtype=np.uint8)


def _grayscale(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT, then window (PS3.3 C.11.2.1.2.1) or VOI LUT, else min-max; 8 bits out."""
    values = apply_modality_lut(arr, ds).astype(np.float64)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        if width >= 1:
            return _scaled(values, center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2)
    if "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
    finite = values[np.isfinite(values)]
    return (
        _scaled(values, float(finite.min()), float(finite.max()))
        if finite.size
        else np.zeros(values.shape, np.uint8)
    )


def _color(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """RGB at 8 bits; pydicom has already converted YBR to RGB (PS3.3 C.7.6.3.1.2)."""
    bits = int(ds.get("BitsStored", 8))
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)  # 8 or 16 bit entries (PS3.3 C.7.6.3.1.5)
        bits = arr.dtype.itemsize * 8
    return np.asarray(arr >> (bits - 8) if bits > 8 else arr, dtype=np.uint8)


def _render(ds: Dataset) -> Image.Image:
    frames = int(ds.get("NumberOfFrames") or 1)
    ds.pixel_array_options(index=frames // 2 if frames > 1 else None)
    arr = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR" or int(ds.get("SamplesPerPixel", 1)) == 3:
        return Image.fromarray(_color(arr, ds), "RGB")
    gray = _grayscale(arr, ds)
    if photometric == "MONOCHROME1":  # minimum value is white (PS3.3 C.7.6.3.1.2)
        gray = 255 - gray
    return Image.fromarray(gray, "L")


def series_preview(fileobj: IO[bytes], max_size: int = 512) -> bytes | None:
    """A baseline JPEG of one Part 10 instance's (middle) frame, longest side <= max_size.

    Returns None for instances without pixel data (SR, KO, PR...) and for pixel data that
    the installed decoders cannot read; the latter is logged with the SOP Instance UID only.
    Only this instance, and only its middle frame decoded, is held in memory.
    """
    sop_uid: str | None = None
    try:
        ds = dcmread(fileobj)
        sop_uid = str(ds.get("SOPInstanceUID", "")) or None
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            return None
        image = _render(ds)
    except _DECODE_ERRORS as exc:
        log.warning(
            "no preview: pixel data not decodable",
            extra={"sop_uid": sop_uid, "error": type(exc).__name__},
        )
        return None
    image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, progressive=False, optimize=False)
    return out.getvalue()
