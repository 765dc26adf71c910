"""The disc viewer in a real browser: Debian's headless Chromium through chromedriver with
its performance log (every request the page makes), Firefox ESR's headless screenshot, and
synthetic instances in the photometric interpretations and transfer syntaxes a disc carries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from support.dcmtk import dcmtk_bin, dcmtk_env

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "viewer"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def chromium_options(profile: Path, size: str) -> webdriver.ChromeOptions:
    """Debian's Chromium, headless, a fresh profile, nothing of its own on the network."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-proxy-server",
        f"--window-size={size}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not fetch anything
    return options


@contextmanager
def chromium(profile: Path, size: str = "1280,900") -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile, its performance and console logs kept."""
    options = chromium_options(profile, size)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: webdriver.Chrome) -> list[tuple[str, str]]:
    """(document URL, request URL) of every request since the last call
    (Network.requestWillBeSent in the performance log)."""
    out = []
    for entry in driver.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            out.append((str(params.get("documentURL", "")), str(params["request"]["url"])))
    return out


def network_urls(requests: list[tuple[str, str]]) -> list[str]:
    """What left or could leave the machine: any http(s)/ws(s)/ftp request, and anything a
    page opened from file:// asked for beyond file:, data: and blob: URLs. (The browser's
    own chrome:// pages, like its new-tab page, are neither.)"""
    local = ("file:", "data:", "blob:")
    return [
        url
        for document, url in requests
        if url.startswith(("http:", "https:", "ws:", "wss:", "ftp:"))
        or (document.startswith("file:") and not url.startswith(local))
    ]


def wait_for(driver: webdriver.Chrome, script: str, timeout: float = 30.0) -> Any:
    """Run `script` (a JS expression) until it is truthy; return its value."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
            lambda d: d.execute_script(f"return {script}")
        )
    except TimeoutException:
        state = driver.execute_script("return window.dicomisoViewer && dicomisoViewer.state()")
        raise AssertionError(f"timed out waiting for {script}; viewer state {state}") from None


class Shots:
    """Screenshots of one test under artifacts/viewer/<test>/."""

    def __init__(self, driver: webdriver.Chrome, test: str) -> None:
        self.driver, self.dir = driver, ARTIFACTS / test
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    def __call__(self, name: str) -> Path:
        path = self.dir / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


def image_canvas(driver: webdriver.Chrome) -> np.ndarray:
    """The viewer's frame at its own size (#image canvas), RGBA, as rows x columns x 4."""
    data = driver.execute_script(
        "const c = document.getElementById('image');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);"
        "return [c.width, c.height, Array.from(d.data)];"
    )
    width, height, values = data
    return np.asarray(values, dtype=np.uint8).reshape(height, width, 4)


def window_8bit(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 linear VOI function to 0..255, rounded half up like the viewer."""
    x = values.astype(np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    y = np.floor(((x - (center - 0.5)) / (width - 1) + 0.5) * 255 + 0.5)
    return np.where(x <= low, 0, np.where(x > high, 255, y)).astype(np.uint8)


def firefox_screenshot(url: str, out: Path, size: str = "1280,900") -> Path:
    """Firefox ESR's own headless screenshot of a page (no WebDriver for it on Debian)."""
    firefox = shutil.which("firefox-esr") or shutil.which("firefox")
    assert firefox, "firefox-esr (Debian) is needed: scripts/setup installs it"
    profile = out.parent / f"{out.stem}-profile"
    profile.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    subprocess.run(
        [firefox, "--headless", "--no-remote", "--profile", str(profile),
         f"--window-size={size}", "--screenshot", str(out), url],
        check=True, capture_output=True, timeout=180, env={**os.environ, "MOZ_HEADLESS": "1"},
    )  # fmt: skip
    assert out.is_file(), f"firefox made no screenshot of {url}"
    return out


def distinct_colours(png: Path) -> int:
    """How many colours a screenshot has: a blank page has one or two."""
    with Image.open(png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(colours or [])


# -- synthetic instances ---------------------------------------------------------------------


def derive(
    template: Path,
    out: Path,
    pixels: np.ndarray,
    *,
    photometric: str,
    series_uid: str,
    series_number: int,
    instance_number: int = 1,
    modality: str | None = None,
    sop_class: str | None = None,
    signed: bool = False,
    bits_stored: int | None = None,
    description: str = "",
    edit: Callable[[Dataset], None] | None = None,
) -> Path:
    """A new instance of the template's study and patient with these pixels (native LE)."""
    ds = pydicom.dcmread(template)
    for keyword in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope",
                    "RescaleType", "PlanarConfiguration", "NumberOfFrames",
                    "FrameIncrementPointer", "PixelSpacing"):  # fmt: skip
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if sop_class:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    if modality:
        ds.Modality = modality
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = (
        series_uid,
        series_number,
        instance_number,
    )
    ds.SeriesDescription = description
    samples = 3 if pixels.ndim == 3 and pixels.shape[-1] == 3 else 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, int(signed)
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if edit is not None:
        edit(ds)
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out


def dcmtk_encode(tool: str, args: list[str], src: Path, dst: Path) -> Path:
    """Compress with a dcmtk encoder (dcmcjpeg, dcmcjpls, dcmcrle)."""
    subprocess.run([dcmtk_bin(tool), *args, str(src), str(dst)], check=True,
                   capture_output=True, env=dcmtk_env(), timeout=60)  # fmt: skip
    return dst


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)
