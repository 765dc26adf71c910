"""The viewer on a folder made here: every photometric interpretation and codec a disc
carries, and bad input (a truncated file, a DICOMDIR naming a missing file, an unknown
transfer syntax, markup in DICOM values, a file that is no DICOM). Each image is compared
with pydicom/numpy's rendering of the same file. The page's CSP stops any request.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, convert_color_space
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from dicomiso_packager.viewer import STUDY_MARKER, bundle_html
from support.net import free_port
from support.studies import make_study
from support.viewer import (
    Shots,
    chromium,
    dcmtk_encode,
    derive,
    distinct_colours,
    firefox_screenshot,
    image_canvas,
    network_urls,
    requested_urls,
    wait_for,
    window_8bit,
)

MARKUP = '<img src=x onerror="window.pwned=1">'
UNKNOWN_SYNTAX = "1.2.826.0.1.3680043.8.498.999.1"


@dataclass
class Folder:
    root: Path
    series: dict[str, str] = field(default_factory=dict)  # label -> series UID
    files: dict[str, Path] = field(default_factory=dict)  # label -> file on the "disc"


def _series(
    tmp: Path, template: Path, label: str, arrays: list[np.ndarray], **kw: Any
) -> list[Path]:
    uid = generate_uid()
    number = 30 + len(list(tmp.glob("*0.dcm")))  # one Series Number per series made here
    return [
        derive(
            template,
            tmp / f"{label}{i}.dcm",
            arr,
            series_uid=uid,
            series_number=number,
            instance_number=i + 1,
            description=label,
            **kw,
        )  # fmt: skip
        for i, arr in enumerate(arrays)
    ]


def _compress(paths: list[Path], syntax: str) -> list[Path]:
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(syntax, generate_instance_uid=False)
        ds.save_as(path, enforce_file_format=True)
    return paths


def _make_inputs(tmp: Path) -> dict[str, list[Path]]:
    study = make_study(tmp / "base", ct=1, mr=0, with_sr=False, with_ko=False, with_pr=False,
                       with_sc=False, with_nonascii=False, with_multiframe=False)  # fmt: skip
    t = study.files[0]
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
    gray16 = [rng.integers(0, 4096, (48, 64)).astype(np.uint16) for _ in range(2)]
    signed = [rng.integers(-2000, 2000, (48, 64)).astype(np.int16) for _ in range(2)]
    out: dict[str, list[Path]] = {}
    out["rle"] = _compress(_series(tmp, t, "rle", signed, photometric="MONOCHROME2",
                                   signed=True, modality="CT"), RLELossless)  # fmt: skip
    out["rle_rgb"] = _compress(_series(tmp, t, "rlergb", [rgb], photometric="RGB"), RLELossless)
    out["j2k"] = _compress(
        _series(tmp, t, "j2k", gray16, photometric="MONOCHROME2", bits_stored=12),
        JPEG2000Lossless,
    )
    out["jpegls"] = [
        dcmtk_encode("dcmcjpls", [], p, p.with_name(p.stem + "-ls.dcm"))
        for p in _series(tmp, t, "jpegls", gray16, photometric="MONOCHROME2", bits_stored=12)
    ]

    def deflate(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # pydicom deflates

    out["deflate"] = _series(tmp, t, "deflate", gray16[:1], photometric="MONOCHROME2",
                             bits_stored=12, edit=deflate)  # fmt: skip
    out["mono1"] = _series(tmp, t, "mono1", [rng.integers(0, 256, (48, 64)).astype(np.uint8)],
                           photometric="MONOCHROME1")  # fmt: skip

    def lut(ds: pydicom.Dataset) -> None:
        ramp = np.arange(256, dtype=np.uint16)
        tables = (ramp * 257, (255 - ramp) * 257, ramp * 128)
        for c, table in enumerate(tables, start=1):  # (0028,110x) and (0028,120x)
            ds.add_new(0x00281100 + c, "US", [256, 0, 16])
            ds.add_new(0x00281200 + c, "OW", table.astype("<u2").tobytes())

    out["palette"] = _series(tmp, t, "palette", [(xx * 4).astype(np.uint8)],
                             photometric="PALETTE COLOR", edit=lut)  # fmt: skip
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    out["ybr"] = _series(tmp, t, "ybr", [ybr], photometric="YBR_FULL")
    out["truncated"] = _series(tmp, t, "truncated", gray16 + gray16[:1],
                               photometric="MONOCHROME2", bits_stored=12)  # fmt: skip

    def unknown(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = UID(UNKNOWN_SYNTAX)  # explicit VR LE body, unknown UID

    out["unknown"] = _series(tmp, t, "unknown", gray16[:1], photometric="MONOCHROME2",
                             bits_stored=12, edit=unknown)  # fmt: skip

    def markup(ds: pydicom.Dataset) -> None:
        ds.SeriesDescription = MARKUP

    out["markup"] = _series(tmp, t, "markup", gray16[:1], photometric="MONOCHROME2",
                            bits_stored=12, edit=markup)  # fmt: skip
    out["missing"] = _series(tmp, t, "missing", gray16, photometric="MONOCHROME2", bits_stored=12)
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    """A disc-like folder: DICOMDIR, DICOM/..., VIEWER/VIEWER.HTM, and bad files."""
    inputs = _make_inputs(tmp_path / "src")
    fs = FileSet()
    for paths in inputs.values():
        for path in paths:
            fs.add(path)
    root = tmp_path / "disc"
    fs.write(root)
    (root / "VIEWER").mkdir()
    shutil.copy(bundle_html(), root / "VIEWER" / "VIEWER.HTM")
    by_sop = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
        for p in root.rglob("*")
        if p.is_file() and p.parent != root and p.parent.name != "VIEWER"
    }

    def on_disc(label: str, i: int) -> Path:
        return by_sop[str(pydicom.dcmread(inputs[label][i]).SOPInstanceUID)]

    found = Folder(root)
    for label, paths in inputs.items():
        found.series[label] = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
        found.files[label] = on_disc(label, 0)
    second = on_disc("truncated", 1)
    second.write_bytes(second.read_bytes()[: second.stat().st_size // 2])
    on_disc("missing", 1).unlink()
    (root / "NOTDICOM").write_bytes(b"this is not a DICOM file\n" * 10)
    return found


def _open(driver: Any, uid: str) -> dict[str, Any]:
    driver.find_element(By.CSS_SELECTOR, f'button[data-series="{uid}"]').click()
    done = "(dicomisoViewer.state().shown || dicomisoViewer.state().message)"
    wait_for(driver, f"dicomisoViewer.state().current === '{uid}' && {done}")
    state: dict[str, Any] = driver.execute_script("return dicomisoViewer.state()")
    return state


def _gray(driver: Any, path: Path, width: float, center: float) -> None:
    driver.execute_script(f"dicomisoViewer.setWindow({{width: {width}, center: {center}}})")
    ds = pydicom.dcmread(path)
    expected = window_8bit(apply_modality_lut(ds.pixel_array, ds), center, width)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        expected = 255 - expected
    got = image_canvas(driver)[..., 0]
    assert np.array_equal(got, expected), f"{path.name}: {np.abs(got - expected).max()}"


def _colour(driver: Any, expected: np.ndarray, tolerance: int = 0) -> None:
    got = image_canvas(driver)[..., :3].astype(int)
    assert np.abs(got - expected.astype(int)).max() <= tolerance


@pytest.mark.parametrize("with_dicomdir", [True, False], ids=["dicomdir", "scan"])
def test_every_codec_and_bad_input(
    folder: Folder, tmp_path: Path, with_dicomdir: bool, request: Any
) -> None:
    """Lossless codecs and native colour match pydicom exactly; each bad file is marked
    in a sentence while its series and the others still show; markup stays text."""
    if not with_dicomdir:
        (folder.root / "DICOMDIR").unlink()
    with chromium(tmp_path / "profile") as driver:
        shot = Shots(driver, request.node.name.replace("[", "-").rstrip("]"))
        requested_urls(driver)
        driver.get((folder.root / "VIEWER" / "VIEWER.HTM").as_uri())
        driver.find_element(By.ID, "folder").send_keys(str(folder.root))
        wait_for(driver, "dicomisoViewer.state().shown && dicomisoViewer.state().thumbnails")
        shot("1-list")
        s = folder.series
        for label in ("rle", "j2k", "jpegls", "deflate", "mono1"):
            assert _open(driver, s[label])["shown"], label
            _gray(driver, folder.files[label], 1000, 500 if label != "rle" else 0)
        shot("2-jpegls")
        _open(driver, s["rle_rgb"])
        rgb = pydicom.dcmread(folder.files["rle_rgb"]).pixel_array
        _colour(driver, rgb)
        _open(driver, s["ybr"])
        _colour(driver, rgb, tolerance=1)  # YBR_FULL -> RGB rounding (PS3.3 C.7.6.3.1.2)
        _open(driver, s["palette"])
        shot("3-palette")
        ds = pydicom.dcmread(folder.files["palette"])
        _colour(driver, apply_color_lut(ds.pixel_array, ds) >> 8)

        state = _open(driver, s["unknown"])
        assert UNKNOWN_SYNTAX in (state["message"] or ""), state
        assert "cannot be shown" in state["message"]
        shot("4-unknown-syntax")
        state = _open(driver, s["truncated"])
        assert state["shown"] and state["length"] == 3
        driver.find_element(By.ID, "stage").send_keys("\ue015")  # arrow down: the cut file
        wait_for(driver, "dicomisoViewer.state().index === 1 && dicomisoViewer.state().message")
        assert "Image 2 of 3 cannot be read" in driver.execute_script(
            "return dicomisoViewer.state().message"
        )
        shot("5-truncated")
        driver.find_element(By.ID, "stage").send_keys("\ue015")
        wait_for(driver, "dicomisoViewer.state().index === 2 && dicomisoViewer.state().shown")
        state = _open(driver, s["missing"])
        assert state["shown"] and state["length"] == 1
        listing = driver.find_element(By.ID, "list").text
        if with_dicomdir:
            assert "listed in the DICOMDIR but missing" in listing
        else:
            assert "not DICOM or cannot be read" in listing  # NOTDICOM and the cut file

        _open(driver, s["markup"])
        assert MARKUP in driver.find_element(By.ID, "banner-series").text
        assert MARKUP in listing
        assert driver.execute_script("return window.pwned") is None
        assert not driver.find_elements(By.CSS_SELECTOR, "#list img, #stage img")
        assert network_urls(requested_urls(driver)) == []
    assert distinct_colours(shot.dir / "2-jpegls.png") > 20


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on loopback that records every request it gets."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    server.shutdown()
    server.server_close()


def test_folder_mode_csp_forbids_every_request(
    folder: Folder, tmp_path: Path, listener: tuple[str, list[str]]
) -> None:
    """On file:// the page's CSP (connect-src 'none', img-src data: blob:) blocks fetch and
    images to anywhere: the listener on loopback sees nothing, the page sees violations."""
    url, seen = listener
    with chromium(tmp_path / "profile") as driver:
        driver.get((folder.root / "VIEWER" / "VIEWER.HTM").as_uri())
        result = driver.execute_async_script(
            "const done = arguments[arguments.length - 1]; const v = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (e) => v.push(e.effectiveDirective));"
            "const img = new Image(); img.src = arguments[0] + 'img';"
            "fetch(arguments[0] + 'fetch').then(() => 'fetched', (e) => 'blocked')"
            ".then((r) => setTimeout(() => done([r, v]), 300));",
            url,
        )
    assert result[0] == "blocked"
    assert {"connect-src", "img-src"} <= set(result[1])
    assert seen == []


def test_firefox_renders_the_viewer_and_index(folder: Folder, tmp_path: Path) -> None:
    """Firefox ESR, headless, draws the viewer's start page (not blank) from file://."""
    out = firefox_screenshot(
        (folder.root / "VIEWER" / "VIEWER.HTM").as_uri(),
        Path(__file__).resolve().parents[2] / "artifacts" / "viewer" / "firefox" / "viewer.png",
    )
    assert distinct_colours(out) > 8


PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'wasm-unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:; connect-src 'self'"
)


@pytest.fixture
def online_site(folder: Folder, tmp_path: Path) -> Iterator[str]:
    """VIEWER.HTM with a study in its marker (as the packager's view page does), served with
    the page CSP of docs/media.md from a loopback HTTP server beside the instances."""
    site = tmp_path / "site"
    site.mkdir()
    series = []
    for label in ("jpegls", "rle_rgb"):
        path = folder.files[label]
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        shutil.copy(path, site / f"{label}.dcm")
        series.append({"series_uid": folder.series[label], "modality": "CT",
                       "description": label, "number": int(ds.SeriesNumber),
                       "instances": [{"url": f"{label}.dcm", "sop_uid": str(ds.SOPInstanceUID),
                                      "number": 1, "size": path.stat().st_size}]})  # fmt: skip
    study = {
        "version": 1,
        "page": {"title": "Your images", "institution": MARKUP, "contact": "Imaging desk",
                 "expires_at": "2031-01-01T00:00:00Z", "instructions": ["Scroll to page."],
                 "downloads": [{"label": "Download the ZIP", "url": "disc.zip"},
                               {"label": "bad", "url": "javascript:window.pwned=1"}]},
        "studies": [{"study_uid": "1.2.3", "date": "20240315", "description": "Online",
                     "series": series}],
    }  # fmt: skip
    text = json.dumps(study).replace("<", "\\u003c")
    page = (
        bundle_html().read_text().replace(STUDY_MARKER, STUDY_MARKER.replace(">null<", f">{text}<"))
    )
    (site / "view.html").write_text(page)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site), **kwargs)

        def end_headers(self) -> None:
            self.send_header("Content-Security-Policy", PAGE_CSP)
            super().end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/view.html"
    server.shutdown()
    server.server_close()


def test_online_mode_shows_the_first_series_without_a_click(
    online_site: str, folder: Folder, tmp_path: Path
) -> None:
    """With a study in the marker the viewer fetches its instances from the page's origin
    under the page CSP and shows the first series at once; page texts are text, downloads
    plain links (a javascript: URL is dropped)."""
    with chromium(tmp_path / "profile") as driver:
        shot = Shots(driver, "test_online_mode")
        requested_urls(driver)
        driver.get(online_site)
        wait_for(driver, "dicomisoViewer.state().shown && dicomisoViewer.state().thumbnails")
        shot("1-online")
        _gray(driver, folder.files["jpegls"], 1000, 500)
        info = driver.find_element(By.ID, "online-page")
        assert MARKUP in info.text and "Scroll to page." in info.text
        links = [a.get_attribute("href") for a in info.find_elements(By.TAG_NAME, "a")]
        assert links == [online_site.replace("view.html", "disc.zip")]
        assert driver.execute_script("return window.pwned") is None
        assert driver.title == "Your images"
        origin = online_site.rsplit("/", 1)[0]
        asked = [
            url
            for document, url in requested_urls(driver)
            if document.startswith(origin) and not url.startswith(("data:", "blob:"))
        ]
        assert f"{origin}/jpegls.dcm" in asked and all(u.startswith(origin) for u in asked)


def test_pointer_value_presets_drag_and_zoom(folder: Folder, tmp_path: Path) -> None:
    """The value under the pointer is the stored value after rescale, in HU for CT; a preset
    sets its window; dragging widens the window; zoom and Fit change and restore the view."""
    with chromium(tmp_path / "profile") as driver:
        shot = Shots(driver, "test_pointer_value_presets_drag_and_zoom")
        driver.get((folder.root / "VIEWER" / "VIEWER.HTM").as_uri())
        driver.find_element(By.ID, "folder").send_keys(str(folder.root))
        wait_for(driver, "dicomisoViewer.state().shown && dicomisoViewer.state().thumbnails")
        _open(driver, folder.series["rle"])
        view = driver.find_element(By.ID, "view")
        ActionChains(driver).move_to_element_with_offset(view, 10, 20).perform()
        text = driver.find_element(By.ID, "banner-value").text
        found = re.search(r"x (\d+) y (\d+): (-?\d+) HU", text)
        assert found, text
        ds = pydicom.dcmread(folder.files["rle"])
        x, y, value = (int(g) for g in found.groups())
        assert value == apply_modality_lut(ds.pixel_array, ds)[y, x]
        Select(driver.find_element(By.ID, "preset")).select_by_value("lung")
        wait_for(driver, "dicomisoViewer.state().window.width === 1500")
        assert driver.execute_script("return dicomisoViewer.state().window.center") == -600
        ActionChains(driver).click_and_hold(view).move_by_offset(60, 0).release().perform()
        assert driver.execute_script("return dicomisoViewer.state().window.width") > 1500
        zoom = driver.execute_script("return dicomisoViewer.state().zoom")
        driver.find_element(By.ID, "zoom-in").click()
        assert driver.execute_script("return dicomisoViewer.state().zoom") > zoom
        shot("zoomed")
        driver.find_element(By.ID, "fit").click()
        assert driver.execute_script("return dicomisoViewer.state().zoom") == zoom
