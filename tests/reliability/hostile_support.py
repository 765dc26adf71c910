"""The four services wired to real fixtures, for the hostile-input and access tests (issue 10).

`wired` starts lookup (real MariaDB HIS), retriever (real Orthanc, its own Storage SCP),
forwarder (one peer on a loopback port nothing listens on, so a forward fails fast) and
packager, each over real HTTP (uvicorn in a thread) on free loopback ports, sharing a fresh
bucket on the session's moto server. Lookup, retriever and forwarder take one backend token;
the packager takes its own and calls the others with the backend token, so a packager token is
never valid on a backend service and the reverse.

Spies on our own code (the real function still runs) count what reached the HIS; Orthanc's log
counters (support.orthanc) count what reached the PACS; `job_keys()` lists job records.
Import the fixture into a test module: `from reliability.hostile_support import wired`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from dicomiso_forwarder.app import create_app as create_forwarder
from dicomiso_forwarder.settings import ForwarderSettings
from dicomiso_lookup.app import create_app as create_lookup
from dicomiso_lookup.settings import LookupSettings
from dicomiso_packager.app import create_app as create_packager
from dicomiso_packager.settings import PackagerSettings
from dicomiso_retriever.app import create_app as create_retriever
from dicomiso_retriever.settings import RetrieverSettings
from support.mariadb import his_database
from support.net import free_port
from support.servers import serving

BACKEND_TOKEN = "hostile-backend-token-0123456789"
PACKAGER_TOKEN = "hostile-packager-token-9876543210"
SERVICES = ("lookup", "retriever", "packager", "forwarder")
# Seeded in services/lookup/seed.sql (one patient, two accessions).
KNOWN_ACCESSIONS = ("MR.001", "CT.002")


@dataclass
class Wired:
    urls: dict[str, str]
    tokens: dict[str, str]
    apps: dict[str, FastAPI]
    store: Store
    orthanc: Any
    his_finds: list[str] = field(default_factory=list)

    def client(self, service: str, token: str | None = "own") -> httpx.Client:
        """An HTTP client for one service; `token="own"` sends that service's token."""
        headers = {}
        token = self.tokens[service] if token == "own" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(
            base_url=self.urls[service], headers=headers, timeout=30.0, trust_env=False
        )

    def job_keys(self) -> set[str]:
        return {o.key for o in self.store.list("jobs/")}

    def audit_keys(self) -> set[str]:
        return {o.key for o in self.store.list("audit/")}


def _spy(target: Any, name: str, calls: list[str]) -> None:
    """Record each call of target.name (the real method still runs)."""
    real: Callable[..., Any] = getattr(target, name)
    lock = threading.Lock()

    def spied(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(str(args[0]) if args else "")
        return real(*args, **kwargs)

    setattr(target, name, spied)


def _bucket(s3_server: Any, stack: ExitStack) -> tuple[dict[str, Any], Store]:
    client = s3_server.client()
    name = f"dicom-iso-hostile-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)

    def drop() -> None:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)

    stack.callback(drop)
    s3 = {"s3_endpoint_url": s3_server.endpoint_url, "s3_bucket": name}
    return s3, Store.from_settings(CommonSettings(**s3))


def start_wired(stack: ExitStack, s3_server: Any, orthanc: Any, work_dir: Path) -> Wired:
    """Start the four services on `stack` (stopped, last started first, when it closes)."""
    s3, store = _bucket(s3_server, stack)
    his = stack.enter_context(his_database())
    backend: dict[str, Any] = {"api_token": SecretStr(BACKEND_TOKEN)}
    lookup_s = LookupSettings(
        **s3,
        **backend,
        http_port=free_port(),
        his_url=SecretStr(his.url()),
        his_accession_db=his.accession_db,
        his_patient_db=his.patient_db,
        his_read_timeout=3.0,
    )
    retriever_s = RetrieverSettings(
        **s3,
        **backend,
        http_port=free_port(),
        pacs_aet=orthanc.aet,
        pacs_host="127.0.0.1",
        pacs_port=orthanc.dicom_port,
        scp_port=free_port(),
        job_heartbeat=0.5,
        job_stale_after=5.0,
        dicom_acse_timeout=5.0,
        dicom_dimse_timeout=10.0,
        dicom_network_timeout=10.0,
        replica_id="hostile-retriever",
    )
    orthanc.register_modality(retriever_s.scp_aet, "127.0.0.1", retriever_s.scp_port)
    apps = {"lookup": create_lookup(lookup_s), "retriever": create_retriever(retriever_s)}
    urls = {
        "lookup": stack.enter_context(serving(apps["lookup"], lookup_s)),
        "retriever": stack.enter_context(serving(apps["retriever"], retriever_s)),
    }
    forwarder_s = ForwarderSettings(
        **s3,
        **backend,
        http_port=free_port(),
        retriever_url=urls["retriever"],
        peers={"archive": {"aet": "ARCHIVE", "host": "127.0.0.1", "port": free_port()}},
        send_attempts=1,
        send_backoff=0.0,
        retrieve_wait=30.0,
        job_heartbeat=0.5,
        job_stale_after=5.0,
        dicom_acse_timeout=2.0,
        dicom_dimse_timeout=5.0,
        dicom_network_timeout=5.0,
        replica_id="hostile-forwarder",
    )
    apps["forwarder"] = create_forwarder(forwarder_s)
    urls["forwarder"] = stack.enter_context(serving(apps["forwarder"], forwarder_s))
    packager_s = PackagerSettings(
        **s3,
        api_token=SecretStr(PACKAGER_TOKEN),
        call_token=SecretStr(BACKEND_TOKEN),
        http_port=free_port(),
        lookup_url=urls["lookup"],
        retriever_url=urls["retriever"],
        forwarder_url=urls["forwarder"],
        retrieve_wait=30.0,
        job_heartbeat=0.5,
        job_stale_after=10.0,
        work_dir=work_dir,
        replica_id="hostile-packager",
        institution_name="Synthetic General Hospital",
    )
    apps["packager"] = create_packager(packager_s)
    urls["packager"] = stack.enter_context(serving(apps["packager"], packager_s))
    tokens = {
        "lookup": BACKEND_TOKEN,
        "retriever": BACKEND_TOKEN,
        "forwarder": BACKEND_TOKEN,
        "packager": PACKAGER_TOKEN,
    }
    wired = Wired(urls, tokens, apps, store, orthanc)
    his_obj = apps["lookup"].state.resolver.his
    _spy(his_obj, "find", wired.his_finds)
    return wired


@pytest.fixture(scope="module")
def wired(
    s3_server: Any, orthanc: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Wired]:
    """All four services over HTTP against real S3, Orthanc and MariaDB; stopped after."""
    with ExitStack() as stack:
        yield start_wired(stack, s3_server, orthanc, tmp_path_factory.mktemp("hostile"))
