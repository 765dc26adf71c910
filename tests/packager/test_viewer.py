"""The web viewer on a real disc: built by the real stack (Orthanc -> retriever -> bucket ->
packager), the ISO extracted or the ZIP unzipped, INDEX.HTM opened from file:// in headless
Chromium, the folder chosen through the viewer's folder picker. Pixels on the canvas are
compared with pydicom/numpy's windowing of the same instance on the disc. Screenshots go to
artifacts/viewer/<test>/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import generate_uid
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from support.discs import download, read_iso, read_zip
from support.mariadb import add_patient
from support.viewer import (
    CT_IMAGE,
    US_IMAGE,
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

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _extra_series(study: Any, tmp: Path) -> dict[str, list[Path]]:
    """US RGB kept as JPEG baseline and a signed CT kept as JPEG lossless on DVD-JPEG."""
    template = study.files[0]
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:96, 0:128]
    us = np.stack([(xx * 2) % 256, (yy * 2) % 256, ((xx + yy) * 3) % 256], axis=-1)
    us_native = derive(template, tmp / "us.dcm", us.astype(np.uint8), photometric="RGB",
                       series_uid=generate_uid(), series_number=20, modality="US",
                       sop_class=US_IMAGE, description="Abdomen US")  # fmt: skip
    us_jpeg = dcmtk_encode("dcmcjpeg", ["+eb", "+un"], us_native, tmp / "us-jpeg.dcm")
    series = generate_uid()
    signed = []
    for i in range(3):
        arr = (rng.integers(-1024, 2000, size=(64, 64)) + i * 10).astype(np.int16)

        def ct(ds: pydicom.Dataset) -> None:
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]

        src = derive(template, tmp / f"signed{i}.dcm", arr, photometric="MONOCHROME2",
                     series_uid=series, series_number=21, instance_number=i + 1,
                     modality="CT", sop_class=CT_IMAGE, signed=True, bits_stored=16,
                     description="Signed lossless", edit=ct)  # fmt: skip
        signed.append(dcmtk_encode("dcmcjpeg", ["+e1"], src, tmp / f"signed{i}-jpeg.dcm"))
    return {"us": [us_jpeg], "signed": signed}


def _on_disc(root: Path) -> dict[str, pydicom.Dataset]:
    """Every DICOM file under DICOM/ by SOP Instance UID."""
    out: dict[str, pydicom.Dataset] = {}
    for path in (root / "DICOM").rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path)
            out[str(ds.SOPInstanceUID)] = ds
    return out


def _slice(datasets: dict[str, pydicom.Dataset], series_uid: str, number: int) -> pydicom.Dataset:
    return next(
        ds
        for ds in datasets.values()
        if ds.SeriesInstanceUID == series_uid and int(ds.InstanceNumber) == number
    )


def _open_series(driver: Any, series_uid: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'button[data-series="{series_uid}"]').click()
    wait_for(driver, f"dicomisoViewer.state().current === '{series_uid}' && "
                     "dicomisoViewer.state().shown")  # fmt: skip


def _set_window(driver: Any, width: float, center: float) -> None:
    for field, value in (("ww", width), ("wc", center)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(value), Keys.TAB)
    wait_for(driver, f"dicomisoViewer.state().window.width === {width} && "
                     f"dicomisoViewer.state().window.center === {center}")  # fmt: skip


def _window_of_detail(ds: pydicom.Dataset) -> tuple[int, int]:
    """(width, center) spanning the 2nd to 98th percentile of the object's values."""
    values = apply_modality_lut(ds.pixel_array, ds)
    lo, hi = np.percentile(values[values > values.min()], [2, 98])
    return int(hi - lo) + 1, int((lo + hi) / 2)


def _windowed(ds: pydicom.Dataset, width: float, center: float) -> np.ndarray:
    return window_8bit(apply_modality_lut(ds.pixel_array, ds), center, width)


@pytest.mark.parametrize("fmt", ["iso", "zip"])
def test_viewer_shows_every_series_of_a_disc_with_exact_pixels(
    fmt: str, make_stack: Any, orthanc: Any, study_factory: Any, tmp_path: Path, request: Any
) -> None:
    """From INDEX.HTM's "View the images" link, after choosing the folder: every series is
    listed; CT slice 6 under a typed window equals numpy's PS3.3 C.11.2.1.2.1 windowing of
    the same instance exactly, and so does a signed CT kept JPEG-lossless on DVD-JPEG; the
    JPEG baseline US RGB is within the lossy tolerance; a 4-frame instance is a 4-image
    stack; no request leaves file://."""
    study = study_factory(ct=12, mr=3, with_ko=False, with_pr=False, with_nonascii=False,
                          patient_id=f"RM-VIEW-{fmt}")  # fmt: skip
    extra = _extra_series(study, tmp_path)
    orthanc.upload([*study.files, *extra["us"], *extra["signed"]])
    stack = make_stack()
    add_patient(stack.his, f"RM-VIEW-{fmt}", "Viewer Test", [study.accession])
    status = stack.run({"accession_numbers": [study.accession], "format": fmt})
    assert status["state"] == "succeeded", status
    image = tmp_path / f"disc.{fmt}"
    download(status["download_url"], image)
    tree = read_iso(image) if fmt == "iso" else read_zip(image)
    root = tree.extract(tmp_path / "disc")
    assert (root / "VIEWER" / "VIEWER.HTM").is_file()
    on_disc = _on_disc(root)
    syntaxes = {str(ds.file_meta.TransferSyntaxUID) for ds in on_disc.values()}
    assert {JPEG_LOSSLESS_SV1, JPEG_BASELINE} <= syntaxes  # kept compressed on DVD-JPEG
    series_uids = {str(ds.SeriesInstanceUID) for ds in on_disc.values()}
    ct_uid = next(str(ds.SeriesInstanceUID) for ds in on_disc.values() if ds.Modality == "CT"
                  and ds.SeriesNumber == 1)  # fmt: skip

    with chromium(tmp_path / "profile") as driver:
        shot = Shots(driver, request.node.name.replace("[", "-").rstrip("]"))
        requested_urls(driver)  # drop what the browser's own start page loaded
        driver.get((root / "INDEX.HTM").as_uri())
        shot("1-index")
        driver.find_element(By.LINK_TEXT, "View the images").click()
        assert driver.current_url.endswith("/VIEWER/VIEWER.HTM")
        wait_for(driver, "window.dicomisoViewer")
        shot("2-choose")
        driver.find_element(By.ID, "folder").send_keys(str(root))
        wait_for(driver, "dicomisoViewer.state().shown")
        listed = driver.execute_script("return dicomisoViewer.state().series")
        assert {s["uid"] for s in listed} == series_uids
        wait_for(driver, "dicomisoViewer.state().thumbnails")
        shot("3-first-series")

        _open_series(driver, ct_uid)
        stage = driver.find_element(By.ID, "stage")
        for _ in range(5):
            stage.send_keys(Keys.ARROW_DOWN)
        wait_for(driver, "dicomisoViewer.state().index === 5 && dicomisoViewer.state().shown")
        slice6 = _slice(on_disc, ct_uid, 6)
        width, center = _window_of_detail(slice6)
        _set_window(driver, width, center)
        shot("4-ct-slice-6")
        canvas = image_canvas(driver)
        expected = _windowed(slice6, width, center)
        assert len(np.unique(expected)) > 50  # a window that keeps the slice's detail
        assert np.array_equal(canvas[..., 0], expected)
        assert np.array_equal(canvas[..., 0], canvas[..., 1]) and (canvas[..., 3] == 255).all()
        banner = driver.find_element(By.ID, "banner-series").text
        assert "Image 6 / 12" in banner and "Chest axial" in banner

        signed_uid = str(pydicom.dcmread(extra["signed"][0]).SeriesInstanceUID)
        _open_series(driver, signed_uid)
        _set_window(driver, 2000, 300)
        expected = _windowed(_slice(on_disc, signed_uid, 1), 2000, 300)
        assert len(np.unique(expected)) > 50
        assert np.array_equal(image_canvas(driver)[..., 0], expected)

        us_uid = str(pydicom.dcmread(extra["us"][0]).SeriesInstanceUID)
        _open_series(driver, us_uid)
        shot("5-us-rgb-jpeg")
        us = next(ds for ds in on_disc.values() if ds.SeriesInstanceUID == us_uid)
        diff = np.abs(image_canvas(driver)[..., :3].astype(int) - us.pixel_array.astype(int))
        # Two JPEG decoders (libjpeg-turbo here, libjpeg in pydicom) upsample chroma
        # differently: docs/media.md documents this tolerance for lossy data.
        assert diff.mean() < 1.0 and diff.max() <= 32, (diff.mean(), diff.max())

        mf_uid = next(str(ds.SeriesInstanceUID) for ds in on_disc.values()
                      if int(ds.get("NumberOfFrames") or 1) == 4)  # fmt: skip
        _open_series(driver, mf_uid)
        wait_for(driver, "dicomisoViewer.state().length === 4")
        assert network_urls(requested_urls(driver)) == []
    assert distinct_colours(shot.dir / "4-ct-slice-6.png") > 20
    if fmt == "zip":  # Firefox ESR has no WebDriver on Debian: its own headless screenshot
        for page in ("INDEX.HTM", "VIEWER/VIEWER.HTM"):
            png = firefox_screenshot(
                (root / page).as_uri(), shot.dir / f"firefox-{page[-10:-4]}.png"
            )
            assert distinct_colours(png) > 8, page
