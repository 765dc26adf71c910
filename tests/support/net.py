"""Loopback networking helpers for the test harness.

Every server a test starts binds to 127.0.0.1 only, so the helpers here never
accept another host: the harness must not reach anything beyond loopback.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import TYPE_CHECKING

from pynetdicom import AE

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.transport import (
        AddressInformation,
        AssociationSocket,
        ThreadedAssociationServer,
    )

LOOPBACK = "127.0.0.1"

# Identifiers (patient names, IDs) from DIMSE traffic are never logged, even synthetic ones:
# the session fixture `_dicom_configured` (tests/conftest.py) calls dicom.configure().


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks the port (bind to port 0), which avoids collisions
    between parallel test sessions better than any fixed range would. There is
    an unavoidable race between closing this socket and the server binding it,
    but ephemeral ports are handed out round-robin so reuse is unlikely.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Servers started as subprocesses report readiness only by listening, so
    polling with short connects is the simplest reliable readiness probe.

    Args:
        host: Address to probe; must be the loopback address.
        port: TCP port to probe.
        timeout: Seconds to wait before giving up.

    Raises:
        ValueError: If ``host`` is not loopback.
        TimeoutError: If nothing listens within ``timeout`` seconds.
    """
    if host not in (LOOPBACK, "localhost"):
        raise ValueError(f"harness only talks to loopback, not {host!r}")
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return
        except OSError as exc:
            last_error = exc
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s: {last_error}")


class NoDelayAE(AE):
    """pynetdicom AE whose requestor sockets disable Nagle's algorithm.

    pynetdicom sends the command set and the data set of a DIMSE message as
    separate PDUs; with Nagle enabled the second waits for the peer's delayed
    ACK (~40 ms per message), which would distort every timing in the tests.
    """

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[ssl.SSLContext, str] | None,
    ) -> AssociationSocket:
        sock: AssociationSocket = super()._create_socket(assoc, address, tls_args)
        if sock.socket is not None:
            sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def nodelay_server(server: ThreadedAssociationServer) -> ThreadedAssociationServer:
    """Disable Nagle on a running pynetdicom server.

    Linux copies TCP_NODELAY from the listening socket to every accepted one,
    so setting it on the listener covers all future associations.

    Returns:
        ``server``, for chaining.
    """
    if server.socket is not None:
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server
