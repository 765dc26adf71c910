"""`since` values of the audit queries: a duration back from now or an ISO date.

Apart from `audit` (which reads the bucket) so that the `dicom-iso audit` command can check
its `--since` without importing the store.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import InvalidInput

_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`90s`, `30m`, `1h`, `2d`, `1w` back from now, or an ISO date / date-time (UTC if no
    zone is given)."""
    now = now or datetime.now(UTC)
    text = value.strip()
    if m := _DURATION.fullmatch(text):
        return now - timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])
    try:
        since = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(
            "since is neither a duration like 1h, 30m, 2d nor an ISO date "
            "like 2024-05-01 or 2024-05-01T08:00:00Z"
        ) from exc
    return since if since.tzinfo else since.replace(tzinfo=UTC)
