"""Fixtures for the lookup service: a HIS in the real MariaDB, created from schema.sql/seed.sql."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from dicomiso_lookup.app import create_app
from dicomiso_lookup.settings import LookupSettings
from support.mariadb import MARIADB_PORT, HisDb, root_sql

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def his_db() -> Iterator[HisDb]:
    """schema.sql + seed.sql under fresh database names, read through a SELECT-only user."""
    tag = uuid.uuid4().hex[:10]
    db = HisDb(f"t{tag}_his", f"t{tag}_pat", f"ro_{tag}", uuid.uuid4().hex)
    sql = "\n".join((ROOT / "services/lookup" / f).read_text(encoding="utf-8")
                    for f in ("schema.sql", "seed.sql"))
    sql = sql.replace("pacsdb_his", db.accession_db).replace("rsabt201107", db.patient_db)
    subprocess.run(["mariadb", "-h127.0.0.1", f"-P{MARIADB_PORT}", "-uroot",
                    "--default-character-set=utf8mb4"], input=sql.encode(), check=True)
    root_sql(f"CREATE USER '{db.user}'@'127.0.0.1' IDENTIFIED BY %s", (db.password,))
    for name in (db.accession_db, db.patient_db):
        root_sql(f"GRANT SELECT ON `{name}`.* TO '{db.user}'@'127.0.0.1'")
    yield db
    root_sql(f"DROP USER IF EXISTS '{db.user}'@'127.0.0.1'")
    for name in (db.accession_db, db.patient_db):
        root_sql(f"DROP DATABASE IF EXISTS `{name}`")


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
    return make_lookup(his_url=SecretStr(his_db.url()), his_accession_db=his_db.accession_db,  # type: ignore[no-any-return]
                       his_patient_db=his_db.patient_db, his_read_timeout=2.0)
