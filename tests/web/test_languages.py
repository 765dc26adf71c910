"""The staff page in English and Bahasa Indonesia (issue 18): the browser's Accept-Language
picks the language, the switch changes it and is remembered; every state (empty, unknown
number, refusal of two patients, identity, building, done, hand-out, printed hand-out, PACS
down) has no serious axe-core violation and a screenshot per language under
artifacts/web/<test>/; the hand-out's QR code, as Chromium drew it, decodes to the link."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from support.mariadb import add_patient
from support.net import free_port

from .test_page import _small

# What each language says where the tests look (the page's own message table decides).
SAYS = {
    "en": {
        "title": "Patient disc",
        "unknown": "No examination with number NOPE.9 was found.",
        "two": "2 different patients",
        "female": "Female",
        "ready": "Ready",
        "failed": "The disc could not be made:",
        "handout": "Your medical images",
        "until": "The link works until",
    },
    "id": {
        "title": "Disk pasien",
        "unknown": "Pemeriksaan dengan nomor NOPE.9 tidak ditemukan.",
        "two": "2 pasien yang berbeda",
        "female": "Perempuan",
        "ready": "Selesai",
        "failed": "Disk tidak dapat dibuat:",
        "handout": "Gambar medis Anda",
        "until": "Tautan berlaku sampai",
    },
}
ACCEPT = {"en": "en-GB,en;q=0.9", "id": "id-ID,id;q=0.9,en;q=0.5"}


def _check(page: Any, text: str) -> None:
    box = page.el("accessions")
    box.clear()
    box.send_keys(text)
    page.el("check").click()


def _decode(png: Path) -> str:
    out = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(png)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize("lang", ["en", "id"])
def test_every_state_in_each_language(
    lang: str, make_web_stack: Any, orthanc: Any, study_factory: Any, page: Any
) -> None:
    says = SAYS[lang]
    mine = _small(study_factory, patient_id=f"RM-L-{lang}", study_date="20260417")
    other = _small(study_factory, patient_id=f"RM-L-{lang}-B", seed=5)
    orthanc.upload(mine.files + other.files)
    stack = make_web_stack(
        institution_name="RS Sehat Sentosa",
        institution_address="Jl. Melati No. 5, Bandung",
        institution_phone="(022) 555-0100",
    )
    add_patient(stack.his, f"RM-L-{lang}", "Dewi Kartika", [mine.accession])
    add_patient(stack.his, f"RM-L-{lang}-B", "Joko Susilo", [other.accession])

    page.accept_language(ACCEPT[lang])
    page.open(stack.url + "/")
    page.sign_in()
    html = page.driver.find_element(By.TAG_NAME, "html")
    assert html.get_attribute("lang") == lang
    assert page.driver.find_element(By.TAG_NAME, "h1").text.startswith(says["title"])
    assert page.axe(f"{lang}-empty") == []

    _check(page, "NOPE.9")
    assert page.message().startswith(says["unknown"])
    assert page.axe(f"{lang}-unknown") == []

    _check(page, f"{mine.accession} A*")
    nth = "number 2 of 2: " if lang == "en" else "nomor ke-2 dari 2: "
    assert nth in page.message()  # after "Not checked: " / "Belum diperiksa: "
    assert ("wildcard" if lang == "en" else "karakter pengganti") in page.el("message").text
    assert page.axe(f"{lang}-wildcard") == []

    _check(page, f"{mine.accession} {other.accession}")
    assert says["two"] in page.visible("preview-reason").text
    assert not page.el("confirm").is_displayed()
    # No PACS was asked for a refused request: the rows say why, not "the PACS did not answer".
    not_asked = page.driver.execute_script("return T('studies_not_asked')")
    rows = page.driver.find_elements(By.CSS_SELECTOR, "#preview-rows tr")
    assert [r.find_elements(By.TAG_NAME, "td")[5].text for r in rows] == [not_asked] * 2
    page.driver.execute_script("document.getElementById('preview-reason').scrollIntoView()")
    assert page.axe(f"{lang}-refused") == []

    _check(page, mine.accession)
    page.visible("confirm")
    cells = [td.text for td in page.driver.find_elements(By.CSS_SELECTOR, "#preview-rows td")]
    assert cells[1] == "Dewi Kartika" and cells[4] == says["female"], cells
    assert cells[5].startswith("17 Apr 2026"), cells  # day month year in both languages
    assert page.axe(f"{lang}-identity") == []

    page.el("confirm").click()
    page.visible("job-phase")
    assert page.axe(f"{lang}-building") == []
    page.visible("download", timeout=120)
    assert page.el("job-phase").text == says["ready"]
    assert page.el("job-expiry").text.startswith(says["until"])
    assert page.axe(f"{lang}-done") == []

    page.el("handout-show").click()
    page.visible("handout")
    page.wait(lambda: page.el("handout-title").text == says["handout"], what="the hand-out")
    sheet = page.el("handout").text
    assert "RS Sehat Sentosa" in sheet and "Jl. Melati No. 5, Bandung" in sheet
    assert "(022) 555-0100" in sheet and "ZIP" in sheet and "ISO" in sheet
    assert "Dewi" not in sheet and f"RM-L-{lang}" not in sheet  # no patient on the sheet
    job_id = page.driver.current_url.split("?job=")[1]
    status = stack.store.get_json(f"jobs/package/{job_id}.json")[0]["result"]
    assert page.el("handout-link").text == status["view_url"]
    qr_png = page.shots / f"qr-{lang}.png"
    page.el("handout-qr").screenshot(str(qr_png))
    assert _decode(qr_png) == status["view_url"]  # what Chromium drew, read by zbar
    assert page.axe(f"{lang}-handout") == []

    # Printed, the sheet is all there is: no header, no form, no list of packages.
    page.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        page.shot(f"{lang}-print")
        assert page.el("handout").is_displayed() and page.el("handout-title").is_displayed()
        for hidden in ("order-section", "job", "recent-section", "handout-print"):
            assert not page.el(hidden).is_displayed(), hidden
        assert not page.driver.find_element(By.TAG_NAME, "header").is_displayed()
        assert page.axe(f"{lang}-print") == []
    finally:
        page.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


@pytest.mark.parametrize("lang", ["en", "id"])
def test_pacs_down_in_each_language(lang: str, make_web_stack: Any, page: Any) -> None:
    """The PACS does not answer: the reason is shown in the page's language; axe clean."""
    stack = make_web_stack(retriever={"pacs_port": free_port()})
    add_patient(stack.his, "RM-L-DOWN", "Rina Wati", ["MR.5105"])
    page.accept_language(ACCEPT[lang])
    page.open(stack.url + "/")
    page.sign_in()
    _check(page, "MR.5105")
    cell = page.wait(
        lambda: [td.text for td in page.driver.find_elements(By.CSS_SELECTOR, "#preview-rows td")],
        what="the identity rows",
    )
    assert cell[5] == page.driver.execute_script("return T('studies_unavailable')"), cell
    assert page.axe(f"{lang}-identity-pacs-down") == []
    page.visible("confirm").click()
    message = page.message(timeout=60)
    assert message.startswith(SAYS[lang]["failed"])
    # Said for a clerk, with what to do; the service's own words follow as the details.
    clerk = page.driver.execute_script("return T('why_pacs_down')")
    assert message.startswith(f"{SAYS[lang]['failed']} {clerk}"), message
    assert "unreachable" in message.split(clerk)[1]
    assert page.axe(f"{lang}-pacs-down") == []


def test_switch_changes_the_language_and_is_remembered(make_web_stack: Any, page: Any) -> None:
    """Accept-Language says Indonesian; the switch says English, and English it stays (a
    cookie holding the choice only) until switched back; the switch marks the current one."""
    stack = make_web_stack()
    page.accept_language(ACCEPT["id"])
    page.open(stack.url + "/")
    page.sign_in()
    assert page.el("check").text == "Periksa pasien"
    current = page.driver.find_element(By.CSS_SELECTOR, "nav.lang a[aria-current]")
    assert current.text == "Bahasa Indonesia"
    page.shot("id")

    page.driver.find_element(By.CSS_SELECTOR, 'nav.lang a[data-lang="en"]').click()
    page.wait(lambda: page.el("check").text == "Check patient", what="English")
    assert page.driver.current_url == stack.url + "/"  # the switch leaves no ?lang= behind
    page.open(stack.url + "/")
    page.visible("check")
    assert page.el("check").text == "Check patient"  # remembered over Accept-Language
    assert page.driver.get_cookie("dicomiso-lang")["value"] == "en"
    page.shot("en")

    page.driver.find_element(By.CSS_SELECTOR, 'nav.lang a[data-lang="id"]').click()
    page.wait(lambda: page.el("check").text == "Periksa pasien", what="Indonesian again")
    assert page.axe("switched-back") == []
