"""Two languages (issue 18): the message table, the disc's README.TXT and INDEX.HTM, the
hand-out and its QR code (decoded by zbarimg, a real decoder), Accept-Language."""

from __future__ import annotations

import re
import string
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import segno
from PIL import Image, ImageDraw
from pydantic import ValidationError

from dicomiso_packager import handout, i18n, online
from dicomiso_packager.settings import PackagerSettings
from support.discs import download, read_iso
from support.mariadb import add_patient

_FIELDS = string.Formatter()


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in _FIELDS.parse(text) if name}


def test_every_message_has_both_languages_with_the_same_placeholders() -> None:
    """A key without Indonesian, or an Indonesian text naming another placeholder, fails."""
    assert i18n.LANGS == ("en", "id")
    for key, texts in i18n.MESSAGES.items():
        assert set(texts) == set(i18n.LANGS), key
        assert texts["en"].strip() and texts["id"].strip(), key
        assert _placeholders(texts["en"]) == _placeholders(texts["id"]), key
        assert "DICOMISO_" not in texts["en"] + texts["id"], key  # no setting names
        assert " HIS" not in texts["en"] + texts["id"], key  # no jargon


def test_accept_language_picks_the_first_language_we_have() -> None:
    assert i18n.negotiate("id-ID,id;q=0.9,en;q=0.8") == "id"
    assert i18n.negotiate("fr-FR, en;q=0.5, id;q=0.4") == "en"
    assert i18n.negotiate("en;q=0.2, id;q=0.9") == "id"
    assert i18n.negotiate("de, fr") == "en" and i18n.negotiate(None) == "en"
    assert i18n.lang_of("ID") == "id" and i18n.lang_of("xx") is None


def test_dates_and_numbers_in_the_locale_format() -> None:
    moment = datetime(2026, 12, 5, 1, 33, tzinfo=UTC)
    assert i18n.when(moment, "en") == "5 December 2026, 01:33 UTC"
    assert i18n.when(moment, "id", "Asia/Jakarta") == "5 Desember 2026, 08.33 WIB"
    assert i18n.number(12345, "en") == "12,345" and i18n.number(12345, "id") == "12.345"
    assert i18n.dicom_day("19800417", "id") == "17 April 1980"
    assert i18n.dicom_day("not a date", "en") == "not a date"


def _decode(png: Path) -> str:
    """The text of the one QR code in a PNG, by zbar (scripts/setup installs zbar-tools)."""
    out = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(png)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _draw(qr: dict[str, Any], png: Path, scale: int = 8) -> None:
    """Render the page's SVG path (unit squares "Mx yh1v1h-1z") as the browser would."""
    size = qr["size"]
    image = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(image)
    for x, y in re.findall(r"M(\d+) (\d+)h1v1h-1z", qr["path"]):
        left, top = int(x) * scale, int(y) * scale
        draw.rectangle((left, top, left + scale - 1, top + scale - 1), fill=0)
    image.save(png)


def test_qr_path_decodes_to_the_link(tmp_path: Path) -> None:
    """The path the page draws is the code segno made: zbarimg reads the link back."""
    link = (
        "http://127.0.0.1:9000/dicom-iso/packages/0123abcd/view.html?X-Amz-Algorithm="
        "AWS4-HMAC-SHA256&X-Amz-Credential=test%2F20261205%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20261205T013300Z&X-Amz-Expires=259200&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=" + "f" * 64
    )
    qr = handout.qr_path(link)
    assert qr["size"] == segno.make(link, error="m").symbol_size(scale=1, border=4)[0]
    _draw(qr, tmp_path / "qr.png")
    assert _decode(tmp_path / "qr.png") == link


def test_a_package_in_indonesian_disc_handout_and_qr(
    make_stack: Any, orthanc: Any, study_factory: Any, tmp_path: Path
) -> None:
    """DICOMISO_LANGUAGE=id: README.TXT (ASCII) and INDEX.HTM are Indonesian with dates in
    Indonesian; the hand-out (either language, by ?lang= or Accept-Language) carries the
    institution's name, address and telephone, the expiry and a QR code of the online page
    that zbarimg decodes; it names no patient and writes nothing to the audit trail."""
    study = study_factory(
        ct=2,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        with_nonascii=False,
        patient_id="RM-ID-1",
        study_date="20260417",
    )
    orthanc.upload(study.files)
    stack = make_stack(
        language="id",
        timezone="Asia/Jakarta",
        institution_name="RS Sehat Sentosa",
        institution_address="Jl. Melati No. 5, Bandung",
        institution_phone="(022) 555-0100",
    )
    add_patient(stack.his, "RM-ID-1", "Siti Rahayu", [study.accession])
    status = stack.run({"accession_numbers": [study.accession]})
    assert status["state"] == "succeeded", status

    download(status["download_url"], tmp_path / "disc.iso")
    tree = read_iso(tmp_path / "disc.iso")
    readme = tree.files["README.TXT"].decode("ascii")
    flat = " ".join(readme.split())
    assert flat.startswith("GAMBAR MEDIS PADA DISK INI Disk ini berisi gambar medis")
    assert "CARA MEMBUKANYA" in flat and "tidak memuat diagnosis" in flat
    assert "1 pemeriksaan, 1 seri, 2 gambar" in flat
    assert re.search(
        r"pada \d{1,2} (Januari|Februari|Maret|April|Mei|Juni|Juli|Agustus|"
        r"September|Oktober|November|Desember) \d{4}",
        flat,
    ), flat
    assert "Jl. Melati No. 5, Bandung, (022) 555-0100" in flat
    assert "Siti" not in flat and "RM-ID-1" not in flat
    index = tree.files["INDEX.HTM"].decode("ascii")
    assert 'xml:lang="id" lang="id"' in index
    assert "Pemeriksaan pada disk ini" in index and "17 April 2026" in index
    assert "Tanggal lahir" in index and "Lihat gambar" in index

    audit_before = len(list(stack.store.list("audit/")))
    asks: list[tuple[str, dict[str, str], i18n.Lang]] = [
        ("?lang=id", {}, "id"),
        ("", {"Accept-Language": "en-GB,en;q=0.9"}, "en"),
    ]
    for query, headers, lang in asks:
        got = stack.packager.get(f"/v1/packages/{status['id']}/handout{query}", headers=headers)
        assert got.status_code == 200, got.text
        sheet = got.json()
        assert sheet["lang"] == lang and sheet["link"] == status["view_url"]
        assert sheet["contact"][:3] == [
            "RS Sehat Sentosa",
            "Jl. Melati No. 5, Bandung",
            i18n.t(lang, "contact_phone", phone="(022) 555-0100"),
        ]
        expires = i18n.when(datetime.fromisoformat(status["expires_at"]), lang, "Asia/Jakarta")
        assert expires in sheet["expiry"]
        assert ("WIB" if lang == "id" else "UTC+07:00") in sheet["expiry"]
        assert len(sheet["steps"]) == 2 and "ZIP" in sheet["gives"] and "ISO" in sheet["gives"]
        everything = str(sheet)
        assert "Siti" not in everything and "RM-ID-1" not in everything
        _draw(sheet["qr"], tmp_path / f"handout-{lang}.png")
        assert _decode(tmp_path / f"handout-{lang}.png") == status["view_url"]
    assert (
        "Gambar medis Anda"
        == stack.packager.get(f"/v1/packages/{status['id']}/handout?lang=id").json()["title"]
    )
    assert len(list(stack.store.list("audit/"))) == audit_before  # reading writes nothing


def test_online_page_document_in_indonesian() -> None:
    """The online page's texts (title, instructions, expiry, contact) follow
    DICOMISO_LANGUAGE and DICOMISO_TIMEZONE; the viewer shows them as given."""
    settings = PackagerSettings(
        language="id",
        timezone="Asia/Jakarta",
        institution_name="RS Sehat Sentosa",
        institution_phone="(022) 555-0100",
    )
    moment = datetime(2026, 12, 5, 1, 33, tzinfo=UTC)
    page = online.document(settings, [], [], moment)["page"]
    assert page["lang"] == "id" and page["title"] == "Gambar Anda dari RS Sehat Sentosa"
    assert page["expires_text"] == "Halaman ini berlaku sampai 5 Desember 2026, 08.33 WIB."
    assert page["contact_text"] == "Kontak: (022) 555-0100"
    assert page["instructions"][0].startswith("Seri pertama sudah terbuka")
    assert "RS Sehat Sentosa" in page["instructions"][2]


def test_unknown_time_zone_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValidationError, match="Asia/Jakarta"):
        PackagerSettings(timezone="Mars/Olympus")
