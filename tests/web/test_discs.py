"""The staff page with a study bigger than one medium: the plan ("2 DVDs") is shown, then one
download button per disc, each a complete File-set (issue 22)."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By

from dicomiso_packager import plan, viewer
from dicomiso_packager.settings import PackagerSettings
from support.mariadb import add_patient

ROOM = 230_000  # bytes for images per "DVD": the CT series fits one, the MR series the other


def test_a_set_of_discs_shows_its_plan_and_one_download_per_disc(
    make_web_stack: Any, orthanc: Any, study_factory: Any, page: Any
) -> None:
    """Two image series that do not fit one (small) DVD: the page says "2 DVDs" with what
    goes on each, then offers disc 1 of 2 and disc 2 of 2 by their file names; the browser
    downloads disc 2 under its own name; the recent list says "(2 discs)"; axe stays clean."""
    study = study_factory(
        ct=8,
        mr=6,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        with_nonascii=False,
        patient_id="RM-WEB-22",
        accession="CT.2201",
    )
    orthanc.upload(study.files)
    fixed = plan.fixed_cost(viewer.viewer_source(PackagerSettings()))
    stack = make_web_stack(medium_capacity_bytes=fixed + ROOM)
    add_patient(stack.his, "RM-WEB-22", "Budi Santoso", [study.accession])

    page.open(stack.url + "/")
    page.sign_in()
    page.el("accessions").send_keys(study.accession)
    page.el("check").click()
    page.visible("confirm").click()
    plan_text = page.visible("job-plan", timeout=120).text
    page.shot("plan")
    assert plan_text.startswith("2 DVDs: the studies do not fit on one DVD."), plan_text
    assert "Disc 1: 1 study, 8 images" in plan_text and "Disc 2: 1 study, 6 images" in plan_text

    links = page.wait(
        lambda: (
            page.el("disc-links").is_displayed()
            and page.el("disc-links").find_elements(By.TAG_NAME, "a")
        ),
        timeout=120,
        what="the disc links",
    )
    page.shot("done")
    texts = [a.text for a in links]
    assert [t.split(" (")[0] for t in texts] == [
        "Download disc 1 of 2: CT2201-1of2.iso",
        "Download disc 2 of 2: CT2201-2of2.iso",
    ], texts
    assert not page.el("download").is_displayed()  # one button per disc, no "the" image
    assert page.el("job-expiry").text.startswith("The links work until")
    assert page.active_id() == "" or links[0] == page.driver.switch_to.active_element
    assert page.axe("done") == []

    links[1].click()
    saved = page.downloaded()
    assert saved.name == "CT2201-2of2.iso"

    row = page.wait(
        lambda: [
            r
            for r in page.driver.find_elements(By.CSS_SELECTOR, "#recent-rows tr")
            if "(2 discs)" in r.text
        ],
        what="the recent row",
    )[0]
    assert "CT2201-1of2.iso (2 discs)" in row.text
    page.shot("recent")

    page.el("next-patient").click()
    page.wait(lambda: page.active_id() == "accessions", what="focus on the numbers")
    assert not page.el("job-plan").is_displayed() and not page.el("disc-links").is_displayed()
