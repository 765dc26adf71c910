"""The whole system under real faults: lookup (MariaDB HIS) and retriever over HTTP, the
packager in-process (or as subprocesses), Orthanc as the PACS, moto as S3.

Unlike ``tests/packager/conftest.py`` every hop a fault test wants to cut can be routed
through a :class:`support.tcpproxy.TcpProxy`: the HIS port of the lookup and the S3 endpoint
of the packager are parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from reliability.helpers import TOKEN, LogCollector, System
from reliability.hostile_support import wired  # noqa: F401 - the hostile-input tests' stack
from retriever.conftest import make_retriever, retriever  # noqa: F401 - the retriever fixtures

from dicomiso_packager.app import create_app as create_packager
from dicomiso_packager.settings import PackagerSettings
from support.mariadb import MARIADB_PORT
from support.stack import packager_values, start_backend


@pytest.fixture
def make_system(s3_bucket: Any, orthanc: Any, tmp_path: Path) -> Iterator[Any]:
    """Start lookup + retriever over HTTP and the packager in-process; all stopped after.

    Keyword arguments: ``pacs`` (default the session Orthanc), ``his_port`` (the port the
    lookup dials for MariaDB, e.g. a proxy's), ``packager_s3`` (the packager's S3 endpoint,
    e.g. a proxy's), ``packager`` (False: no in-process packager), ``retriever``
    (RetrieverSettings overrides) and PackagerSettings overrides.
    """
    with ExitStack() as stack:

        def make(
            *,
            pacs: Any = None,
            his_port: int = MARIADB_PORT,
            packager_s3: str | None = None,
            packager: bool = True,
            retriever: dict[str, Any] | None = None,
            **overrides: Any,
        ) -> System:
            pacs = pacs or orthanc
            backend = start_backend(
                stack,
                s3_bucket,
                pacs,
                token=TOKEN,
                name="rel",
                his_port=his_port,
                retriever={"dicom_acse_timeout": 5, **(retriever or {})},
            )
            values = packager_values(backend, tmp_path, name="rel")
            values.update(call_token=TOKEN, job_stale_after=3.0)
            if packager_s3 is not None:
                values["s3_endpoint_url"] = packager_s3
            values.update(overrides)
            settings = PackagerSettings(**values)
            client = (
                stack.enter_context(
                    TestClient(create_packager(settings), raise_server_exceptions=False)
                )
                if packager
                else None
            )
            system = System(
                client,
                backend.store,  # direct, never via a proxy
                settings,
                backend.his,
                pacs,
                backend.lookup_url,
                backend.retriever_url,
            )
            handler = LogCollector(system.log)
            jobs_log = logging.getLogger("dicomiso_common.jobs")
            jobs_log.addHandler(handler)
            stack.callback(jobs_log.removeHandler, handler)
            return system

        yield make
