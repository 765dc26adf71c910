"""The real MariaDB on 127.0.0.1:3306 (root, no password), as the lookup tests use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

MARIADB_PORT = 3306


def root_sql(sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Run one statement as root and return its rows."""
    conn = pymysql.connect(host="127.0.0.1", port=MARIADB_PORT, user="root", password="",
                           autocommit=True, cursorclass=pymysql.cursors.DictCursor)
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
