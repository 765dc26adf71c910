"""Event-driven reactors for pynetdicom 3.0.4 associations (issue 19).

pynetdicom runs two polling loops per association: the DUL reactor (`dul.py`,
`run_reactor`) sleeps `_run_loop_delay` (1 ms) whenever it finds nothing to do and polls the
socket with `select(0)`; the association reactor (`association.py`, `_run_reactor`) sleeps a
hard-coded 1 ms before every look at its queues. During a C-MOVE receive both sleeps are on
the critical path of every instance (the C-STORE-RQ waits for the association reactor, the
C-STORE-RSP for the DUL reactor), and every idle millisecond costs a GIL round trip
(docs/benchmarks.md, "Where the GIL goes in a C-MOVE receive").

`use(ae)` makes the associations of one AE wait on events instead:

* the DUL reactor blocks in `select()` on its TCP socket plus the read end of a socketpair;
  a put on its `event_queue` or `to_provider_queue`, `kill_dul()` and `stop_dul()` write a
  byte to the other end (only while the reactor is blocked, so the busy path costs no
  syscall). The timeout is the ARTIM timer's remaining time when it runs, else
  `SAFETY_WAKE` seconds.
* the association reactor waits on a `threading.Event` set by a put on the DIMSE
  `msg_queue` or the DUL's `to_user_queue` (release and abort requests), by `kill()` and by
  the end of the DUL thread; the timeout is the network (idle) timer's remaining time.

Everything else is pynetdicom's: the same checks in the same order per loop, the same state
machine, the same abort-on-exception path, the same kill flags and timers. The loop bodies
below are copies of pynetdicom 3.0.4's; `PINNED` holds the SHA-256 of the source of each
pynetdicom function copied or relied on, and `use()` leaves the AE on the stock reactors (with
one warning) when any differs, so a pynetdicom upgrade degrades to the stock behaviour instead
of a half-patched one; tests/retriever/test_reactor.py fails on such an upgrade.

The hooks are installed process-wide once (class attributes of pynetdicom's Association and
DULServiceProvider) but act only on associations of an AE passed to `use()`; every other
association runs pynetdicom's code unchanged.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pynetdicom
from pynetdicom import association as _association
from pynetdicom import dul as _dul
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)

# The longest a reactor blocks without a timer deadline. Nothing on the hot path waits for
# it (every state change the loops act on wakes them); it bounds the cost of a wake-up that
# pynetdicom might need and this module does not know about. Tests raise it.
SAFETY_WAKE = 0.5
# pynetdicom's own delay, kept where the stock loop would spin (an expired ARTIM timer that
# the state machine does not stop, a select() on a socket that was closed under it).
_STOCK_DELAY = 0.001

_FLAG = "_dicomiso_evented"
_WAKER = "_dicomiso_waker"
_WAKE = "_dicomiso_wake"

# SHA-256 (first 16 hex digits) of inspect.getsource() of what the loops below copy or
# rely on, as in pynetdicom 3.0.4.
PINNED: dict[str, str] = {
    "DULServiceProvider.__init__": "c82dafa9438ddf70",
    "DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "DULServiceProvider.kill_dul": "5ceccf8dd01c2072",
    "DULServiceProvider.stop_dul": "28a7e0be126e7b30",
    "DULServiceProvider._is_transport_event": "8725ed03bb8fbdef",
    "DULServiceProvider._process_recv_primitive": "4c0ebbb3e646e35e",
    "Association.__init__": "eb07516b8009ad8f",
    "Association._run_reactor": "f28838c5559e462a",
    "Association.kill": "8f9713666a7f4cff",
    "DIMSEServiceProvider.__init__": "bbecd186810e7700",
    "AssociationSocket.ready": "3eb58e3d39dc076d",
    "AssociationSocket.close": "c726c8db53813d55",
}

_CLASSES: dict[str, Any] = {
    "DULServiceProvider": DULServiceProvider,
    "Association": Association,
    "DIMSEServiceProvider": DIMSEServiceProvider,
    "AssociationSocket": AssociationSocket,
}


def _source_of(qualname: str) -> str:
    cls_name, attr = qualname.split(".")
    obj = _STOCK.get(qualname) or inspect.getattr_static(_CLASSES[cls_name], attr)
    if isinstance(obj, property):
        obj = obj.fget
    return inspect.getsource(obj)


def fingerprints() -> dict[str, str]:
    """SHA-256 of the source of each pinned pynetdicom function, as installed now."""
    out = {}
    for name in PINNED:
        try:
            out[name] = hashlib.sha256(_source_of(name).encode()).hexdigest()[:16]
        except (OSError, TypeError, AttributeError):
            out[name] = "unavailable"
    return out


def mismatches() -> list[str]:
    """The pinned functions whose installed source differs from what this module copies."""
    found = fingerprints()
    return [name for name, digest in PINNED.items() if found[name] != digest]


class _WakingQueue(queue.Queue[Any]):
    """A Queue that calls `on_put` after each put (pynetdicom only ever calls put())."""

    def __init__(self, on_put: Callable[[], None]) -> None:
        super().__init__()
        self._on_put = on_put

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._on_put()


class _Waker:
    """The DUL reactor's wake-up: a socketpair, written to only while the reactor waits."""

    def __init__(self) -> None:
        self.waiting = False
        self.finished = False
        self._r: socket.socket | None = None
        self._w: socket.socket | None = None

    def open(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def notify(self) -> None:
        # A put that reads `waiting` False happened before the reactor raised it, so the
        # reactor's re-check after raising it sees the put (see DUL wait below).
        if self.waiting:
            w = self._w
            if w is not None:
                try:
                    w.send(b"\0")
                except OSError:  # buffer full (a wake is pending anyway) or closed
                    pass

    def wait(self, sock: socket.socket | None, timeout: float) -> None:
        r = self._r
        if r is None:
            return
        fds: list[socket.socket] = [r] if sock is None else [r, sock]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            # The socket was closed under us: the stock loop's next `ready` reports Evt17.
            time.sleep(_STOCK_DELAY)
            return
        if r in ready:
            try:
                while r.recv(4096):
                    pass
            except OSError:  # drained (BlockingIOError) or closed
                pass

    def close(self) -> None:
        self.waiting = False
        self.finished = True
        for s in (self._w, self._r):
            if s is not None:
                s.close()
        self._r = self._w = None


def _running(timer: Any) -> bool:
    return timer.timeout is not None and timer._start_time is not None and timer._end_time is None


def _timeout(timer: Any) -> float:
    """Seconds to wait: until `timer` expires when it runs (at least the stock delay)."""
    if _running(timer):
        return float(min(max(timer.remaining, _STOCK_DELAY), SAFETY_WAKE))
    return SAFETY_WAKE


def _dul_wait(dul: DULServiceProvider, waker: _Waker) -> None:
    """Block until the DUL reactor has something to do (what the stock loop sleeps through)."""
    waker.waiting = True
    try:
        # Re-check after raising the flag: a put before this line was not signalled.
        if dul._kill_thread or dul.event_queue.qsize() or dul.to_provider_queue.qsize():
            return
        ours = dul.socket
        sock = ours.socket if ours is not None and ours._is_connected else None
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes buffered: select() cannot see them (pynetdicom #528)
        waker.wait(sock, _timeout(dul.artim_timer))
    finally:
        waker.waiting = False


def _dul_run_reactor_evented(self: DULServiceProvider) -> None:
    """pynetdicom 3.0.4's DULServiceProvider.run_reactor, waiting instead of sleeping."""
    waker: _Waker = getattr(self, _WAKER)
    waker.open()
    try:
        # Main DUL loop
        self._idle_timer.start()
        idle = False
        while True:
            # Let the assoc reactor off the leash
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()

            if idle:
                _dul_wait(self, waker)

            if self._kill_thread:
                break

            # Check the ARTIM timer first so its event is placed on the queue
            #   ahead of any other events this loop
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")

            # Check the connection for incoming data
            try:
                # We can either encode and send a primitive **OR**
                #   receive and decode a PDU per loop of the reactor
                if self._process_recv_primitive():  # encode (sent by state machine)
                    pass
                elif self._is_transport_event():  # receive and decode PDU
                    self._idle_timer.restart()
            except Exception as exc:  # noqa: BLE001  (pynetdicom's abort-on-exception)
                _dul.LOGGER.error("Exception in DUL.run(), aborting association")
                _dul.LOGGER.exception(exc)
                # Bypass the state machine and send an A-ABORT
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                cast(AssociationSocket, self.socket).send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                # Hard shutdown of the Association and DUL reactors
                self.assoc._kill = True
                self._kill_thread = True
                return

            # Check the event queue to see if there is anything to do
            try:
                event = self.event_queue.get(block=False)
            # If the queue is empty, return to the start of the loop
            except queue.Empty:
                idle = True
                continue

            self.state_machine.do_action(event)
            idle = False
    finally:
        waker.close()
        wake = getattr(self.assoc, _WAKE, None)
        if wake is not None:
            wake.set()


def _assoc_run_reactor_evented(self: Association) -> None:
    """pynetdicom 3.0.4's Association._run_reactor, waiting instead of sleeping."""
    wake: threading.Event = getattr(self, _WAKE)
    waker: _Waker = getattr(self.dul, _WAKER)
    self._is_paused = False
    while not self._kill:
        # Waiting counts as paused, as the stock loop's sleep-then-checkpoint does: a
        # send_*() may take the reactor's place while it waits.
        self._is_paused = True
        if self.dimse.msg_queue.empty():
            wake.wait(_timeout(self.dul._idle_timer))
        wake.clear()  # before the checks below, so a put after them wakes the next wait
        if waker.finished:  # the DUL thread is ending: let `is_alive()` below see it
            self.dul.join(SAFETY_WAKE)

        # Will block until `_reactor_checkpoint` is set()
        self._reactor_checkpoint.wait()
        self._is_paused = False

        # Check with the DIMSE provider to see if a completely decoded
        #   message is available
        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, cast(int, context_id))

        # Check for release request from the peer
        if self.is_established and self.acse.is_release_requested():
            # Send A-RELEASE response
            self.acse.send_release(is_response=True)
            _association.LOGGER.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return

        # Check for abort from either locally or the peer
        if self.acse.is_aborted():
            log_msg = "Association Aborted"
            if self.acse.is_aborted("a-p-abort"):
                log_msg += " (A-P-ABORT)"
            _association.LOGGER.info(log_msg)
            # Ensure that EVT_ASCE_RECV fires for subscribers
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return

        # Check if the DULServiceProvider thread is still running
        #   DUL.is_alive() is inherited from threading.thread
        if not self.dul.is_alive():
            self.kill()
            return

        # Check if network_timeout has expired
        if self.dul.idle_timer_expired():
            _association.LOGGER.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()

            self.kill()
            return


def _assoc_kill_evented(self: Association) -> None:
    """pynetdicom 3.0.4's Association.kill, waking the reactor."""
    # Ensure the reactor is running so it can be exited
    self._reactor_checkpoint.set()
    self._kill = True
    self.is_established = False
    self._is_paused = True
    getattr(self, _WAKE).set()
    while self.dul.is_alive() and not self.dul.stop_dul():
        time.sleep(0.01)


def _dul_stop_evented(self: DULServiceProvider) -> bool:
    """pynetdicom 3.0.4's DULServiceProvider.stop_dul, waking the reactor and joining it."""
    if self.state_machine.current_state == "Sta1":
        self._kill_thread = True
        getattr(self, _WAKER).notify()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
        return True

    return False


_STOCK: dict[str, Any] = {}
_install_lock = threading.Lock()
_installed: bool | None = None  # None: not tried; False: refused (pynetdicom differs)


def _armed(obj: object) -> bool:
    return hasattr(obj, _WAKER) or hasattr(obj, _WAKE)


def _install() -> bool:
    """Install the hooks once; False (and stock reactors) if pynetdicom is not the pinned one."""
    global _installed
    with _install_lock:
        if _installed is not None:
            return _installed
        differ = mismatches()
        if differ:
            log.warning(
                "pynetdicom differs from the version the event-driven reactor was written "
                "for; keeping its polling reactors",
                extra={"pynetdicom": pynetdicom.__version__, "functions": ", ".join(differ)},
            )
            _installed = False
            return False
        for name in (
            "Association.__init__",
            "Association._run_reactor",
            "Association.kill",
            "DULServiceProvider.run_reactor",
            "DULServiceProvider.kill_dul",
            "DULServiceProvider.stop_dul",
        ):
            cls_name, attr = name.split(".")
            _STOCK[name] = inspect.getattr_static(_CLASSES[cls_name], attr)
        stock = _STOCK

        def assoc_init(self: Association, ae: Any, mode: str) -> None:
            stock["Association.__init__"](self, ae, mode)
            if getattr(ae, _FLAG, False):
                _arm(self)

        def assoc_run(self: Association) -> None:
            if _armed(self):
                _assoc_run_reactor_evented(self)
            else:
                stock["Association._run_reactor"](self)

        def assoc_kill(self: Association) -> None:
            if _armed(self):
                _assoc_kill_evented(self)
            else:
                stock["Association.kill"](self)

        def dul_run(self: DULServiceProvider) -> None:
            if _armed(self):
                _dul_run_reactor_evented(self)
            else:
                stock["DULServiceProvider.run_reactor"](self)

        def dul_kill(self: DULServiceProvider) -> None:
            stock["DULServiceProvider.kill_dul"](self)
            waker = getattr(self, _WAKER, None)
            if waker is not None:
                waker.notify()

        def dul_stop(self: DULServiceProvider) -> bool:
            if _armed(self):
                return _dul_stop_evented(self)
            return bool(stock["DULServiceProvider.stop_dul"](self))

        for name, fn in (
            ("Association.__init__", assoc_init),
            ("Association._run_reactor", assoc_run),
            ("Association.kill", assoc_kill),
            ("DULServiceProvider.run_reactor", dul_run),
            ("DULServiceProvider.kill_dul", dul_kill),
            ("DULServiceProvider.stop_dul", dul_stop),
        ):
            cls_name, attr = name.split(".")
            fn.__doc__ = stock[name].__doc__
            setattr(_CLASSES[cls_name], attr, fn)
        _installed = True
        return True


def _arm(assoc: Association) -> None:
    """Give a just-built association (no thread started yet) its wake-ups."""
    waker = _Waker()
    wake = threading.Event()
    dul = assoc.dul
    setattr(dul, _WAKER, waker)
    setattr(assoc, _WAKE, wake)
    # The queues are empty here: nothing has been put on them before the threads start.
    dul.event_queue = _WakingQueue(waker.notify)
    dul.to_provider_queue = _WakingQueue(waker.notify)
    dul.to_user_queue = _WakingQueue(wake.set)
    assoc.dimse.msg_queue = _WakingQueue(wake.set)


def use(ae: Any) -> bool:
    """Run the associations `ae` makes or accepts from now on on event-driven reactors.

    Call before the AE associates or starts a server. Returns False (the AE keeps
    pynetdicom's reactors) when the installed pynetdicom is not the one pinned here.
    """
    if not _install():
        return False
    setattr(ae, _FLAG, True)
    return True


def is_evented(assoc: Association) -> bool:
    """Whether `assoc` runs on the event-driven reactors."""
    return _armed(assoc)
