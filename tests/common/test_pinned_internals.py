"""What dicom-iso relies on inside pydicom and pynetdicom beyond their plain public API.

The versions are held in pyproject (libs/common, services/packager) with a comment naming
each use; these tests fail first if an upgrade moves one of them.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from pydicom import uid as uids
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomiso_common import dicom
from dicomiso_common.dicom import CONNECTION_HANDLERS, configure
from dicomiso_common.pacs import PacsPeer, associate, make_ae, release
from dicomiso_packager.dicomdir import leaf_record_type
from support.net import LOOPBACK, free_port

FLAGS = (
    "LOG_REQUEST_IDENTIFIERS",
    "LOG_RESPONSE_IDENTIFIERS",
    "LOG_HANDLER_LEVEL",
    "STORE_RECV_CHUNKED_DATASET",
    "STORE_SEND_CHUNKED_DATASET",
)


def test_pynetdicom_config_flags_exist_and_configure_sets_them() -> None:
    """Every pynetdicom._config flag configure() sets exists, and holds our value after it."""
    assert all(hasattr(_config, name) for name in FLAGS)
    configure()
    assert _config.LOG_REQUEST_IDENTIFIERS is False
    assert _config.LOG_RESPONSE_IDENTIFIERS is False
    assert _config.LOG_HANDLER_LEVEL == "none"
    assert _config.STORE_RECV_CHUNKED_DATASET is True
    assert _config.STORE_SEND_CHUNKED_DATASET is True


def test_configure_from_many_threads_at_once_is_harmless() -> None:
    """Concurrent first calls are serialised and a later call changes nothing."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            configure()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and dicom._configured


def test_pydicom_four_level_sop_classes_still_map_leaf_records() -> None:
    """pydicom.fileset._FOUR_LEVEL_SOP_CLASSES (private) is where dicomdir finds record types."""
    from pydicom.fileset import _FOUR_LEVEL_SOP_CLASSES

    assert _FOUR_LEVEL_SOP_CLASSES[uids.BasicTextSRStorage] == "SR DOCUMENT"
    assert _FOUR_LEVEL_SOP_CLASSES[uids.KeyObjectSelectionDocumentStorage] == "KEY OBJECT DOC"
    assert leaf_record_type(uids.GrayscaleSoftcopyPresentationStateStorage) == "PRESENTATION"
    assert leaf_record_type(uids.CTImageStorage) == "IMAGE"


@pytest.fixture
def echo_scp() -> Iterator[tuple[int, list[int]]]:
    """A Verification SCP with our connection handlers; records TCP_NODELAY per association."""
    seen: list[int] = []

    def on_echo(event: evt.Event) -> int:
        assert event.assoc.dul.socket is not None and event.assoc.dul.socket.socket is not None
        sock = event.assoc.dul.socket.socket
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return 0x0000

    port = free_port()
    ae = AE(ae_title="ECHOSCP")
    ae.add_supported_context(Verification)
    server = ae.start_server(
        (LOOPBACK, port),
        block=False,
        evt_handlers=[*CONNECTION_HANDLERS, (evt.EVT_C_ECHO, on_echo)],
    )
    assert server is not None
    yield port, seen
    server.shutdown()


def test_both_ends_of_an_association_disable_nagle(echo_scp: tuple[int, list[int]]) -> None:
    """TCP_NODELAY is set through the public connection-open event on the requestor's socket
    (pacs.associate) and on the acceptor's (a server started with CONNECTION_HANDLERS)."""
    port, seen = echo_scp
    peer = PacsPeer(aet="ECHOSCP", host=LOOPBACK, port=port, calling_aet="TESTSCU")
    ae = make_ae(peer)
    ae.add_requested_context(Verification)
    with associate(peer, ae) as assoc:
        assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
        ours = assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert int(assoc.send_c_echo().Status) == 0
    assert ours != 0
    assert seen and seen[0] != 0


def test_release_after_the_reactor_ended_aborts_instead_of_spinning(
    echo_scp: tuple[int, list[int]],
) -> None:
    """pacs.release relies on Association._reactor_checkpoint and _is_paused (private): with a
    reactor that ended while the association still counts as established, pynetdicom's own
    release() would wait for a pause that never comes; ours aborts, within a deadline."""
    port, _ = echo_scp
    peer = PacsPeer(aet="ECHOSCP", host=LOOPBACK, port=port, calling_aet="TESTSCU")
    ae = make_ae(peer)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port, ae_title="ECHOSCP")
    assert assoc.is_established
    assoc._kill = True  # the reactor leaves its loop as it does when the DUL stops under it
    assoc.join(timeout=10)
    assert not assoc.is_alive() and assoc.is_established and not assoc._is_paused

    done = threading.Event()

    def run() -> None:
        release(assoc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(timeout=30), "release() spun on a reactor that will never pause"
    assert assoc.is_aborted or not assoc.is_established


def test_release_of_a_healthy_association_releases(echo_scp: tuple[int, list[int]]) -> None:
    port, _ = echo_scp
    peer = PacsPeer(aet="ECHOSCP", host=LOOPBACK, port=port, calling_aet="TESTSCU")
    ae = make_ae(peer)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port, ae_title="ECHOSCP")
    assert assoc.is_established
    release(assoc)
    assert assoc.is_released and not assoc.is_aborted
