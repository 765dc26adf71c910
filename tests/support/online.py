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


def instance_urls(data: dict[str, Any]) -> list[str]:
    """Every instance URL of the page, in the page's order."""
    return [i["url"] for st in data["studies"] for se in st["series"] for i in se["instances"]]
