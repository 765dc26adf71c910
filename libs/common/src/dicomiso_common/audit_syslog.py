"""The audit trail's DICOM audit messages to the Audit Record Repository: syslog over TLS.

`audit.write` queues each event in the bucket (`audit-outbox/{UTC time}-{id}.json`) when
DICOMISO_AUDIT_SYSLOG_URL is set. One `Shipper` per deployment sends them: every replica of
every service with the setting runs one, and only the holder of the bucket lease
`leases/audit-syslog.json` (`leases.Lease`) ships; when it dies, its lease goes stale and
another replica's shipper takes over where the outbox stands.

The holder lists the outbox in key order (oldest first), renders each event (`render`, the
DICOM Audit Message of `atna.render`, or None: no counterpart, dropped from the outbox), and
sends up to DICOMISO_AUDIT_SYSLOG_BATCH RFC 5424 messages on one TLS connection with RFC 5425
octet-counting framing (`<length> <message>`). Syslog has no acknowledgement, so a batch
counts as delivered only when (1) every byte was sent, (2) the receiver's TCP acknowledged
every byte (the socket's send queue is empty), and (3) after our TLS close_notify the receiver
closed the connection by itself (EOF, not a reset): a receiver that closes with unread data
resets the connection instead, so an EOF after (2) means it read all of it. Only then are the
batch's outbox objects deleted. Any failure (refused, TLS verification, reset, timeout)
deletes nothing: the same objects go again, in order, after a backoff.

What remains (docs/architecture.md): a batch whose delivery could not be confirmed although
the receiver had read it (the connection broke after its last byte was read, or the deletes
failed) is sent again, so a message may arrive twice, never not at all; a receiver that does
not close after our close_notify within the timeout is trusted on (2) alone.

Logs carry counts and error classes only, never an event's contents.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import select
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from typing import Any

from . import atna, audit
from .errors import ObjectMissing
from .leases import Lease, LeaseHeld
from .settings import CommonSettings, syslog_target
from .store import Store

log = logging.getLogger(__name__)

Render = Callable[[Mapping[str, Any]], bytes | None]

LEASE_KEY = "leases/audit-syslog.json"
REJECTED = "audit-outbox-rejected/"  # an outbox object no renderer can read: kept, not sent
MSGID = "IHE+RFC-3881"  # what IHE ITI-20 asks of ATNA syslog messages
SD_ID = "dicomiso@32473"  # 32473: the private enterprise number for examples (RFC 5612)
BOM = b"\xef\xbb\xbf"  # RFC 5424 6.4: MSG in UTF-8 starts with a BOM
MAX_BACKOFF = 60.0
NOTICE, WARNING, ERROR = 5, 4, 3
_SEVERITY = {"refused": WARNING, "denied": WARNING, "rejected": WARNING, "failed": ERROR}
_HEADER_FIELD = re.compile(r"[^\x21-\x7e]")  # RFC 5424 PRINTUSASCII, no spaces
_SD_ESCAPE = re.compile(r'(["\\\]])')


def severity(event: Mapping[str, Any]) -> int:
    """Notice for what went as asked, warning for a refusal or a security alert, error for
    a failure (RFC 5424 severities)."""
    if event.get("action") == "security-alert":
        return WARNING
    return _SEVERITY.get(str(event.get("outcome")), NOTICE)


def _field(value: object, limit: int) -> str:
    text = _HEADER_FIELD.sub("_", str(value or ""))[:limit]
    return text or "-"


def _timestamp(at: object) -> str:
    """RFC 5424 TIMESTAMP (RFC 3339, UTC, microseconds) of the event's time."""
    try:
        when = datetime.fromisoformat(str(at))
    except ValueError:
        when = datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sd_value(value: object) -> str:
    """A PARAM-VALUE: '"', '\\' and ']' escaped (RFC 5424 6.3.3)."""
    return _SD_ESCAPE.sub(r"\\\1", str(value or ""))


def message(
    event: Mapping[str, Any], body: bytes, *, facility: int, hostname: str, app_name: str | None
) -> bytes:
    """One RFC 5424 message: header, our structured data (event id, service, action,
    outcome: ids only), then the BOM and the audit message."""
    pri = facility * 8 + severity(event)
    app = app_name or f"dicomiso-{event.get('service') or 'service'}"
    params = " ".join(
        f'{name}="{_sd_value(event.get(key))}"'
        for name, key in (
            ("eventId", "id"),
            ("service", "service"),
            ("action", "action"),
            ("outcome", "outcome"),
        )
    )
    header = (
        f"<{pri}>1 {_timestamp(event.get('at'))} {_field(hostname, 255)} "
        f"{_field(app, 48)} - {MSGID} [{SD_ID} {params}] "
    )
    return header.encode("utf-8") + BOM + body


def frame(msg: bytes) -> bytes:
    """RFC 5425 octet-counting: the message's length in bytes, a space, the message."""
    return b"%d %b" % (len(msg), msg)


class NotDelivered(Exception):
    """The receiver did not confirm the batch (by the rules of this module's docstring)."""


def _left(deadline: float) -> float:
    """Seconds until `deadline`; raises TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the batch took longer than DICOMISO_AUDIT_SYSLOG_TIMEOUT")
    return left


def _send_queue(sock: socket.socket) -> int | None:
    """Bytes sent but not yet acknowledged by the peer's TCP (Linux SIOCOUTQ), or None."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    except OSError:
        return None
    queued: int = struct.unpack("i", raw)[0]
    return queued


def _peer_closed(sock: ssl.SSLSocket) -> bool:
    """Whether the receiver closed or reset the connection, seen before we send more.

    A syslog receiver never sends data; what it may send is TLS records of its own (TLS 1.3
    session tickets), which a non-blocking read consumes without returning anything.
    """
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable and not sock.pending():
        return False
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


@dataclass
class Sender:
    """One TLS connection per batch to the repository, with the delivery check."""

    host: str
    port: int
    context: ssl.SSLContext
    timeout: float

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Sender:
        host, port = syslog_target(settings.audit_syslog_url or "")
        context = ssl.create_default_context(
            cafile=str(settings.audit_syslog_ca_file) if settings.audit_syslog_ca_file else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.audit_syslog_cert_file and settings.audit_syslog_key_file:
            context.load_cert_chain(settings.audit_syslog_cert_file, settings.audit_syslog_key_file)
        return cls(host, port, context, settings.audit_syslog_timeout)

    def send(self, frames: list[bytes]) -> None:
        """Send the frames and return once the receiver confirmed them.

        Raises:
            NotDelivered: Not confirmed (the reason in the message, no contents).
            OSError: The connection or TLS failed (ssl.SSLError is one).
        """
        deadline = time.monotonic() + self.timeout  # for all of it: connect to close
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            raw.settimeout(_left(deadline))
            sock = self.context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        with sock:
            for data in frames:
                if _peer_closed(sock):
                    raise NotDelivered("the receiver closed the connection mid-batch")
                sock.settimeout(_left(deadline))
                sock.sendall(data)
            self._wait_acknowledged(sock, deadline)
            self._close(sock, deadline)

    def _wait_acknowledged(self, sock: ssl.SSLSocket, deadline: float) -> None:
        while (queued := _send_queue(sock)) not in (0, None):
            if time.monotonic() > deadline:
                raise NotDelivered(f"{queued} bytes not acknowledged by the receiver")
            if _peer_closed(sock):
                raise NotDelivered("the receiver closed the connection before acknowledging")
            time.sleep(0.005)

    def _close(self, sock: ssl.SSLSocket, deadline: float) -> None:
        """Our close_notify, then the receiver's EOF: it read everything."""
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            plain = sock.unwrap()  # its close_notify back: a clean TLS close
        except ssl.SSLEOFError:
            return  # a TCP EOF without close_notify (rsyslog's way): read, then closed
        except TimeoutError:
            log.warning("audit syslog receiver kept the connection open; trusting its TCP acks")
            return
        except ssl.SSLZeroReturnError:
            return
        plain.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while plain.recv(4096):
                pass
        except TimeoutError:
            return


@dataclass
class Counts:
    """What one pass over the outbox did: messages sent, events with no message, objects
    set aside, and whether more are waiting."""

    sent: int = 0
    skipped: int = 0
    rejected: int = 0
    more: bool = False


class Shipper:
    """Ship the outbox under the deployment's lease; `start` a daemon thread, `stop` it."""

    def __init__(
        self,
        store: Store,
        settings: CommonSettings,
        render: Render,
        *,
        sender: Sender | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.render = render
        self.sender = sender or Sender.from_settings(settings)
        self.hostname = settings.audit_syslog_hostname or socket.gethostname()
        # the lease is renewed at every tick: never wait longer than a heartbeat
        self.tick = min(settings.audit_syslog_interval, settings.job_heartbeat)
        self.lease: Lease | None = None
        self.failures = 0
        self.shipped = 0  # messages confirmed by this shipper since its start
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="audit-syslog")
            self._thread.start()

    def stop(self, *, release: bool = True, wait: float = 5.0) -> None:
        """Stop the thread and release the lease, so another replica ships at once.

        A batch still in flight after `wait` seconds keeps the lease (it goes stale: no one
        else sends the same batch meanwhile); `release=False` does so always (a dead replica).
        """
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=wait)
            release = release and not thread.is_alive()
        if release and self.lease is not None:
            self.lease.release()
        self.lease = None

    def wake(self) -> None:
        """Look at the outbox now (after this process queued an event)."""
        self._wake.set()

    def holds(self) -> bool:
        return self.lease is not None and self.lease.held()

    def _lead(self) -> bool:
        """Renew our lease (a write that landed: no one else ships for `stale_after`), or try
        to take it; True if we may ship now."""
        if self.lease is not None:
            if self.lease.confirm():
                return True
            if not self.lease.lost.is_set():
                return False  # the bucket did not answer: keep trying on the same lease
            self.lease = None
        lease = Lease(
            self.store,
            LEASE_KEY,
            self.settings.job_stale_after,
            self.settings.job_give_up_after,
            about={"replica": self.settings.replica_id},
            label="audit shipper lease",
        )
        try:
            lease.acquire()
        except LeaseHeld:
            return False
        log.info("audit shipper: this replica ships the outbox")
        self.lease = lease
        return True

    def _loop(self) -> None:
        retry_at = 0.0
        while not self._stop.is_set():
            wait = self.tick
            try:
                if not self._lead():
                    if self.lease is None:
                        # Another replica ships. Its lease can be taken only once it is
                        # `job_stale_after` old, so looking every half of that instead of
                        # every tick delays a take-over by at most that much and saves this
                        # replica two requests (a refused PUT, a GET) per tick.
                        wait = max(self.tick, self.settings.job_stale_after / 2)
                elif time.monotonic() >= retry_at:
                    counts = self.ship_once()
                    if self.failures:
                        log.info("audit syslog receiver reachable again")
                    self.failures = 0
                    if counts.more:
                        wait = 0.0
            except Exception as exc:  # noqa: BLE001 - the thread must live; a bug backs off too
                # (DicomisoError, OSError, NotDelivered expected; the class only: no contents)
                self.failures += 1
                backoff = min(MAX_BACKOFF, self.tick * 2 ** min(self.failures - 1, 10))
                retry_at = time.monotonic() + backoff
                log.warning(
                    "audit messages not delivered; retrying",
                    extra={
                        "error": type(exc).__name__,
                        "failures": self.failures,
                        "retry_in": round(backoff, 1),
                    },
                )
            self._wake.wait(wait)
            self._wake.clear()

    def ship_once(self) -> Counts:
        """One batch: the oldest outbox objects, sent and confirmed, then deleted.

        Raises:
            NotDelivered, OSError: Not confirmed; nothing was deleted but what has no message.
            DicomisoError: The bucket failed.
        """
        counts = Counts()
        batch = self.settings.audit_syslog_batch
        keys = [o.key for o in islice(self.store.list(audit.OUTBOX), batch + 1)]
        counts.more = len(keys) > batch
        frames: list[bytes] = []
        sent: list[str] = []
        for key in keys[:batch]:
            try:
                data, _ = self.store.get_bytes(key)
            except ObjectMissing:
                continue  # shipped by a holder before us
            try:
                event = json.loads(data)
                if not isinstance(event, dict):
                    raise ValueError("not an event")
                body = self.render(event)
            except (ValueError, TypeError, KeyError):
                self._reject(key, data)
                counts.rejected += 1
                continue
            if body is None:
                self.store.delete(key)
                counts.skipped += 1
                continue
            frames.append(
                frame(
                    message(
                        event,
                        body,
                        facility=self.settings.audit_syslog_facility,
                        hostname=self.hostname,
                        app_name=self.settings.audit_syslog_app_name,
                    )
                )
            )
            sent.append(key)
        if frames:
            if not self.holds():
                raise NotDelivered("the shipper's lease expired before the batch")
            self.sender.send(frames)
            counts.sent = len(frames)
            self.shipped += counts.sent  # confirmed; a failed delete only sends them again
            for key in sent:
                self.store.delete(key)
        if counts.sent or counts.skipped or counts.rejected:
            log.info(
                "audit messages shipped",
                extra={
                    "sent": counts.sent,
                    "skipped": counts.skipped,
                    "rejected": counts.rejected,
                    "more": counts.more,
                },
            )
        return counts

    def _reject(self, key: str, data: bytes) -> None:
        """Set an object aside that cannot be rendered (it would block the queue forever);
        the JSON trail keeps the event."""
        self.store.put_bytes(REJECTED + key.removeprefix(audit.OUTBOX), data)
        self.store.delete(key)
        log.warning("audit outbox object set aside: no message can be rendered from it")


def from_settings(
    settings: CommonSettings, store: Store, render: Render | None = None
) -> Shipper | None:
    """The service's shipper when DICOMISO_AUDIT_SYSLOG_URL is set (else None), with its
    store queueing every event in the outbox from now on. Start it in the app's lifespan."""
    if not settings.audit_syslog_url:
        return None
    # The one place the renderer is chosen: the DICOM Audit Message of each event.
    render = render or partial(atna.render, source_id=settings.audit_source_id)
    shipper = Shipper(store, settings, render)
    audit.use_outbox(store, queued=shipper.wake)  # this process's events go out at once
    return shipper
