"""Fixtures for the forwarder: studies seeded into the bucket, the app in-process, real peers."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from dicomiso_common.dicom import accession_key, instance_key
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from dicomiso_forwarder.app import create_app
from dicomiso_forwarder.settings import ForwarderSettings
from dicomiso_retriever.manifest import build_manifest, write_manifest


def seed(store: Store, files: list[Path], accession: str | None = None) -> str:
    """Put files into the bucket as the retriever would (instances, manifest, accession index)."""
    study_uid = ""
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study_uid = str(ds.StudyInstanceUID)
        data = path.read_bytes()
        store.put_bytes(
            instance_key(study_uid, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)),
            data,
            metadata={"sha256": hashlib.sha256(data).hexdigest()},
        )
    write_manifest(store, build_manifest(store, study_uid, {}, "seed", "test"))
    if accession:
        store.put_json(
            accession_key(accession), {"accession_number": accession, "study_uids": [study_uid]}
        )
    return study_uid


@dataclass
class Forwarder:
    client: TestClient
    store: Store

    def post(self, body: dict[str, Any]) -> Any:
        return self.client.post("/v1/forwards", json=body)

    def wait(self, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get(f"/v1/forwards/{job_id}?instances=true").json()
            if status["state"] in ("succeeded", "failed"):
                return dict(status)
            time.sleep(0.1)
        raise AssertionError(f"forward {job_id} did not finish: {status}")

    def run(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(body)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["id"])


@pytest.fixture
def store(s3_bucket: Any) -> Store:
    return Store.from_settings(
        CommonSettings(s3_endpoint_url=s3_bucket.endpoint_url, s3_bucket=s3_bucket.name)
    )


@pytest.fixture
def make_forwarder(s3_bucket: Any, store: Store) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(peers: dict[str, Any], **overrides: Any) -> Forwarder:
        values: dict[str, Any] = {
            "s3_endpoint_url": s3_bucket.endpoint_url,
            "s3_bucket": s3_bucket.name,
            "peers": peers,
            "send_backoff": 0.05,
            "job_heartbeat": 0.5,
            "job_stale_after": 5.0,
            "dicom_acse_timeout": 5,
            "dicom_dimse_timeout": 15,
            "dicom_network_timeout": 15,
            "replica_id": "fwd-test",
        }
        values.update(overrides)
        client = TestClient(create_app(ForwarderSettings(**values)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return Forwarder(client, store)

    yield make
    for client in clients:
        client.__exit__(None, None, None)
