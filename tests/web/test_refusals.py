"""Every refusal and failure shows its reason on the page and starts nothing it should not;
everything the page shows is text, never markup."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from selenium.webdriver.common.by import By

from support.mariadb import add_patient
from support.net import free_port
from support.stored import stored_keys

TOKEN = "web-token"  # tests/web/conftest.py

# No "=" or "^": those are the PN component separators, and lookup shows the first group only.
NAME = '<script>document.body.classList.add("pwned")</script><b>Budi</b> & Co'


def _one(study_factory: Any, patient_id: str) -> Any:
    return study_factory(
        ct=1,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        with_nonascii=False,
        patient_id=patient_id,
    )


def _check(page: Any, text: str) -> None:
    box = page.el("accessions")
    box.clear()
    box.send_keys(text)
    page.el("check").click()


def test_mixed_patients_wildcard_and_unknown_are_refused_before_anything_starts(
    make_web_stack: Any, orthanc: Any, study_factory: Any, page: Any
) -> None:
    a, b = _one(study_factory, "RM-WEB-4A"), _one(study_factory, "RM-WEB-4B")
    orthanc.upload(a.files + b.files)
    stack = make_web_stack()
    add_patient(stack.his, "RM-WEB-4A", "Ani Lestari", [a.accession])
    add_patient(stack.his, "RM-WEB-4B", "Joko Susilo", [b.accession])
    orthanc.mark()
    page.open(stack.url + "/")
    page.sign_in()

    _check(page, f"{a.accession}\n{b.accession}")
    reason = page.visible("preview-reason").text
    page.shot("mixed")
    assert "2 different patients" in reason and "one patient only" in reason
    assert not page.el("confirm").is_displayed()
    names = [td.text for td in page.driver.find_elements(By.CSS_SELECTOR, "#preview-rows td")]
    assert "Ani Lestari" in names and "Joko Susilo" in names  # so the clerk sees which is wrong

    _check(page, f"{a.accession} A*")
    message = page.message()
    page.shot("wildcard")
    assert "number 2 of 2" in message and "wildcard" in message
    assert not page.el("preview").is_displayed()

    _check(page, "NOSUCH.404")
    page.wait(
        lambda: "No examination with number" in page.el("message").text, what="unknown accession"
    )
    page.shot("unknown")
    assert not page.el("preview").is_displayed()

    assert stack.keys("jobs/") == [] and stored_keys(stack.store) == []
    assert orthanc.find_requests() == 0 and orthanc.move_requests() == 0


def test_pacs_down_fails_the_disc_with_the_reason(
    make_web_stack: Any, study_factory: Any, page: Any
) -> None:
    """Lookup still answers (HIS), the retrieval cannot reach the PACS: the page says so and
    no image is made."""
    stack = make_web_stack(retriever={"pacs_port": free_port()})
    add_patient(stack.his, "RM-WEB-5", "Rina Wati", ["MR.5005"])
    page.open(stack.url + "/")
    page.sign_in()

    _check(page, "MR.5005")
    page.visible("confirm").click()
    message = page.message(timeout=60)
    page.shot("pacs-down")

    assert message.startswith("The disc could not be made:")
    assert "ABPACS" in message or "PACS" in message, message
    assert page.el("job-phase").text == "Failed"
    assert not page.el("job-done").is_displayed()
    assert [k for k in stack.keys("packages/")] == []


def test_page_escapes_what_it_shows_and_legacy_url_lands_on_it(
    make_web_stack: Any, page: Any
) -> None:
    """A name with markup in the HIS renders as text; the legacy /mkiso URL opens the page with
    the numbers filled in and checks the patient (nothing is ordered), then drops the numbers
    from the address bar."""
    stack = make_web_stack()
    add_patient(stack.his, "RM-WEB-6", NAME, ["MR.6006", "CT.6007"])
    page.open(stack.url + "/")
    page.sign_in()

    page.open(stack.url + "/mkiso?accession_number=MR.6006,CT.6007")
    page.visible("confirm")
    page.shot("legacy-escaped")

    names = [
        tr.find_elements(By.TAG_NAME, "td")[1].text
        for tr in page.driver.find_elements(By.CSS_SELECTOR, "#preview-rows tr")
    ]
    assert names == [NAME, NAME]
    assert "pwned" not in (
        page.el("preview").find_element(By.XPATH, "/html/body").get_attribute("class") or ""
    )
    assert page.driver.find_elements(By.CSS_SELECTOR, "#preview-rows b, #preview-rows script") == []
    assert page.driver.current_url == stack.url + "/"
    assert stack.keys("jobs/") == []

    hostile = "</textarea><script>window.__pwned=3</script>"
    page.open(stack.url + "/mkiso?accession_number=" + quote(hostile))
    page.message()
    assert page.el("accessions").get_attribute("value") == hostile
    assert page.driver.execute_script("return window.__pwned") is None


def test_api_of_the_page_needs_the_token_and_audits_the_proxy_user(make_web_stack: Any) -> None:
    """The page is public (it holds no data), its API is not; behind the proxy the user header
    (trusted only with the token) is who the audit event names; scripts keep the old /mkiso."""
    stack = make_web_stack(user_header="X-Forwarded-User")
    add_patient(stack.his, "RM-WEB-7", "Dewi Sartika", ["MR.7007"])
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Forwarded-User": "clerk.ani"}
    with httpx.Client(base_url=stack.url, trust_env=False) as http:
        index = http.get("/", headers={"Accept": "text/html"})
        anonymous = http.post(
            "/v1/previews",
            json={"accession_numbers": ["MR.7007"]},
            headers={"X-Forwarded-User": "mallory"},
        )
        preview = http.post("/v1/previews", json={"accession_numbers": ["MR.7007"]}, headers=auth)
        script = http.get("/mkiso?accession_number=MR.7007")
        session = http.get("/v1/session", headers=auth).json()

    assert (
        index.status_code == 200
        and "default-src 'none'" in index.headers["content-security-policy"]
    )
    assert anonymous.status_code == 401 and script.status_code == 401
    assert preview.status_code == 200, preview.text
    assert preview.json()["accessions"][0]["patient_name"] == "Dewi Sartika"
    assert session["user"] == "clerk.ani"
    events = [stack.store.get_json(k)[0] for k in stack.keys("audit/")]
    ours = sorted(
        (e["action"], e["user"], e["outcome"]) for e in events if e["service"] == "packager"
    )
    # asked, then answered (with the PatientIDs found, for the Query audit message)
    assert ours == [("preview", "clerk.ani", "requested"), ("preview", "clerk.ani", "succeeded")]
