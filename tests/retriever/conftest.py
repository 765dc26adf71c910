"""Fixtures for the retriever: the app in-process with its real SCP, against the real Orthanc."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dicomiso_common.store import Store
from dicomiso_retriever.app import create_app
from dicomiso_retriever.settings import RetrieverSettings
from support.net import free_port


@dataclass
class Retriever:
    app: FastAPI
    client: TestClient
    settings: RetrieverSettings
    store: Store

    def post(self, body: dict[str, Any]) -> Any:
        return self.client.post("/v1/retrievals", json=body)

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll the status endpoint until the job ends; return its last status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get(f"/v1/retrievals/{job_id}").json()
            if status["state"] in ("succeeded", "failed"):
                return dict(status)
            time.sleep(0.1)
        raise AssertionError(f"retrieval {job_id} did not finish: {status}")

    def run(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(body)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["id"])

    def keys(self, prefix: str) -> list[str]:
        return [o.key for o in self.store.list(prefix)]


def retriever_settings(s3_bucket: Any, pacs: Any, **overrides: Any) -> RetrieverSettings:
    values: dict[str, Any] = {
        "s3_endpoint_url": s3_bucket.endpoint_url,
        "s3_bucket": s3_bucket.name,
        "pacs_aet": pacs.aet,
        "pacs_host": "127.0.0.1",
        "pacs_port": pacs.dicom_port,
        "scp_port": free_port(),
        "job_heartbeat": 0.5,
        # 10 s, not less: a job gives itself up after 2/3 of it without a confirmed
        # heartbeat, and one slow PUT to the moto thread of a loaded test process would let
        # the sweeper take the job over and run it again (a second C-MOVE; seen in CI at 3 s).
        "job_stale_after": 10.0,
        "dicom_dimse_timeout": 30.0,
        "dicom_network_timeout": 30.0,
        "replica_id": "test-replica",
    }
    if "s3_bucket_name" in overrides:
        values["s3_bucket"] = overrides.pop("s3_bucket_name")
    values.update(overrides)
    return RetrieverSettings(**values)


@pytest.fixture
def make_retriever(s3_bucket: Any, orthanc: Any) -> Iterator[Any]:
    """Start retriever apps (lifespan: SCP + sweeper) against a PACS; all stopped at the end."""
    clients: list[TestClient] = []

    def make(pacs: Any = None, register: bool = True, **overrides: Any) -> Retriever:
        pacs = pacs or orthanc
        settings = retriever_settings(s3_bucket, pacs, **overrides)
        if register:
            pacs.register_modality(settings.scp_aet, "127.0.0.1", settings.scp_port)
        app = create_app(settings)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return Retriever(app, client, settings, app.state.store)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def retriever(make_retriever: Any) -> Retriever:
    return make_retriever()  # type: ignore[no-any-return]
