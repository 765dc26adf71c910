"""The online page's pure parts: the JSON cannot end its script element, the order the viewer
opens, the CSP, and a packager without the viewer bundle does not start."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from dicomiso_packager import online, viewer
from dicomiso_packager.app import create_app
from dicomiso_packager.settings import PackagerSettings

HOSTILE = '</script><script>alert("x")</script> & <!-- Ünïcode'


class _Scripts(HTMLParser):
    """Every <script> element's type and text, as a browser's tokenizer splits them."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


def _manifest() -> dict[str, Any]:
    def entry(series: str, sop: str, number: int | None) -> dict[str, Any]:
        return {
            "series_uid": series,
            "sop_uid": sop,
            "instance_number": number,
            "key": f"instances/1.2.3/{series}/{sop}.dcm",
            "size": 100,
        }

    return {
        "study_uid": "1.2.3",
        "study": {"date": "20240315", "description": HOSTILE},
        "series": {
            "1.2.3.9": {"modality": "SR", "description": "Report", "number": 9},
            "1.2.3.2": {"modality": "MR", "description": HOSTILE, "number": 2},
            "1.2.3.1": {"modality": "CT", "description": "Chest", "number": "1"},
        },
        "instances": [
            entry("1.2.3.9", "1.2.3.9.1", 1),
            entry("1.2.3.2", "1.2.3.2.2", 2),
            entry("1.2.3.1", "1.2.3.1.3", 3),
            entry("1.2.3.1", "1.2.3.1.1", 1),
            entry("1.2.3.2", "1.2.3.2.1", None),
        ],
    }


def test_the_json_cannot_end_its_script_element_and_reads_back_equal() -> None:
    """Hostile text in a description stays text: the page has the bundle's scripts only,
    the marker's content parses back to the same document, and the CSP is there."""
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"{online.MARKER}<script>start()</script></head><body></body></html>"
    )
    studies = online.signed(online.studies_of([_manifest()]), lambda key: f"https://s3/{key}?s")
    settings = PackagerSettings(institution_name="A & B <Hospital>", institution_contact=HOSTILE)
    doc = online.document(settings, studies, [], datetime(2026, 12, 2, tzinfo=UTC))

    filled = online.inject(page, doc)

    parser = _Scripts()
    parser.feed(filled)
    assert [attrs.get("id") for attrs, _ in parser.scripts] == ["dicomiso-study", None]
    assert json.loads(parser.scripts[0][1]) == doc
    assert "</script><script>alert" not in filled and "<!--" not in filled.split("<body>")[0]
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', filled)
    assert csp is not None and csp.group(1) == online.CSP
    assert filled.index("<meta charset") < csp.start() < filled.index(online.MARKER[:20])


def test_series_by_number_instances_by_number_keys_until_signed() -> None:
    """The viewer opens the first series: the lowest Series Number, its lowest Instance."""
    [study] = online.studies_of([_manifest()])

    assert [s["modality"] for s in study["series"]] == ["CT", "MR", "SR"]
    assert [i["sop_uid"] for i in study["series"][0]["instances"]] == ["1.2.3.1.1", "1.2.3.1.3"]
    assert [i["number"] for i in study["series"][1]["instances"]] == [2, None]
    assert study["series"][0]["number"] == 1 and study["date"] == "20240315"
    [signed] = online.signed([study], lambda key: f"https://s3/{key}?sig")
    first = signed["series"][0]["instances"][0]
    assert first == {
        "url": "https://s3/instances/1.2.3/1.2.3.1/1.2.3.1.1.dcm?sig",
        "sop_uid": "1.2.3.1.1",
        "number": 1,
        "size": 100,
    }


def test_a_page_without_the_marker_is_refused() -> None:
    with pytest.raises(viewer.ViewerMissing):
        online.inject("<html><head></head><body>no marker</body></html>", {"version": 1})
    with pytest.raises(viewer.ViewerMissing):
        online.inject(f"<html><head></head>{online.MARKER}{online.MARKER}</html>", {})


def test_the_packager_does_not_start_without_the_viewer_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without VIEWER.HTM the online page cannot be made: a clear error at start-up even
    with no viewer on the discs; with DICOMISO_VIEW_ONLINE=false too, the packager starts."""
    monkeypatch.setattr(viewer, "BUNDLE_DIR", tmp_path)
    endpoint = "http://127.0.0.1:9"
    with pytest.raises(viewer.ViewerMissing, match="scripts/build-viewer"):
        # no viewer on the discs, but online pages
        create_app(PackagerSettings(s3_endpoint_url=endpoint, viewer=False))
    assert create_app(PackagerSettings(s3_endpoint_url=endpoint, viewer=False, view_online=False))
