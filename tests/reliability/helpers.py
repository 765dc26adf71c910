"""Helpers of the fault tests: the running system, synthetic studies, waits."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.testclient import TestClient

from dicomiso_common.store import Store
from dicomiso_packager.settings import PackagerSettings
from support.mariadb import HisDb, add_patient
from support.studies import Study

TOKEN = "reliability-token"
FINAL = ("succeeded", "failed")


def plain_study(
    study_factory: Any, patient_id: str, *, ct: int, rows: int = 128, cols: int = 128
) -> Study:
    """CT slices only: sizes and counts a fault test can reason about."""
    study: Study = study_factory(
        ct=ct,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
        patient_id=patient_id,
        rows=rows,
        cols=cols,
    )
    return study


@dataclass
class System:
    """One running system; `packager` is a TestClient on the in-process packager."""

    packager: TestClient | None
    store: Store
    settings: PackagerSettings
    his: HisDb
    pacs: Any
    lookup_url: str
    retriever_url: str
    requests: int = 0
    log: list[logging.LogRecord] = field(default_factory=list)

    def post(self, body: dict[str, Any]) -> Any:
        self.requests += 1
        assert self.packager is not None
        return self.packager.post("/v1/packages", json=body)

    def status(self, job_id: str) -> Any:
        self.requests += 1
        assert self.packager is not None
        return self.packager.get(f"/v1/packages/{job_id}")

    def wait(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll until the job is final; answers other than 200 (S3 cut) are polled through."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            response = self.status(job_id)
            if response.status_code == 200:
                last = response.json()
                if last["state"] in FINAL:
                    return dict(last)
            time.sleep(0.2)
        raise AssertionError(f"package {job_id} did not finish: {last}")

    def keys(self, prefix: str) -> list[str]:
        return [o.key for o in self.store.list(prefix)]

    def register(self, medrec: str, name: str, study: Study) -> None:
        add_patient(self.his, medrec, name, [study.accession])


class LogCollector(logging.Handler):
    """Keeps every record it is given, in order (a test reads what the services logged)."""

    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become ready")
