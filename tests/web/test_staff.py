"""What a clerk meets on the staff page (issue 18): wording, dates, mail switched off, the
next patient, the recent list, the favicon, and axe-core on every state of the page."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import httpx
from selenium.webdriver.common.by import By

from support.mariadb import add_patient
from support.stored import stored_keys

from .conftest import TOKEN
from .test_page import _small

# 5 Dec 2026, 01:33 UTC: day, month name, year, 24-hour clock, the zone named (en-GB).
WHEN = re.compile(r"\d{1,2} [A-Z][a-z]{2,3} \d{4}, \d{2}:\d{2} (UTC|GMT[+-]\d{1,2}(:\d{2})?)")
MAIL_OFF = "Sending e-mail is not set up on this server"


def test_errors_in_clerk_words_and_axe_on_empty_and_error(
    make_web_stack: Any, orthanc: Any, page: Any
) -> None:
    """An unknown number names the number and what to do; `MR 001;` is called malformed (not
    split into MR and 001, so nothing is asked of the HIS); no serious axe violation."""
    stack = make_web_stack()
    orthanc.mark()
    page.open(stack.url + "/")
    page.sign_in()
    # The harness sees what it should: an image without a text alternative is critical.
    page.driver.execute_script(
        "const i = document.createElement('img'); i.id = 'axe-probe'; i.src = '/favicon.svg';"
        "document.querySelector('main').append(i);"
    )
    assert [v["id"] for v in page.axe("probe")] == ["image-alt"]
    page.driver.execute_script("document.getElementById('axe-probe').remove();")
    assert page.axe("empty") == []

    page.el("accessions").send_keys("NOPE.9")
    page.el("check").click()
    message = page.message()
    assert message == (
        "No examination with number NOPE.9 was found. Check the number on the request form."
    )
    assert "HIS" not in message
    assert page.axe("error-unknown") == []

    page.el("accessions").clear()
    page.el("accessions").send_keys("MR 001;")
    page.el("check").click()
    page.wait(lambda: "malformed" in page.el("message").text, what="the typo")
    assert '"MR 001" looks malformed' in page.el("message").text
    page.shot("typo")
    events = [stack.store.get_json(k)[0] for k in stack.keys("audit/")]
    previews = [e for e in events if (e["action"], e["outcome"]) == ("preview", "requested")]
    assert len(previews) == 1  # NOPE.9 only: the typo never left the page
    assert orthanc.move_requests() == 0


def test_one_patient_start_to_next_patient_with_mail_off(
    make_web_stack: Any, orthanc: Any, study_factory: Any, page: Any
) -> None:
    """Identity shown, building, done: axe clean each time; mail switched off in both places
    with one sentence; dates unambiguous; "Next patient" clears everything of this patient;
    the recent list shows a friendly state and the patient's name; favicon served."""
    study = _small(study_factory, patient_id="RM-WEB-18", study_date="20260417")
    orthanc.upload(study.files)
    stack = make_web_stack()
    add_patient(stack.his, "RM-WEB-18", "Dewi Kartika", [study.accession])
    orthanc.mark()

    with urllib.request.urlopen(stack.url + "/favicon.ico") as icon:
        assert icon.status == 200 and icon.headers["Content-Type"].startswith("image/svg+xml")
        assert b"<svg" in icon.read()

    page.open(stack.url + "/")
    page.sign_in()
    assert not page.el("email").is_enabled()
    assert page.el("mail-off").text.startswith(MAIL_OFF)
    page.el("accessions").send_keys(study.accession)
    page.el("check").click()
    page.visible("confirm")
    row = page.driver.find_element(By.CSS_SELECTOR, "#preview-rows tr")
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    # Name and ID from the HIS; birth date, sex and the study from a C-FIND of the PACS.
    assert cells[1:5] == ["Dewi Kartika", "RM-WEB-18", "1 Jan 1970", "Female"], cells
    assert cells[5] == f"17 Apr 2026, CT/MR, Synthetic study, {len(study.files)} images", cells
    assert orthanc.find_requests() >= 1 and orthanc.move_requests() == 0
    assert stored_keys(stack.store) == []  # nothing retrieved before the clerk confirms
    assert page.axe("identity") == []

    page.el("confirm").click()
    page.visible("job-phase")
    assert not page.el("confirm").is_displayed()  # the choice is made
    assert page.axe("building") == []
    page.visible("download", timeout=120)
    assert page.axe("done") == []

    expiry = page.el("job-expiry").text
    assert WHEN.search(expiry), expiry
    assert not page.el("mail-to").is_enabled() and not page.el("mail-send").is_enabled()
    assert page.el("mail-to-off").text.startswith(MAIL_OFF)
    assert "DICOMISO" not in page.driver.find_element(By.TAG_NAME, "body").text
    job_id = page.driver.current_url.split("?job=")[1]
    refused = httpx.post(
        f"{stack.url}/v1/packages/{job_id}/email",
        json={"email": "patient@example.org"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert refused.status_code == 409 and refused.json()["detail"].startswith(MAIL_OFF)

    row = page.wait(
        lambda: [
            r
            for r in page.driver.find_elements(By.CSS_SELECTOR, "#recent-rows tr")
            if "Ready" in r.text
        ],
        what="the recent row",
    )[0]
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert WHEN.fullmatch(cells[0]) and cells[1] == "Dewi Kartika" and cells[3] == "Ready"
    assert "E-mail" not in cells[-1]

    page.el("next-patient").click()
    page.wait(lambda: page.active_id() == "accessions", what="focus on the numbers")
    page.shot("next-patient")
    body = page.driver.find_element(By.TAG_NAME, "body").text
    main_part = body.split("Recent packages")[0]
    assert "Dewi Kartika" not in main_part and "RM-WEB-18" not in main_part
    assert page.el("accessions").get_attribute("value") == ""
    assert not page.el("preview").is_displayed() and not page.el("job").is_displayed()
    assert page.driver.current_url == stack.url + "/"
    assert page.axe("next") == []
