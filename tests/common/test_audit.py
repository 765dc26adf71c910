"""The audit trail in a real (moto) bucket: keys that name no one, day-prefix reads, order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dicomiso_common import audit
from dicomiso_common.errors import InvalidInput
from dicomiso_common.since import parse_since
from dicomiso_common.store import Store

NOW = datetime(2024, 5, 3, 12, 0, tzinfo=UTC)


def _put(store: Store, at: datetime, event_id: str, **fields: Any) -> None:
    store.put_json(
        audit.event_key(at, event_id),
        {"id": event_id, "at": at.isoformat(), "action": "package", **fields},
    )


def test_an_event_key_is_a_day_and_an_id_and_the_body_holds_the_accessions(store: Store) -> None:
    """The key is audit/yyyy/mm/dd/{uuid}.json; accession numbers only in the body."""
    event = audit.write(
        store,
        "packager",
        "package",
        user="clerk.ani",
        outcome="requested",
        job_id="a" * 32,
        accession_numbers=["CT.2024.1"],
        email=None,
    )

    keys = [o.key for o in store.list("audit/")]
    day = datetime.fromisoformat(event["at"])
    assert keys == [f"audit/{day:%Y/%m/%d}/{event['id']}.json"]
    assert "CT.2024.1" not in keys[0]
    body, _ = store.get_json(keys[0])
    assert body["accession_numbers"] == ["CT.2024.1"] and body["user"] == "clerk.ani"
    assert body["outcome"] == "requested" and "email" not in body


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T08:00:00Z", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_or_an_iso_date(value: str, expected: datetime) -> None:
    assert parse_since(value, NOW) == expected


@pytest.mark.parametrize("value", ["", "1y", "yesterday", "-1h", "1 h"])
def test_a_since_that_is_neither_is_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput):
        parse_since(value, NOW)


def test_events_since_reads_only_the_days_asked_for_oldest_first(
    store: Store, monkeypatch: Any
) -> None:
    """Three days of events; asking from day 2, 06:00 lists two day prefixes, drops the
    earlier events of day 2 and returns the rest in time order."""
    _put(store, datetime(2024, 5, 1, 9, tzinfo=UTC), "e1")
    _put(store, datetime(2024, 5, 2, 5, tzinfo=UTC), "e2")
    _put(store, datetime(2024, 5, 3, 11, tzinfo=UTC), "e4")
    _put(store, datetime(2024, 5, 2, 7, tzinfo=UTC), "e3")
    listed: list[str] = []
    original = store.list

    def spy(prefix: str) -> Any:
        listed.append(prefix)
        return original(prefix)

    monkeypatch.setattr(store, "list", spy)
    events, truncated = audit.events_since(store, datetime(2024, 5, 2, 6, tzinfo=UTC), now=NOW)

    assert [e["id"] for e in events] == ["e3", "e4"] and not truncated
    assert listed == ["audit/2024/05/02/", "audit/2024/05/03/"]
    first, cut = audit.events_since(store, datetime(2024, 5, 1, tzinfo=UTC), now=NOW, limit=2)
    assert [e["id"] for e in first] == ["e1", "e2"] and cut


def test_a_query_reaching_back_too_far_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        audit.events_since(store, NOW - timedelta(days=audit.MAX_DAYS + 1), now=NOW)
