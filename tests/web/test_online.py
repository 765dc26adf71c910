"""The online page in Chromium: served by the bucket alone, open on the first series.

The whole stack over HTTP (lookup on MariaDB, retriever on Orthanc, the packager), the moto
server as S3 under a public name (localhost) other than the services' (127.0.0.1). The
package's view_url is opened in the browser as a patient would: no click, no service of ours,
every request to the S3 origin. The viewer is the real bundle (scripts/build-viewer).
Screenshots under artifacts/online/<test>/.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pydicom

from support.mariadb import add_patient
from support.online import instance_range, instance_urls, study_json

from .conftest import TOKEN


def _package(stack: Any, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=stack.url, headers=headers, trust_env=False, timeout=30) as api:
        started = api.post("/v1/packages", json=body)
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status: dict[str, Any] = api.get(f"/v1/packages/{started.json()['id']}").json()
            if status["state"] in ("succeeded", "failed"):
                return status
            time.sleep(0.3)
    raise AssertionError(f"package did not finish: {status}")


def _windowed(ds: pydicom.Dataset, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 on the modality values, as the viewer's windowValue does."""
    x = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    y = np.floor(((x - (center - 0.5)) / (width - 1) + 0.5) * 255 + 0.5)
    return np.where(x <= low, 0, np.where(x > high, 255, y)).astype(np.uint8)


def test_view_url_opens_the_first_series_from_the_bucket_alone(
    make_web_stack: Any, orthanc: Any, study_factory: Any, page: Any, s3_bucket: Any
) -> None:
    """The page from view_url shows the first series without a click, its pixels are the
    windowed values of the first CT slice, its two downloads are the package's images
    (sha256), every request stays on the S3 origin, and no URL holds the patient."""
    study = study_factory(patient_name="Lestari^Dewi", patient_id="RM-ONL-1", ct=3, mr=2)
    orthanc.upload(study.files)
    public = s3_bucket.endpoint_url.replace("127.0.0.1", "localhost")
    contact = "Radiology front desk, radiology@hospital.test"
    stack = make_web_stack(s3_public_url=public, institution_contact=contact)
    add_patient(stack.his, "RM-ONL-1", "Dewi Lestari", [study.accession])

    status = _package(stack, {"accession_numbers": [study.accession], "expires_in": 3600})

    assert status["state"] == "succeeded", status
    view_url = status["view_url"]
    origin = f"{urlsplit(public).scheme}://{urlsplit(public).netloc}"
    assert view_url.startswith(f"{origin}/{s3_bucket.name}/packages/{status['id']}/view.html?")
    # The page as S3 serves it: HTML, never cached, shown in the browser.
    with httpx.Client(trust_env=False, timeout=30) as http:
        served = http.get(view_url)
        assert served.status_code == 200
        assert served.headers["content-type"] == "text/html; charset=utf-8"
        assert served.headers["cache-control"] == "private, no-store"
        assert served.headers["content-disposition"] == "inline"
        data = study_json(served.text)
        assert data["version"] == 1 and data["page"]["contact"] == contact
        assert data["page"]["expires_at"] <= status["expires_at"]
        urls = [view_url, *(d["url"] for d in data["page"]["downloads"]), *instance_urls(data)]
        for identifier in ("Lestari", "Dewi", "RM-ONL-1", study.accession):
            assert not [u for u in urls if identifier in u], identifier
        assert all(u.startswith(f"{origin}/") for u in urls)
        # Both downloads are the package's images, as the status describes them.
        by_format = {d["format"]: d for d in status["downloads"]}
        assert set(by_format) == {"iso", "zip"}
        labels = {d["label"]: d["url"] for d in data["page"]["downloads"]}
        for label, fmt in (
            ("Download for a CD or USB stick (ISO)", "iso"),
            ("Download as ZIP", "zip"),
        ):
            got = http.get(labels[label])
            assert got.status_code == 200, label
            assert hashlib.sha256(got.content).hexdigest() == by_format[fmt]["sha256"]
            assert by_format[fmt]["filename"] in got.headers["content-disposition"]
        first = data["studies"][0]["series"][0]
        assert first["modality"] == "CT" and len(first["instances"]) == 3
        one = first["instances"][0]  # a range of its segment, fetched as the viewer does
        assert one.get("offset") is not None
        got = http.get(one["url"], headers=instance_range(one))
        assert got.status_code == 206 and len(got.content) == one["size"]
        first_slice = pydicom.dcmread(io.BytesIO(got.content))

    page.open(view_url)
    state = page.wait(
        lambda: (
            (s := page.driver.execute_script("return window.dicomisoViewer?.state()"))
            and s["shown"]
            and s
        ),
        timeout=60,
        what="the first series on screen",
    )
    page.shot("opened")
    assert state["message"] is None, state
    assert state["index"] == 0 and state["length"] == 3
    assert [s["modality"] for s in state["series"]][:2] == ["CT", "MR"]
    # The native-size image canvas holds the windowed values of the first slice.
    pixels = page.driver.execute_script(
        "const c = document.getElementById('image');"
        "return [c.width, c.height, Array.from(c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0))];"
    )
    columns, rows, red = pixels
    assert (rows, columns) == (first_slice.Rows, first_slice.Columns)
    shown = np.array(red, dtype=np.uint8).reshape(rows, columns)
    win = state["window"]
    expected = _windowed(first_slice, win["center"], win["width"])
    assert int(np.abs(shown.astype(int) - expected.astype(int)).max()) <= 1
    assert shown.std() > 0  # not a blank canvas
    # The visible canvas is not blank either.
    view = page.driver.execute_script(
        "const c = document.getElementById('view');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0) lit++; return lit;"
    )
    assert view > 1000
    body = page.driver.find_element("tag name", "body").text
    assert contact in body and "Download as ZIP" in body
    for identifier in ("RM-ONL-1", study.accession):
        assert identifier not in page.driver.current_url
    # The second series (MR) opens with a click, from the bucket too.
    mr = data["studies"][0]["series"][1]
    page.driver.find_element(
        "css selector", f'button.series[data-series="{mr["series_uid"]}"]'
    ).click()
    page.wait(
        lambda: (
            (s := page.driver.execute_script("return window.dicomisoViewer.state()"))
            and s["shown"]
            and s["length"] == len(mr["instances"])
        ),
        timeout=30,
        what="the MR series",
    )
    page.shot("second-series")
    # Every request the browser made went to the S3 origin.
    requests = [
        json.loads(entry["message"])["message"] for entry in page.driver.get_log("performance")
    ]
    sent = [
        m["params"]["request"]["url"]
        for m in requests
        if m["method"] == "Network.requestWillBeSent"
    ]
    assert sent and view_url in sent
    assert [u for u in sent if not u.startswith((f"{origin}/", "data:", "blob:"))] == []
    assert first["instances"][0]["url"] in sent
