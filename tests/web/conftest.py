"""The staff page against the real stack, in a real browser.

lookup (real MariaDB HIS), retriever (Orthanc as the PACS) and the packager itself all run
over HTTP on loopback ports, the bucket is the moto server; Debian's `chromium` driven by its
`chromedriver` through selenium (nothing is downloaded at test time). Each test saves a
screenshot of every step under artifacts/web/<test>/.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from dicomiso_common.store import Store
from dicomiso_forwarder.app import create_app as create_forwarder
from dicomiso_forwarder.settings import ForwarderSettings
from dicomiso_packager.app import create_app as create_packager
from dicomiso_packager.settings import PackagerSettings
from support.mariadb import HisDb
from support.net import free_port
from support.servers import serving
from support.stack import packager_values, start_backend
from support.viewer import chromium_options

TOKEN = "web-token"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "web"
ONLINE_ARTIFACTS = ARTIFACTS.parent / "online"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# axe-core from npm (the viewer's devDependencies; scripts/build-viewer runs `npm ci`).
AXE = (
    Path(__file__).resolve().parents[2]
    / "services/packager/viewer/node_modules/axe-core/axe.min.js"
)


@dataclass
class WebStack:
    url: str  # the packager, over HTTP
    store: Store
    settings: PackagerSettings
    his: HisDb

    def keys(self, prefix: str) -> list[str]:
        return [o.key for o in self.store.list(prefix)]


@pytest.fixture
def make_web_stack(s3_bucket: Any, orthanc: Any, tmp_path: Path) -> Iterator[Any]:
    """lookup + retriever + packager, each over real HTTP; all stopped after the test.

    `retriever=` overrides the retriever's settings (e.g. a PACS port nobody listens on),
    `peers=` starts a forwarder with those peers, the other keywords are the packager's.
    """
    with ExitStack() as stack:

        def make(
            retriever: dict[str, Any] | None = None,
            peers: dict[str, Any] | None = None,
            **overrides: Any,
        ) -> WebStack:
            backend = start_backend(
                stack,
                s3_bucket,
                orthanc,
                token=TOKEN,
                name="web",
                retriever={
                    "dicom_acse_timeout": 5,
                    "dicom_network_timeout": 10,
                    **(retriever or {}),
                },
            )
            forwarder_url = f"http://127.0.0.1:{free_port()}"  # nobody, unless peers are given
            if peers is not None:
                forwarder_settings = ForwarderSettings(
                    **backend.s3,
                    http_port=free_port(),
                    api_token=TOKEN,
                    peers=peers,
                    retriever_url=backend.retriever_url,
                    send_backoff=0.05,
                    job_heartbeat=0.5,
                    replica_id="web-forwarder",
                )
                forwarder_url = stack.enter_context(
                    serving(create_forwarder(forwarder_settings), forwarder_settings)
                )
            values = packager_values(backend, tmp_path, name="web")
            values.update(http_port=free_port(), api_token=TOKEN, forwarder_url=forwarder_url)
            values.update(overrides)
            settings = PackagerSettings(**values)
            url = stack.enter_context(serving(create_packager(settings), settings))
            return WebStack(url, backend.store, settings, backend.his)

        yield make


@pytest.fixture(scope="session")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Headless Debian Chromium with a fresh profile; no network beyond loopback."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver (Debian packages) are needed for tests/web")
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = chromium_options(profile, "1200,1000")
    # Every request the browser makes is in the performance log (tests/web/test_online.py).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    browser.set_script_timeout(60)  # axe-core on a whole page
    try:
        yield browser
    finally:
        browser.quit()


@dataclass
class Page:
    """The browser on the staff page, with the helpers every test needs."""

    driver: webdriver.Chrome
    shots: Path
    downloads: Path
    step: int = 0

    def open(self, url: str) -> None:
        self.driver.get(url)

    def el(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def wait(self, condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
                lambda _d: condition()
            )
        except TimeoutException:
            self.shot("timeout")
            raise AssertionError(
                f"timed out waiting for {what}: message={self.el('message').text!r}"
            ) from None

    def visible(self, element_id: str, timeout: float = 20.0) -> WebElement:
        element: WebElement = self.wait(
            lambda: self.el(element_id).is_displayed() and self.el(element_id),
            timeout,
            f"#{element_id}",
        )
        return element

    def message(self, timeout: float = 20.0) -> str:
        text: str = self.wait(
            lambda: self.el("message").is_displayed() and self.el("message").text,
            timeout,
            "a message",
        )
        return text

    def shot(self, name: str) -> Path:
        self.step += 1
        path = self.shots / f"{self.step:02d}-{re.sub(r'[^a-z0-9-]', '', name)}.png"
        self.driver.save_screenshot(str(path))
        return path

    def axe(self, state: str) -> list[dict[str, Any]]:
        """Run axe-core on the page as it is now; screenshot it; return the serious and
        critical violations (rule id, impact, the first offending elements)."""
        if not AXE.exists():
            pytest.fail(f"{AXE} missing: run scripts/build-viewer (npm ci)")
        self.shot(f"axe-{state}")
        if not self.driver.execute_script("return !!window.axe"):
            self.driver.execute_script(AXE.read_text("utf-8"))
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then((r) => done(r.violations.map((v) => ({id: v.id, impact: v.impact,"
            " nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' '))}))))"
            ".catch((e) => done([{id: 'axe-error', impact: 'critical', nodes: [String(e)]}]));"
        )
        return [v for v in result if v["impact"] in ("serious", "critical")]

    def accept_language(self, value: str) -> None:
        """What the browser asks for (Accept-Language and navigator.language), from now on."""
        agent = self.driver.execute_script("return navigator.userAgent")
        self.driver.execute_cdp_cmd(
            "Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": value}
        )

    def active_id(self) -> str:
        return str(self.driver.switch_to.active_element.get_attribute("id") or "")

    def sign_in(self) -> None:
        """The token form appears on the first API call (401) and is used once per tab."""
        self.visible("token").send_keys(TOKEN)
        self.el("auth-form").submit()
        self.wait(lambda: self.el("user").text.strip(), what="sign-in")  # in either language

    def downloaded(self, timeout: float = 60.0) -> Path:
        def done() -> Path | None:
            files = [
                p
                for p in self.downloads.iterdir()
                if not p.name.endswith((".crdownload", ".tmp")) and p.stat().st_size
            ]
            return files[0] if files else None

        found: Path = self.wait(done, timeout, "the download")
        time.sleep(0.2)
        return found


@pytest.fixture
def page(driver: webdriver.Chrome, request: pytest.FixtureRequest, tmp_path: Path) -> Page:
    """The session's browser, on a clean slate: screenshots and downloads of this test only
    (under artifacts/online/ for the online page's tests)."""
    root = ONLINE_ARTIFACTS if request.node.path.name == "test_online.py" else ARTIFACTS
    shots = root / re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.delete_all_cookies()  # the language switch's cookie too
    agent = driver.execute_script("return navigator.userAgent")
    driver.execute_cdp_cmd(
        "Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": "en-US,en"}
    )
    driver.get_log("performance")  # type: ignore[no-untyped-call]  # drop what earlier tests left
    return Page(driver, shots, downloads)
