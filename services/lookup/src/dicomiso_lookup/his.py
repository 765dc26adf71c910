"""The HIS database, read-only: accession -> MEDRECID/RegID -> Nama, over a small pool.

Only the two configured queries are ever sent, each with the validated accession number or
MEDRECID bound as a parameter by the driver. Sessions are opened READ ONLY, with connect and
read timeouts, so a slow or dead HIS costs a request a few seconds, never a worker forever.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

from dicomiso_common.errors import DicomisoError, Unavailable

from .settings import LookupSettings

log = logging.getLogger(__name__)

_LOST = {2006, 2013}  # CR_SERVER_GONE_ERROR, CR_SERVER_LOST
_CONFIG = {1044, 1045, 1049, 1054, 1064, 1142, 1146}  # access, unknown db/column/table, syntax
_TRUST_IDLE = 5.0  # seconds an idle connection is used without a ping


class HisUnavailable(Unavailable):
    title = "HIS database unavailable"


class HisTimeout(DicomisoError):
    status = 504
    title = "HIS database timed out"
    headers = {"Retry-After": "5"}


class HisMisconfigured(DicomisoError):
    """A query setting does not fit the database (syntax, table, column, rights).

    Not a 503: retrying will not help until someone fixes the configuration.
    """

    status = 500
    title = "HIS lookup misconfigured"


class HisDataError(DicomisoError):
    """The HIS answered, but with rows we cannot trust to name one patient."""

    status = 502
    title = "HIS data inconsistent"


@dataclass(frozen=True)
class HisPatient:
    medrec_id: str
    reg_id: str | None
    name: str


def _text(value: object) -> str | None:
    """A column value as trimmed text (VARBINARY columns arrive as bytes), None for NULL/''."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
    return text.strip() or None


def _column(row: dict[str, Any], name: str) -> object:
    """A column by name, whatever case the query's alias used."""
    for key, value in row.items():
        if key.lower() == name.lower():
            return value
    raise HisMisconfigured(f"HIS query returns no column {name}")


class His:
    """A bounded pool of read-only connections; broken ones are dropped, not reused."""

    def __init__(self, settings: LookupSettings) -> None:
        self.settings = settings
        self._idle: queue.LifoQueue[tuple[pymysql.connections.Connection[Any], float]] = (
            queue.LifoQueue()
        )
        self._slots = threading.BoundedSemaphore(settings.his_pool_size)
        self._accession_sql = settings.accession_sql()
        self._patient_sql = settings.patient_sql()

    def _connect(self) -> pymysql.connections.Connection[Any]:
        s = self.settings
        ssl = {"ca": s.his_ssl_ca} if s.his_ssl_ca else None
        return pymysql.connect(
            **s.his_connection(),
            connect_timeout=s.his_connect_timeout,
            read_timeout=s.his_read_timeout,
            write_timeout=s.his_read_timeout,
            charset="utf8mb4",
            autocommit=True,
            cursorclass=pymysql.cursors.DictCursor,
            init_command="SET SESSION TRANSACTION READ ONLY",
            ssl=ssl,
        )

    def _take(self) -> pymysql.connections.Connection[Any]:
        """An idle connection that still answers, or a new one.

        Idle connections die quietly (HIS restart, wait_timeout, a firewall); one that sat
        longer than a few seconds is pinged before use instead of failing a request.
        """
        while True:
            try:
                conn, since = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            if time.monotonic() - since < _TRUST_IDLE:
                return conn
            try:
                conn.ping(reconnect=False)
                return conn
            except pymysql.err.MySQLError:
                if conn.open:
                    conn.close()

    @contextmanager
    def _connection(self) -> Iterator[pymysql.connections.Connection[Any]]:
        if not self._slots.acquire(timeout=self.settings.his_read_timeout):
            raise HisUnavailable("all HIS connections are busy; retry later")
        conn = None
        try:
            conn = self._take()
            yield conn
            self._idle.put((conn, time.monotonic()))
            conn = None
        finally:
            if conn is not None and conn.open:  # failed mid-use: never hand it out again
                conn.close()
            self._slots.release()

    def _rows(self, sql: str, param: str) -> list[dict[str, Any]]:
        """Run one configured query (at most 2 rows); lost connections are retried once."""
        for attempt in (1, 2):
            try:
                with self._connection() as conn, conn.cursor() as cur:
                    cur.execute(sql, (param,))
                    return [dict(r) for r in cur.fetchmany(2)]
            except pymysql.err.OperationalError as exc:
                code = exc.args[0] if exc.args else None
                if code == 2013 and "timed out" in str(exc):
                    seconds = self.settings.his_read_timeout
                    log.warning("HIS query timed out", extra={"seconds": seconds})
                    raise HisTimeout(f"HIS did not answer within {seconds:g} s") from exc
                if code in _LOST and attempt == 1:
                    continue  # read-only query on a connection that died: once more, fresh
                if code in _CONFIG:
                    raise self._misconfigured(code) from exc
                log.warning("HIS unavailable", extra={"mysql_error": code})
                raise HisUnavailable(f"HIS database unavailable (MySQL error {code})") from exc
            except (pymysql.err.ProgrammingError, pymysql.err.InternalError) as exc:
                raise self._misconfigured(exc.args[0] if exc.args else None) from exc
            except pymysql.err.MySQLError as exc:
                code = exc.args[0] if exc.args else None
                log.warning("HIS query failed", extra={"mysql_error": code})
                raise HisUnavailable(f"HIS query failed (MySQL error {code})") from exc
        raise HisUnavailable("HIS connection lost twice")  # pragma: no cover - loop returns

    @staticmethod
    def _misconfigured(code: object) -> HisMisconfigured:
        log.error("HIS query rejected by the database", extra={"mysql_error": code})
        return HisMisconfigured(
            f"the HIS rejected the configured query (MySQL error {code}); "
            "check DICOMISO_HIS_* settings"
        )

    def find(self, accession: str) -> HisPatient | None:
        """Return the patient of a (validated) accession number, or None when unknown."""
        rows = self._rows(self._accession_sql, accession)
        if not rows:
            return None
        medrecs = {_text(_column(r, "MEDRECID")) for r in rows}
        if len(medrecs) > 1:
            raise HisDataError(f"accession {accession} has rows of more than one patient")
        medrec = medrecs.pop()
        if medrec is None:
            raise HisDataError(f"accession {accession} has no MEDRECID in the HIS")
        patients = self._rows(self._patient_sql, medrec)
        names = {_text(_column(p, "Nama")) for p in patients}
        if not patients or names == {None}:
            raise HisDataError(
                f"accession {accession}: the HIS has no patient name for its medical record"
            )
        if len(names) > 1:
            raise HisDataError(f"accession {accession}: its medical record has several names")
        name = names.pop()
        assert name is not None  # noqa: S101 - excluded above
        return HisPatient(medrec, _text(_column(rows[0], "RegID")), name)

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
                self._idle.get_nowait()[0].close()
            except queue.Empty:
                return
