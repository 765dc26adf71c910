"""Fixtures for the lookup service: a HIS in the real MariaDB, created from schema.sql/seed.sql."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from dicomiso_lookup.app import create_app
from dicomiso_lookup.settings import LookupSettings
from support.mariadb import HisDb, his_database


@pytest.fixture
def his_db() -> Iterator[HisDb]:
    """schema.sql + seed.sql under fresh database names, read through a SELECT-only user."""
    with his_database() as db:
        yield db


@pytest.fixture
def make_lookup() -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = LookupSettings(**overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def lookup(make_lookup: Any, his_db: HisDb) -> TestClient:
    client: TestClient = make_lookup(
        his_url=SecretStr(his_db.url()),
        his_accession_db=his_db.accession_db,
        his_patient_db=his_db.patient_db,
        his_read_timeout=2.0,
    )
    return client
