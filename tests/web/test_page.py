"""The staff page in Chromium against the real stack: order, confirm, follow, download."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from support.mariadb import add_patient

DICOM_ISO = str(Path(sys.executable).with_name("dicom-iso"))
JOB_URL = re.compile(r"^http://127\.0\.0\.1:\d+/(\?job=[0-9a-f]{32})?$")


def _small(study_factory: Any, **kw: Any) -> Any:
    return study_factory(
        ct=1,
        mr=1,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        with_nonascii=False,
        **kw,
    )


def _verify(path: Path) -> None:
    checked = subprocess.run(
        [DICOM_ISO, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_two_accessions_of_one_patient_confirm_wait_download(
    make_web_stack: Any, orthanc: Any, study_factory: Any, page: Any
) -> None:
    """Sign in with the token, enter two accessions, see whose they are, confirm, follow the
    progress, download: the file is a valid disc, and no URL of the page held patient data."""
    a = _small(study_factory, patient_id="RM-WEB-1", accession="MR.7001")
    b = _small(study_factory, patient_id="RM-WEB-1", accession="CT.7002", seed=3)
    orthanc.upload(a.files + b.files)
    stack = make_web_stack()
    add_patient(stack.his, "RM-WEB-1", "Budi Santoso", [a.accession, b.accession])

    page.open(stack.url + "/")
    page.sign_in()
    page.el("accessions").send_keys(f"{a.accession}, {b.accession}")
    page.shot("entered")
    page.el("check").click()
    page.visible("confirm")
    rows = page.driver.find_elements(By.CSS_SELECTOR, "#preview-rows tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    page.shot("confirm-patient")
    assert [c[:3] for c in cells] == [
        [a.accession, "Budi Santoso", "RM-WEB-1"],
        [b.accession, "Budi Santoso", "RM-WEB-1"],
    ]
    assert stack.keys("jobs/") == []  # looking is not ordering

    page.el("confirm").click()
    page.visible("job-phase")
    page.wait(lambda: page.el("job-phase").text not in ("", "Starting"), what="a phase")
    page.shot("progress")
    link = page.visible("download", timeout=120)
    page.shot("done")
    assert "NunezBudi" not in link.text and "BudiSantoso-MR7001CT7002.iso" in link.text
    assert "The link works until" in page.el("job-expiry").text
    view = page.el("view-online")
    assert view.is_displayed() and "/view.html?" in str(view.get_attribute("href"))
    assert JOB_URL.match(page.driver.current_url), page.driver.current_url
    link.click()
    image = page.downloaded()
    page.shot("downloaded")

    assert image.name == "BudiSantoso-MR7001CT7002.iso"
    _verify(image)
    recent = page.wait(
        lambda: page.driver.find_elements(By.CSS_SELECTOR, "#recent-rows tr"),
        what="the recent list",
    )
    assert "BudiSantoso-MR7001CT7002.iso" in recent[0].text and "Ready" in recent[0].text
    audit = [stack.store.get_json(k)[0] for k in stack.keys("audit/")]
    assert {e["action"] for e in audit} >= {"preview", "package"}
    # Requests name who asked; how a job ended is the job's own event ("system (job)").
    assert {e["user"] for e in audit if e["user"] != "system (job)"} == {"api-token"}
    assert not [k for k in stack.keys("") if "Budi" in k or "Santoso" in k]


def test_keyboard_only(make_web_stack: Any, orthanc: Any, study_factory: Any, page: Any) -> None:
    """Tab and Enter alone: sign in, type, check, confirm, download."""
    study = _small(study_factory, patient_id="RM-WEB-2")
    orthanc.upload(study.files)
    stack = make_web_stack()
    add_patient(stack.his, "RM-WEB-2", "Siti Aminah", [study.accession])
    keys = ActionChains(page.driver)

    def press(*sequence: str) -> None:
        for key in sequence:
            keys.send_keys(key).perform()

    def tab_to(element_id: str, limit: int = 10) -> None:
        for _ in range(limit):
            if page.active_id() == element_id:
                return
            press(Keys.TAB)
        raise AssertionError(f"Tab never reached #{element_id} (at #{page.active_id()})")

    page.open(stack.url + "/")
    page.visible("token")
    assert page.active_id() == "token"  # the sign-in takes the focus
    press(*"web-token", Keys.ENTER)
    page.wait(lambda: "Signed in as" in page.el("user").text, what="sign-in")
    tab_to("accessions")
    press(*study.accession)
    tab_to("check")
    page.shot("keyboard-entered")
    press(Keys.ENTER)
    page.visible("confirm")
    assert page.active_id() == "preview-title"  # the question is read out first
    tab_to("confirm", limit=2)
    page.shot("keyboard-confirm")
    press(Keys.ENTER)
    page.visible("download", timeout=120)
    page.wait(lambda: page.active_id() == "download", what="focus on the download")
    page.shot("keyboard-done")
    press(Keys.ENTER)
    image = page.downloaded()

    assert image.name == f"{study.accession}.iso"
    _verify(image)
    # The hand-out too: Tab to its button, Enter, and the sheet is read from its title.
    tab_to("handout-show")
    press(Keys.ENTER)
    page.visible("handout")
    page.wait(lambda: page.active_id() == "handout-title", what="focus on the hand-out")
    # Shift+Tab: the print button sits just before the title.
    ActionChains(page.driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert page.active_id() == "handout-print"
    page.shot("keyboard-handout")


def test_send_to_pacs_lists_the_peers_and_shows_its_progress(
    make_web_stack: Any, orthanc: Any, orthanc_factory: Any, study_factory: Any, page: Any
) -> None:
    """After the patient is confirmed, the configured peers are offered; sending shows the
    forward's own progress until the peer has every instance."""
    study = _small(study_factory, patient_id="RM-WEB-8")
    orthanc.upload(study.files)
    peer = orthanc_factory(aet="PEERPACS")
    stack = make_web_stack(
        peers={"archive": {"aet": "PEERPACS", "host": "127.0.0.1", "port": peer.dicom_port}}
    )
    add_patient(stack.his, "RM-WEB-8", "Wayan Sudarma", [study.accession])

    page.open(stack.url + "/")
    page.sign_in()
    page.el("accessions").send_keys(study.accession)
    page.el("check").click()
    page.visible("forward-form")
    assert page.el("peer").text.startswith("archive (PEERPACS)")
    page.shot("peers")
    page.el("forward").click()
    page.wait(lambda: page.el("forward-phase").text.startswith("Sent:"), 90, "the forward")
    page.shot("forwarded")

    assert (
        page.el("forward-phase").text
        == f"Sent: {len(study.files)} of {len(study.files)} images accepted by the PACS"
    )
    assert len(peer.instance_ids_of_study(study.study_uid)) == len(study.files)
    assert stack.keys("jobs/package/") == []
