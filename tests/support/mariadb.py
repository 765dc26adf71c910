"""The real MariaDB on 127.0.0.1:3306 (root, no password), as the lookup tests use it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

MARIADB_PORT = 3306


def root_sql(sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Run one statement as root and return its rows."""
    conn = pymysql.connect(
        host="127.0.0.1",
        port=MARIADB_PORT,
        user="root",
        password="",
        autocommit=True,
        cursorclass=pymysql.cursors.DictCursor,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


@dataclass
class HisDb:
    """A test's own copy of the example HIS: two databases and a SELECT-only user."""

    accession_db: str
    patient_db: str
    user: str
    password: str

    def url(self, port: int = MARIADB_PORT) -> str:
        return f"mysql://{self.user}:{self.password}@127.0.0.1:{port}"


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def his_database() -> Iterator[HisDb]:
    """schema.sql + seed.sql under fresh database names, read through a SELECT-only user."""
    tag = uuid.uuid4().hex[:10]
    db = HisDb(f"t{tag}_his", f"t{tag}_pat", f"ro_{tag}", uuid.uuid4().hex)
    sql = "\n".join(
        (ROOT / "services/lookup" / f).read_text(encoding="utf-8")
        for f in ("schema.sql", "seed.sql")
    )
    sql = sql.replace("pacsdb_his", db.accession_db).replace("rsabt201107", db.patient_db)
    subprocess.run(
        [
            "mariadb",
            "-h127.0.0.1",
            f"-P{MARIADB_PORT}",
            "-uroot",
            "--default-character-set=utf8mb4",
        ],
        input=sql.encode(),
        check=True,
    )
    root_sql(f"CREATE USER '{db.user}'@'127.0.0.1' IDENTIFIED BY %s", (db.password,))
    for name in (db.accession_db, db.patient_db):
        root_sql(f"GRANT SELECT ON `{name}`.* TO '{db.user}'@'127.0.0.1'")
    try:
        yield db
    finally:
        root_sql(f"DROP USER IF EXISTS '{db.user}'@'127.0.0.1'")
        for name in (db.accession_db, db.patient_db):
            root_sql(f"DROP DATABASE IF EXISTS `{name}`")


def add_patient(db: HisDb, medrec_id: str, name: str, accessions: list[str]) -> None:
    """Register a synthetic patient and their accession numbers in a test's HIS."""
    root_sql(
        f"INSERT INTO `{db.patient_db}`.pasien (MEDRECID, Nama) VALUES (%s, %s)", (medrec_id, name)
    )
    for i, acc in enumerate(accessions):
        root_sql(
            f"INSERT INTO `{db.accession_db}`.accessions (AccessionNumber, MEDRECID, "
            "RegID) VALUES (%s, %s, %s)",
            (acc, medrec_id, f"REG-{medrec_id}-{i}"),
        )
