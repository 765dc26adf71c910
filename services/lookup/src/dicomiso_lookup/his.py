"""The HIS database, read-only: accession -> MEDRECID/RegID -> Nama, over a small pool.

Only the two configured queries are ever sent, each with the validated accession number or
MEDRECID bound as a parameter by the driver. Sessions are opened READ ONLY, with connect and
read timeouts, so a slow or dead HIS costs a request a few seconds, never a worker forever.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

from dicomiso_common.errors import DicomisoError, Unavailable

from .settings import LookupSettings

log = logging.getLogger(__name__)

_TIMEOUT_CODES = {2013}  # CR_SERVER_LOST: "Lost connection ... during query (timed out)"


class HisUnavailable(Unavailable):
    title = "HIS database unavailable"


class HisTimeout(DicomisoError):
    status = 504
    title = "HIS database timed out"
    headers = {"Retry-After": "5"}


@dataclass(frozen=True)
class HisPatient:
    medrec_id: str
    reg_id: str | None
    name: str


class His:
    """A bounded pool of read-only connections; broken ones are dropped, not reused."""

    def __init__(self, settings: LookupSettings) -> None:
        self.settings = settings
        self._idle: queue.LifoQueue[pymysql.connections.Connection[Any]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(settings.his_pool_size)
        self._accession_sql = settings.accession_sql()
        self._patient_sql = settings.patient_sql()

    def _connect(self) -> pymysql.connections.Connection[Any]:
        s = self.settings
        return pymysql.connect(**s.his_connection(),
                               connect_timeout=s.his_connect_timeout,
                               read_timeout=s.his_read_timeout,
                               write_timeout=s.his_read_timeout, charset="utf8mb4",
                               autocommit=True, cursorclass=pymysql.cursors.DictCursor,
                               init_command="SET SESSION TRANSACTION READ ONLY")

    @contextmanager
    def _connection(self) -> Iterator[pymysql.connections.Connection[Any]]:
        if not self._slots.acquire(timeout=self.settings.his_read_timeout):
            raise HisUnavailable("all HIS connections are busy; retry later")
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            yield conn
            self._idle.put(conn)
            conn = None
        finally:
            if conn is not None and conn.open:  # failed mid-use: never hand it out again
                conn.close()
            self._slots.release()

    def _query(self, sql: str, param: str) -> dict[str, Any] | None:
        try:
            with self._connection() as conn, conn.cursor() as cur:
                cur.execute(sql, (param,))
                row = cur.fetchone()
                return dict(row) if row else None
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else None
            if code in _TIMEOUT_CODES and "timed out" in str(exc):
                seconds = self.settings.his_read_timeout
                log.warning("HIS query timed out", extra={"seconds": seconds})
                raise HisTimeout(f"HIS did not answer within {seconds:g} s") from exc
            log.warning("HIS unavailable", extra={"mysql_error": code})
            raise HisUnavailable(f"HIS database unavailable (MySQL error {code})") from exc
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            log.warning("HIS query failed", extra={"mysql_error": code})
            raise HisUnavailable(f"HIS query failed (MySQL error {code})") from exc

    def find(self, accession: str) -> HisPatient | None:
        """Return the patient of a (validated) accession number, or None when unknown."""
        row = self._query(self._accession_sql, accession)
        if row is None:
            return None
        medrec = str(row["MEDRECID"])
        patient = self._query(self._patient_sql, medrec)
        if patient is None:
            return None
        reg = row.get("RegID")
        return HisPatient(medrec, None if reg is None else str(reg), str(patient["Nama"]))

    def ping(self) -> None:
        """Raise HisUnavailable unless a connection answers (used by /readyz)."""
        try:
            with self._connection() as conn:
                conn.ping(reconnect=False)
        except pymysql.err.MySQLError as exc:
            raise HisUnavailable("HIS database unreachable") from exc

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
