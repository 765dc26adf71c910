"""The audit trail to an Audit Record Repository: the bucket outbox, and a real rsyslogd over
TLS (RFC 5425) receiving what the shipper sends: once, in order, after outages and take-overs."""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dicomiso_common import atna, audit, audit_syslog
from dicomiso_common.errors import StoreError
from dicomiso_common.serve import load_settings
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from support.atna import valid
from support.net import LOOPBACK
from support.syslogd import Pki, Rsyslog

BOM = "\ufeff"


def _render(event: Mapping[str, Any]) -> bytes | None:
    """A stand-in renderer: one small XML element per event, none for `requested`."""
    if event.get("outcome") == "requested":
        return None
    return f'<AuditMessage id="{event["id"]}"/>'.encode()


@pytest.fixture
def receiver(syslog_receiver: Rsyslog) -> Rsyslog:
    return syslog_receiver


@pytest.fixture
def pki(syslog_receiver: Rsyslog) -> Pki:
    return syslog_receiver.pki


def _settings(store: Store, url: str, ca: Path, **extra: Any) -> CommonSettings:
    return CommonSettings(
        s3_endpoint_url=store.client.meta.endpoint_url,
        s3_bucket=store.bucket,
        audit_syslog_url=url,
        audit_syslog_ca_file=ca,
        audit_syslog_interval=0.1,
        audit_syslog_timeout=3,
        job_heartbeat=0.5,
        job_stale_after=6,
        **extra,
    )


@pytest.fixture
def shippers(store: Store) -> Iterator[Callable[..., audit_syslog.Shipper]]:
    """Make started shippers on `store`; all are stopped after the test."""
    made: list[audit_syslog.Shipper] = []

    def make(
        url: str, ca: Path, render: audit_syslog.Render = _render, **extra: Any
    ) -> audit_syslog.Shipper:
        shipper = audit_syslog.from_settings(_settings(store, url, ca, **extra), store, render)
        assert shipper is not None
        shipper.start()
        made.append(shipper)
        return shipper

    try:
        yield make
    finally:
        for shipper in made:
            shipper.stop()
        audit.use_outbox(store, on=False)


def _events(store: Store, n: int, outcome: str = "succeeded") -> list[str]:
    return [
        audit.write(
            store, "packager", "package", user="clerk.ani", outcome=outcome, job_id=f"j{i}"
        )["id"]
        for i in range(n)
    ]


def _outbox(store: Store) -> list[str]:
    return [o.key for o in store.list(audit.OUTBOX)]


def _ids(messages: list[dict[str, Any]]) -> list[str]:
    ids = []
    for m in messages:
        found = re.search(r'eventId="([0-9a-f]{32})"', m["sd"])
        assert found, m["sd"]
        ids.append(found.group(1))
    return ids


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- settings and the outbox -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("udp://arr.example:514", "must be tls://host:port"),
        ("tls://arr.example", "needs a host and a port"),
        ("tls://arr.example:99999", "needs a host and a port"),
        ("tls://arr.example:6514/path", "takes only tls://host:port"),
    ],
)
def test_a_bad_repository_url_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    monkeypatch.setenv("DICOMISO_AUDIT_SYSLOG_URL", url)
    with pytest.raises(SystemExit) as stop:
        load_settings(CommonSettings)
    assert "DICOMISO_AUDIT_SYSLOG_URL" in str(stop.value) and reason in str(stop.value)
    assert url not in str(stop.value)


def test_a_client_certificate_needs_its_key_and_files_must_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    monkeypatch.setenv("DICOMISO_AUDIT_SYSLOG_URL", "tls://127.0.0.1:6514")
    monkeypatch.setenv("DICOMISO_AUDIT_SYSLOG_CERT_FILE", str(cert))
    with pytest.raises(SystemExit, match="go together"):
        load_settings(CommonSettings)
    monkeypatch.setenv("DICOMISO_AUDIT_SYSLOG_KEY_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(SystemExit, match="KEY_FILE: no file"):
        load_settings(CommonSettings)


def test_a_batch_must_end_before_the_shippers_lease_could_pass_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DICOMISO_AUDIT_SYSLOG_URL", "tls://127.0.0.1:6514")
    monkeypatch.setenv("DICOMISO_AUDIT_SYSLOG_TIMEOUT", "20")  # stale_after 30 - margin 10
    with pytest.raises(SystemExit, match="DICOMISO_AUDIT_SYSLOG_TIMEOUT must be shorter"):
        load_settings(CommonSettings)


def test_without_the_setting_there_is_no_outbox_and_no_shipper(store: Store) -> None:
    assert audit_syslog.from_settings(CommonSettings(), store) is None
    _events(store, 1)
    assert _outbox(store) == []


def test_each_event_is_queued_in_key_order_with_the_trails_body(store: Store) -> None:
    audit.use_outbox(store)
    try:
        ids = _events(store, 3)
    finally:
        audit.use_outbox(store, on=False)
    keys = _outbox(store)
    assert [k.rsplit("-", 1)[1].removesuffix(".json") for k in keys] == ids
    assert all(re.fullmatch(r"audit-outbox/\d{8}T\d{12}Z-[0-9a-f]{32}\.json", k) for k in keys)
    for key in keys:
        queued, _ = store.get_json(key)
        at = datetime.fromisoformat(queued["at"])
        assert queued == store.get_json(audit.event_key(at, queued["id"]))[0]


def test_an_outbox_write_that_fails_fails_the_audit_write(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    put = store.put_json

    def put_json(key: str, obj: Any, **kwargs: Any) -> str:
        if key.startswith(audit.OUTBOX):
            raise StoreError("the bucket refused the write")
        return put(key, obj, **kwargs)

    monkeypatch.setattr(store, "put_json", put_json)
    audit.use_outbox(store)
    try:
        with pytest.raises(StoreError):
            audit.write(store, "packager", "package", user="u", outcome="succeeded")
    finally:
        audit.use_outbox(store, on=False)


def test_the_message_is_rfc_5424_with_octet_counting() -> None:
    event = {
        "id": "e" * 32,
        "at": "2026-12-03T08:00:00.123456+00:00",
        "service": "forwarder",
        "action": 'forward "x"]',
        "outcome": "failed",
    }
    body = "<AuditMessage>é</AuditMessage>".encode()
    msg = audit_syslog.message(event, body, facility=10, hostname="node a", app_name=None)
    framed = audit_syslog.frame(msg)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(msg)
    assert msg.startswith(b"<83>1 2026-12-03T08:00:00.123456Z node_a dicomiso-forwarder - ")
    assert b'IHE+RFC-3881 [dicomiso@32473 eventId="' + b"e" * 32 + b'"' in msg
    assert b'action="forward \\"x\\"\\]" outcome="failed"]' in msg
    assert msg.endswith(b"] \xef\xbb\xbf" + body)


# -- a real receiver ---------------------------------------------------------------------------


def test_every_event_arrives_once_in_order_and_leaves_the_outbox(
    store: Store, receiver: Rsyslog, pki: Pki, shippers: Callable[..., audit_syslog.Shipper]
) -> None:
    shipper = shippers(receiver.url, pki.ca, audit_syslog_batch=4)
    ids = _events(store, 10)
    _events(store, 2, outcome="requested")  # no message: dropped from the outbox, not sent
    got = receiver.wait_for(10)
    _wait(lambda: _outbox(store) == [], "an empty outbox")
    time.sleep(0.5)  # nothing more may come
    got = receiver.messages()
    assert _ids(got) == ids
    assert shipper.shipped == 10
    first = got[0]
    assert (first["pri"], first["app"], first["msgid"]) == (
        "85",
        "dicomiso-packager",
        "IHE+RFC-3881",
    )
    assert first["msg"] == BOM + f'<AuditMessage id="{ids[0]}"/>'


def test_the_dicom_audit_message_arrives_valid(
    store: Store, receiver: Rsyslog, pki: Pki, shippers: Callable[..., audit_syslog.Shipper]
) -> None:
    """The renderer the services use (atna.render) through the real receiver: the XML it
    stored is valid against the PS3.15 A.5.1 schema."""
    shippers(receiver.url, pki.ca, render=atna.render)
    audit.write(store, "packager", "sign-in", user="clerk.ani", outcome="succeeded", client="::1")
    (got,) = receiver.wait_for(1)
    assert got["msg"].startswith(BOM)
    doc = valid(got["msg"].removeprefix(BOM).encode())
    event_id = doc.find("EventIdentification/EventID")
    assert event_id is not None and event_id.get("csd-code") == "110114"


def test_a_receiver_our_ca_did_not_sign_gets_nothing_and_the_outbox_keeps_all(
    store: Store, receiver: Rsyslog, pki: Pki, shippers: Callable[..., audit_syslog.Shipper]
) -> None:
    shipper = shippers(receiver.url, pki.other_ca)
    _events(store, 3)
    _wait(lambda: shipper.failures >= 2, "two failed attempts")
    assert receiver.messages() == []
    assert len(_outbox(store)) == 3


def test_the_receiver_down_for_a_while_then_up_gets_every_message_once(
    store: Store, receiver: Rsyslog, pki: Pki, shippers: Callable[..., audit_syslog.Shipper]
) -> None:
    shipper = shippers(receiver.url, pki.ca)
    ids = _events(store, 3)
    receiver.wait_for(3)
    _wait(lambda: _outbox(store) == [], "an empty outbox")
    receiver.stop()
    ids += _events(store, 5)
    _wait(lambda: shipper.failures >= 2, "two failed attempts while the receiver is down")
    assert len(_outbox(store)) == 5
    receiver.start()  # the same port, the same output file
    receiver.wait_for(8, timeout=90)
    _wait(lambda: _outbox(store) == [], "an empty outbox")
    time.sleep(0.5)
    assert _ids(receiver.messages()) == ids


def test_one_shipper_ships_and_another_takes_over_when_it_dies(
    store: Store, receiver: Rsyslog, pki: Pki, shippers: Callable[..., audit_syslog.Shipper]
) -> None:
    first = shippers(receiver.url, pki.ca, replica_id="a")
    _wait(first.holds, "the first shipper's lease")
    second = shippers(receiver.url, pki.ca, replica_id="b")
    ids = _events(store, 4)
    receiver.wait_for(4)
    _wait(lambda: first.shipped == 4, "the first shipper's count")
    assert (second.shipped, second.holds()) == (0, False)

    first.stop(release=False)  # dies: its lease goes stale, nobody releases it
    ids += _events(store, 4)
    _wait(second.holds, "the second shipper taking over", timeout=60)
    receiver.wait_for(8)
    _wait(lambda: _outbox(store) == [], "an empty outbox")
    time.sleep(0.5)
    assert _ids(receiver.messages()) == ids
    assert second.shipped == 4


def test_a_replica_that_does_not_ship_looks_at_the_lease_every_half_stale_time(
    store: Store, receiver: Rsyslog, pki: Pki, shippers: Callable[..., audit_syslog.Shipper]
) -> None:
    """Idle and not the holder: a lease attempt every job_stale_after / 2 (3 s here), not
    every tick (0.1 s here); its own events still wake it at once."""
    first = shippers(receiver.url, pki.ca, replica_id="a")
    _wait(first.holds, "the first shipper's lease")
    second = shippers(receiver.url, pki.ca, replica_id="b")
    attempts: list[float] = []
    lead = second._lead

    def counted() -> bool:
        attempts.append(time.monotonic())
        return lead()

    second._lead = counted  # type: ignore[method-assign]
    second.wake()  # the loop takes the counted method from its next turn
    time.sleep(2.0)  # 20 ticks
    assert 1 <= len(attempts) <= 2, attempts
    before = len(attempts)
    second.wake()  # as audit.write does after queueing an event of this process
    _wait(lambda: len(attempts) > before, "the woken shipper's look at the lease", timeout=2)
    assert not second.holds() and first.holds()


def test_an_outbox_object_no_renderer_can_read_is_set_aside(
    store: Store, receiver: Rsyslog, pki: Pki, shippers: Callable[..., audit_syslog.Shipper]
) -> None:
    store.put_bytes(f"{audit.OUTBOX}00000000T000000000000Z-broken.json", b"not json")
    shippers(receiver.url, pki.ca)
    ids = _events(store, 2)
    receiver.wait_for(2)
    _wait(lambda: _outbox(store) == [], "an empty outbox")
    assert _ids(receiver.messages()) == ids
    assert [o.key for o in store.list(audit_syslog.REJECTED)] == [
        f"{audit_syslog.REJECTED}00000000T000000000000Z-broken.json"
    ]


class _Dropper:
    """A TLS receiver that reads a few bytes of each connection and closes with the rest
    unread (the kernel answers with a reset): acknowledged by TCP, never read."""

    def __init__(self, pki: Pki) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.cert, pki.key)
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(10)
                    time.sleep(0.2)  # let the rest arrive, unread
                    self.connections += 1
            except OSError:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


def test_a_batch_acknowledged_but_not_read_stays_in_the_outbox(
    store: Store, pki: Pki, shippers: Callable[..., audit_syslog.Shipper]
) -> None:
    """TCP acknowledgements alone confirm nothing: the receiver must close by itself after
    our close_notify; one that drops the connection with data unread gets it all again."""
    dropper = _Dropper(pki)
    try:
        shipper = shippers(f"tls://{LOOPBACK}:{dropper.port}", pki.ca)
        _events(store, 20)
        _wait(lambda: dropper.connections >= 2 and shipper.failures >= 2, "two dropped batches")
        assert shipper.shipped == 0
        assert len(_outbox(store)) == 20
    finally:
        dropper.close()
