"""The mkiso2 relay: a study not yet in the bucket is retrieved first, over HTTP, then sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicomiso_common import serve
from dicomiso_retriever.app import create_app as create_retriever
from dicomiso_retriever.settings import RetrieverSettings
from support.dcmtk import StoreSCP
from support.net import free_port


@pytest.fixture
def retriever_url(s3_bucket: Any, orthanc: Any) -> Iterator[str]:
    """A real retriever over HTTP (uvicorn in a thread) on the same bucket and Orthanc."""
    settings = RetrieverSettings(
        s3_endpoint_url=s3_bucket.endpoint_url,
        s3_bucket=s3_bucket.name,
        pacs_aet=orthanc.aet,
        pacs_port=orthanc.dicom_port,
        scp_port=free_port(),
        http_port=free_port(),
        api_token="relay-token",
        replica_id="relay-retriever",
    )
    orthanc.register_modality(settings.scp_aet, "127.0.0.1", settings.scp_port)
    server = serve.server(create_retriever(settings), settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.http_port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "retriever did not start"
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=20)


def test_study_missing_from_the_bucket_is_retrieved_then_forwarded(
    make_forwarder: Any, orthanc: Any, study_factory: Any, retriever_url: str, tmp_path: Path
) -> None:
    study = study_factory(ct=3, mr=1)
    orthanc.upload(study.files)
    with StoreSCP(tmp_path / "recv", aet="RELAYDST") as scp:
        forwarder = make_forwarder(
            {"relay": {"aet": "RELAYDST", "host": "127.0.0.1", "port": scp.port}},
            retriever_url=retriever_url,
            call_token="relay-token",
        )
        status = forwarder.run({"accession_numbers": [study.accession], "destination": "relay"})
        received = scp.sop_uids()

    assert status["state"] == "succeeded", status
    assert received == set(study.sop_uids)
    assert httpx.get(f"{retriever_url}/v1/retrievals/{'0' * 32}").status_code == 401


def test_retrieval_failure_is_the_forward_failure(
    make_forwarder: Any, retriever_url: str, tmp_path: Path
) -> None:
    with StoreSCP(tmp_path / "recv", aet="RELAYDST") as scp:
        forwarder = make_forwarder(
            {"relay": {"aet": "RELAYDST", "host": "127.0.0.1", "port": scp.port}},
            retriever_url=retriever_url,
            call_token="relay-token",
        )
        status = forwarder.run({"accession_numbers": ["NOSUCH.77"], "destination": "relay"})

    assert status["state"] == "failed"
    assert status["error"] == "retrieval failed: no study found for accession NOSUCH.77"
