"""The services a package needs, started for real: lookup (MariaDB HIS) and retriever (a PACS)
over HTTP on loopback ports, with the packager's settings to match.

One builder for every folder that runs the system (tests/packager, tests/web,
tests/reliability); each fixture adds what it alone needs (a browser, a forwarder, a proxy)
and keeps its own names. Everything is started on the caller's ExitStack and stopped with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from dicomiso_lookup.app import create_app as create_lookup
from dicomiso_lookup.settings import LookupSettings
from dicomiso_retriever.app import create_app as create_retriever
from dicomiso_retriever.settings import RetrieverSettings
from support.mariadb import MARIADB_PORT, HisDb, his_database
from support.net import free_port
from support.servers import serving

INSTITUTION = "Synthetic General Hospital"


@dataclass(frozen=True)
class Backend:
    """lookup and retriever, running; `s3` are the bucket settings every service shares."""

    s3: dict[str, Any]
    store: Store  # straight to the S3 endpoint, never through a test's proxy
    his: HisDb
    lookup_url: str
    retriever_url: str
    retriever_settings: RetrieverSettings


def start_backend(
    stack: ExitStack,
    s3_bucket: Any,
    pacs: Any,
    *,
    token: str,
    name: str,
    his_port: int = MARIADB_PORT,
    retriever: Mapping[str, Any] | None = None,
) -> Backend:
    """Start lookup and retriever (replica `{name}-retriever`) on `stack`.

    Args:
        s3_bucket: The test's bucket (tests/conftest.py).
        pacs: The Orthanc to retrieve from; our SCP is registered there.
        token: Bearer token both services require.
        his_port: The port the lookup dials for MariaDB (a proxy's, to cut it).
        retriever: RetrieverSettings overrides.
    """
    his = stack.enter_context(his_database())
    s3: dict[str, Any] = {"s3_endpoint_url": s3_bucket.endpoint_url, "s3_bucket": s3_bucket.name}
    lookup_settings = LookupSettings(
        **s3,
        http_port=free_port(),
        api_token=token,
        his_url=SecretStr(his.url(his_port)),
        his_accession_db=his.accession_db,
        his_patient_db=his.patient_db,
    )
    lookup_url = stack.enter_context(serving(create_lookup(lookup_settings), lookup_settings))
    retriever_settings = RetrieverSettings(
        **{
            **s3,
            "http_port": free_port(),
            "api_token": token,
            "pacs_aet": pacs.aet,
            "pacs_port": pacs.dicom_port,
            "scp_port": free_port(),
            "job_heartbeat": 0.5,
            "job_stale_after": 5.0,
            "replica_id": f"{name}-retriever",
            **(retriever or {}),
        }
    )
    pacs.register_modality(retriever_settings.scp_aet, "127.0.0.1", retriever_settings.scp_port)
    retriever_url = stack.enter_context(
        serving(create_retriever(retriever_settings), retriever_settings)
    )
    store = Store.from_settings(CommonSettings(**s3))
    return Backend(s3, store, his, lookup_url, retriever_url, retriever_settings)


def packager_values(backend: Backend, work_dir: Path, *, name: str) -> dict[str, Any]:
    """PackagerSettings values for a packager (replica `{name}-packager`) on this backend;
    the caller adds its token, timings and overrides."""
    return {
        **backend.s3,
        "lookup_url": backend.lookup_url,
        "retriever_url": backend.retriever_url,
        "job_heartbeat": 0.5,
        "job_stale_after": 10.0,
        "work_dir": work_dir,
        "replica_id": f"{name}-packager",
        "institution_name": INSTITUTION,
    }
