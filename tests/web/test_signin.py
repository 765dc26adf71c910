"""The staff page signing in with the hospital's identity provider, in Chromium: the test IdP
(tests/support/idp.py) over HTTP, its login form filled in, back on the page signed in with
the sections the roles allow; a patient checked and a disc made on the session cookie;
signed out; an auditor sees no order form."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from selenium.webdriver.common.by import By

from dicomiso_common import audit
from support.idp import AUDIENCE, CLIENT_ID, CLIENT_SECRET, Idp, running_idp
from support.mariadb import add_patient

SESSION_SECRET = "a-session-signing-key-of-forty-characters!"


def small_study(study_factory: Any, **kw: Any) -> Any:
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


@pytest.fixture
def idp() -> Iterator[Idp]:
    with running_idp() as idp:
        yield idp


def idp_login(page: Any, user: str) -> None:
    """On the IdP's own page: fill its form and submit, as a clerk would."""
    page.wait(lambda: page.driver.find_elements(By.ID, "kc-login"), what="the IdP's form")
    page.shot(f"idp-form-{user}")
    page.el("username").send_keys(user)
    page.el("password").send_keys(f"{user}-pw")
    page.el("kc-login").click()


def test_sign_in_with_the_idp_make_a_disc_sign_out(
    make_web_stack: Any, orthanc: Any, study_factory: Any, page: Any, idp: Idp
) -> None:
    study = small_study(study_factory, patient_id="RM-WEB-SSO")
    orthanc.upload(study.files)
    stack = make_web_stack(
        oidc_issuer=idp.issuer,
        oidc_audience=AUDIENCE,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=SecretStr(CLIENT_SECRET),
        session_secret=SecretStr(SESSION_SECRET),
    )
    idp.redirect_uris.add(f"{stack.url}/auth/callback")
    idp.logout_uris.add(f"{stack.url}/")
    add_patient(stack.his, "RM-WEB-SSO", "Dewi Lestari", [study.accession])

    page.open(stack.url + "/")
    link = page.visible("sign-in-link")
    assert not page.el("auth-form").is_displayed()  # no token field in sign-in mode
    assert not page.el("order-section").is_displayed()
    assert page.axe("sign-in") == []
    link.click()
    idp_login(page, "clerk")
    page.wait(lambda: "Signed in as clerk" in page.el("user").text, what="signed in")
    assert page.el("sign-out").is_displayed() and page.el("order-section").is_displayed()
    assert not page.el("auth").is_displayed()
    assert page.driver.current_url == stack.url + "/"  # no code or state left in the URL
    # The session cookie is HttpOnly: the page's script cannot read it.
    assert "dicomiso-session" not in page.driver.execute_script("return document.cookie")
    assert page.axe("signed-in-clerk") == []

    page.el("accessions").send_keys(study.accession)
    page.el("check").click()  # a POST on the session cookie, through BodyGate
    page.visible("confirm")
    assert "Lestari" in page.el("preview-rows").text
    assert not page.el("forward-form").is_displayed()  # a clerk does not send to a PACS
    page.shot("checked")
    page.el("confirm").click()  # the disc: a POST, then the page polls its job on the cookie
    page.visible("download", timeout=120)
    page.shot("disc-ready")

    page.el("sign-out").click()
    page.visible("sign-in-link")
    assert page.el("user").text == "" and not page.el("sign-out").is_displayed()
    page.shot("signed-out")
    assert idp.logouts == 1

    # An auditor: signed in, but nothing to make discs with.
    page.el("sign-in-link").click()
    idp_login(page, "auditor")
    page.wait(lambda: "Signed in as auditor" in page.el("user").text, what="auditor")
    assert not page.el("order-section").is_displayed()
    assert not page.el("recent-section").is_displayed()
    page.shot("signed-in-auditor")
    page.el("sign-out").click()
    page.visible("sign-in-link")

    events = [(e["action"], e["user"], e["outcome"]) for e in stack_events(stack)]
    assert ("sign-in", "clerk", "succeeded") in events
    assert ("sign-out", "clerk", "succeeded") in events
    assert ("preview", "clerk", "succeeded") in events
    assert any(a == "package" and u == "clerk" for a, u, _ in events)
    assert ("sign-in", "auditor", "succeeded") in events


def stack_events(stack: Any) -> list[dict[str, Any]]:
    found, _ = audit.events_since(stack.store, datetime.now(UTC) - timedelta(minutes=30))
    return found
