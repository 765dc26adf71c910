"""The event-driven pynetdicom reactors (dicomiso_retriever.reactor): same behaviour, no polling.

Every test raises reactor.SAFETY_WAKE to 10 minutes, so a reactor only wakes on an event or
a timer deadline: a wake-up this module forgot would stall the test past its deadline (and
pytest's timeout) instead of being hidden by the periodic safety wake.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pynetdicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomiso_retriever import reactor, transfer

DEADLINE = 60.0  # generous: only a stall (a missed wake-up) gets near it


@pytest.fixture(autouse=True)
def no_safety_wake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reactor, "SAFETY_WAKE", 600.0)


def _until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _instance(size: int = 65536) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.add_new(0x7FE00010, "OB", b"\0" * size)
    return ds


class Server:
    """A Storage + Verification SCP on an event-driven AE, recording what it saw."""

    def __init__(self, evented: bool = True, **timeouts: float) -> None:
        self.ae = AE(ae_title="REACTSCP")
        for name, value in timeouts.items():
            setattr(self.ae, name, value)
        self.ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
        self.ae.add_supported_context(Verification)
        if evented:
            assert reactor.use(self.ae)
        self.stored: list[str] = []
        self.assocs: list[Association] = []
        self.events: list[str] = []
        self.closed = threading.Event()
        self.aborted = threading.Event()
        server = self.ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[
                (evt.EVT_C_STORE, self._store),
                (evt.EVT_CONN_OPEN, lambda e: self.assocs.append(e.assoc)),
                (evt.EVT_CONN_CLOSE, lambda e: self.closed.set()),
                (evt.EVT_ABORTED, lambda e: self.aborted.set()),
                (evt.EVT_FSM_TRANSITION, lambda e: self.events.append(e.fsm_event)),
            ],
        )
        assert server is not None
        self.server = server
        self.port = int(server.server_address[1])

    def _store(self, event: evt.Event) -> int:
        self.stored.append(str(cast(C_STORE, event.request).AffectedSOPInstanceUID))
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.stop()


def _scu(evented: bool, **timeouts: float) -> AE:
    ae = AE(ae_title="REACTSCU")
    for name, value in timeouts.items():
        setattr(ae, name, value)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    if evented:
        assert reactor.use(ae)
    return ae


def test_pynetdicom_internals_are_the_pinned_ones() -> None:
    """Fails when pynetdicom changes a function the reactors copy or rely on: re-read them,
    port the change into reactor.py and update PINNED (or drop reactor.use)."""
    assert reactor.mismatches() == [], pynetdicom.__version__


def test_a_changed_pynetdicom_keeps_the_stock_reactors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reactor, "_installed", None)
    monkeypatch.setitem(reactor.PINNED, "Association.kill", "0" * 16)
    ae = AE()
    assert reactor.use(ae) is False
    assert not getattr(ae, reactor._FLAG, False)


@pytest.mark.parametrize("scu_evented", [True, False])
def test_c_store_storm_gets_every_instance(server: Server, scu_evented: bool) -> None:
    """Both ends waiting on events (and an evented SCP fed by a stock SCU): every C-STORE is
    answered Success, every instance arrives once, and the association releases cleanly."""
    ae = _scu(scu_evented)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="REACTSCP")
    assert assoc.is_established
    assert reactor.is_evented(assoc) is scu_evented
    sent = []
    for _ in range(300):
        ds = _instance()
        sent.append(str(ds.SOPInstanceUID))
        assert int(assoc.send_c_store(ds).Status) == 0x0000
    assoc.release()
    assert assoc.is_released
    assert server.stored == sent
    assert all(reactor.is_evented(a) for a in server.assocs)
    assert server.closed.wait(DEADLINE)
    _until(lambda: not assoc.is_alive() and not assoc.dul.is_alive(), "SCU threads ended")
    _until(lambda: not server.server.active_associations, "SCP association ended")


def test_stock_associations_stay_stock(server: Server) -> None:
    """The hooks are process-wide but act only on associations of an AE given to use()."""
    assoc = _scu(False).associate("127.0.0.1", server.port, ae_title="REACTSCP")
    assert assoc.is_established
    assert not reactor.is_evented(assoc)
    assert int(assoc.send_c_echo().Status) == 0x0000
    assoc.release()
    assert all(reactor.is_evented(a) for a in server.assocs)


def test_idle_association_is_aborted_by_the_acceptors_network_timeout() -> None:
    srv = Server(network_timeout=0.5)
    try:
        assoc = _scu(False).associate("127.0.0.1", srv.port, ae_title="REACTSCP")
        assert assoc.is_established
        assert srv.aborted.wait(DEADLINE)  # the SCP's idle timer fired and it aborted
        _until(lambda: assoc.is_aborted, "the peer saw the A-ABORT")
        _until(lambda: not srv.server.active_associations, "SCP association ended")
    finally:
        srv.stop()


def test_idle_association_is_aborted_by_the_requestors_network_timeout() -> None:
    srv = Server(evented=False)
    try:
        assoc = _scu(True, network_timeout=0.5).associate(
            "127.0.0.1", srv.port, ae_title="REACTSCP"
        )
        assert assoc.is_established and reactor.is_evented(assoc)
        _until(lambda: assoc.is_aborted, "the requestor's idle timer aborted it")
        _until(lambda: not assoc.is_alive() and not assoc.dul.is_alive(), "threads ended")
        assert srv.aborted.wait(DEADLINE)
    finally:
        srv.stop()


def test_connection_without_an_association_request_is_closed_by_artim() -> None:
    """TCP connected, nothing sent: the ARTIM timer (Evt18) closes the connection."""
    srv = Server(acse_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.settimeout(DEADLINE)
            assert sock.recv(1) == b""  # closed by the SCP, not by our timeout
        _until(lambda: "Evt18" in srv.events, "ARTIM expiry processed")  # logged after
        _until(lambda: not srv.server.active_associations, "SCP association ended")
    finally:
        srv.stop()


def test_peer_closing_the_connection_ends_the_association(server: Server) -> None:
    assoc = _scu(False).associate("127.0.0.1", server.port, ae_title="REACTSCP")
    assert assoc.is_established
    _until(lambda: server.assocs, "SCP saw the connection")
    assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
    assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # the peer vanishes mid-association
    assert server.aborted.wait(DEADLINE)
    _until(lambda: "Evt17" in server.events, "transport connection closed")
    _until(lambda: not server.server.active_associations, "SCP association ended")
    assoc.abort()


def test_peer_a_abort_ends_the_association(server: Server) -> None:
    assoc = _scu(True).associate("127.0.0.1", server.port, ae_title="REACTSCP")
    assert assoc.is_established
    assert int(assoc.send_c_store(_instance()).Status) == 0x0000
    assoc.abort()
    assert assoc.is_aborted
    assert server.aborted.wait(DEADLINE)
    _until(lambda: "Evt16" in server.events, "A-ABORT PDU received")
    _until(lambda: not server.server.active_associations, "SCP association ended")
    _until(lambda: not assoc.is_alive() and not assoc.dul.is_alive(), "SCU threads ended")


def test_exception_in_the_dul_reactor_aborts_the_association(server: Server) -> None:
    """pynetdicom's abort-on-exception path: an A-ABORT to the peer, both reactors stop."""
    assoc = _scu(True).associate("127.0.0.1", server.port, ae_title="REACTSCP")
    assert assoc.is_established
    assoc.dul.to_provider_queue.put(object())  # type: ignore[arg-type]  # "Unknown primitive"
    _until(lambda: not assoc.is_alive() and not assoc.dul.is_alive(), "SCU threads ended")
    assert assoc.is_aborted
    assert server.aborted.wait(DEADLINE)
    _until(lambda: not server.server.active_associations, "SCP association ended")


def test_the_retrievers_associations_are_evented(
    monkeypatch: pytest.MonkeyPatch, retriever: Any, orthanc: Any, study_factory: Any
) -> None:
    """The Storage SCP and the C-MOVE SCU of a real retrieval run on the evented reactors."""
    seen: list[bool] = []
    real = transfer.associate  # type: ignore[attr-defined]

    def spy(*args: Any, **kwargs: Any) -> Any:
        cm = real(*args, **kwargs)

        class Wrapped:
            def __enter__(self) -> Any:
                assoc = cm.__enter__()
                seen.append(reactor.is_evented(assoc))
                return assoc

            def __exit__(self, *exc: Any) -> Any:
                return cm.__exit__(*exc)

        return Wrapped()

    monkeypatch.setattr(transfer, "associate", spy)
    scp_assocs: list[Association] = []
    retriever.app.state.scp._server.bind(evt.EVT_CONN_OPEN, lambda e: scp_assocs.append(e.assoc))
    study = study_factory(
        ct=3,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )
    orthanc.upload(study.files)
    status = retriever.run({"accession_numbers": [study.accession], "method": "move"})
    assert status["state"] == "succeeded", status
    assert status["counts"]["received"] == 3
    assert seen == [True]
    assert scp_assocs and all(reactor.is_evented(a) for a in scp_assocs)
