"""Reading the online page the packager writes (packages/{id}/view.html)."""

from __future__ import annotations

import json
import re
from typing import Any

MARKER = re.compile(r'<script type="application/json" id="dicomiso-study">(.*?)</script>', re.S)


def study_json(page_html: str) -> dict[str, Any]:
    """The study JSON (version 1) in the page's one marker element."""
    [found] = MARKER.findall(page_html)
    data: dict[str, Any] = json.loads(found)
    return data


def page_instances(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every instance of the page (url, size, offset when it is a range of a segment)."""
    return [i for st in data["studies"] for se in st["series"] for i in se["instances"]]


def instance_range(instance: dict[str, Any]) -> dict[str, str]:
    """The Range header the viewer sends for an instance in a segment ({} for a whole one)."""
    if instance.get("offset") is None:
        return {}
    start = int(instance["offset"])
    return {"Range": f"bytes={start}-{start + int(instance['size']) - 1}"}


def instance_urls(data: dict[str, Any]) -> list[str]:
    """Every instance URL of the page, in the page's order."""
    return [i["url"] for st in data["studies"] for se in st["series"] for i in se["instances"]]
