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
from pydantic import SecretStr
from reliability.helpers import TOKEN, System, _Collect
from reliability.hostile_support import wired  # noqa: F401 - the hostile-input tests' stack
from retriever.conftest import make_retriever, retriever  # noqa: F401 - the retriever fixtures

from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from dicomiso_lookup.app import create_app as create_lookup
from dicomiso_lookup.settings import LookupSettings
from dicomiso_packager.app import create_app as create_packager
from dicomiso_packager.settings import PackagerSettings
from dicomiso_retriever.app import create_app as create_retriever
from dicomiso_retriever.settings import RetrieverSettings
from support.mariadb import MARIADB_PORT, his_database
from support.net import free_port
from support.servers import serving


@pytest.fixture
def make_system(s3_bucket: Any, orthanc: Any, tmp_path: Path) -> Iterator[Any]:
    """Start lookup + retriever over HTTP and the packager in-process; all stopped after.

    Keyword arguments: ``pacs`` (default the session Orthanc), ``his_port`` (the port the
    lookup dials for MariaDB, e.g. a proxy's), ``packager_s3`` (the packager's S3 endpoint,
    e.g. a proxy's), ``packager`` (False: no in-process packager) and PackagerSettings
    overrides.
    """
    with ExitStack() as stack:

        def make(
            *,
            pacs: Any = None,
            his_port: int = MARIADB_PORT,
            packager_s3: str | None = None,
            packager: bool = True,
            **overrides: Any,
        ) -> System:
            pacs = pacs or orthanc
            his = stack.enter_context(his_database())
            s3 = {"s3_endpoint_url": s3_bucket.endpoint_url, "s3_bucket": s3_bucket.name}
            lookup_settings = LookupSettings(
                **s3,
                http_port=free_port(),
                api_token=TOKEN,
                his_url=SecretStr(his.url(his_port)),
                his_accession_db=his.accession_db,
                his_patient_db=his.patient_db,
            )
            lookup_url = stack.enter_context(
                serving(create_lookup(lookup_settings), lookup_settings)
            )
            retriever_settings = RetrieverSettings(
                **s3,
                http_port=free_port(),
                api_token=TOKEN,
                pacs_aet=pacs.aet,
                pacs_port=pacs.dicom_port,
                scp_port=free_port(),
                job_heartbeat=0.5,
                job_stale_after=5.0,
                replica_id="rel-retriever",
                dicom_acse_timeout=5,
            )
            pacs.register_modality(
                retriever_settings.scp_aet, "127.0.0.1", retriever_settings.scp_port
            )
            retriever_url = stack.enter_context(
                serving(create_retriever(retriever_settings), retriever_settings)
            )
            values: dict[str, Any] = {
                **s3,
                "lookup_url": lookup_url,
                "retriever_url": retriever_url,
                "call_token": TOKEN,
                "job_heartbeat": 0.5,
                "job_stale_after": 3.0,
                "work_dir": tmp_path,
                "replica_id": "rel-packager",
                "institution_name": "Synthetic General Hospital",
            }
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
            store = Store.from_settings(CommonSettings(**s3))  # direct, never via a proxy
            system = System(client, store, settings, his, pacs, lookup_url, retriever_url)
            handler = _Collect(system.log)
            jobs_log = logging.getLogger("dicomiso_common.jobs")
            jobs_log.addHandler(handler)
            stack.callback(jobs_log.removeHandler, handler)
            return system

        yield make
