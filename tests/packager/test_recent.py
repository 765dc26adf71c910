"""GET /v1/packages, the staff page's "Recent packages": the newest by the bucket's clock
over every job record (not the first 1,000 keys in listing order), with the patient's name
and the state as the record has it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dicomiso_common.jobs import JobRecord, records_prefix

OLD = 1005  # more than one listing page (1,000 keys)


def _record(job_id: str, at: float, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"state": "failed", "error": "synthetic", **fields}
    return JobRecord(
        id=job_id,
        kind="package",
        request={"accession_numbers": ["MR.1"], "format": "iso", "profile": "STD-GEN-CD"},
        created_at=at,
        updated_at=at,
        heartbeat_at=at,
        **values,
    ).model_dump(mode="json")


def test_newest_packages_come_from_every_page_of_the_listing(make_stack: Any) -> None:
    stack = make_stack()
    store, prefix = stack.store, records_prefix("package")
    start = time.time() - 86400
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: store.put_json(f"{prefix}{i:032x}.json", _record(f"{i:032x}", start + i)),
                range(OLD),
            )
        )
    time.sleep(1.1)  # LastModified has one-second resolution
    newest = "f" * 32  # last in listing order: beyond the first 1,000 keys
    store.put_json(
        f"{prefix}{newest}.json",
        _record(
            newest,
            time.time(),
            state="succeeded",
            error=None,
            result={"filename": "DewiKartika-MR1.iso", "size": 10, "patient_name": "Dewi Kartika"},
        ),
    )

    response = stack.packager.get("/v1/packages")

    assert response.status_code == 200, response.text
    rows = response.json()
    assert len(rows) == 20
    assert rows[0]["id"] == newest and rows[0]["patient_name"] == "Dewi Kartika"
    assert rows[0]["state"] == "succeeded"
    assert [r["id"] for r in rows[1:]] == [f"{i:032x}" for i in range(OLD - 1, OLD - 20, -1)]
