"""Receiver workers: the Storage SCP's associations handled in several processes.

One pynetdicom association is CPU-bound on one core (PDU decode, DIMSE, our checks, the
segment append all run under one GIL), so a pod with several CPUs receives no faster than one
with one. With `DICOMISO_SCP_WORKERS=N` the retriever starts N worker processes
(`python -m dicomiso_retriever.workers`, the same code and settings). The service process
still owns the listening socket: it accepts each connection and hands the connected socket
(SCM_RIGHTS over a Unix socket pair) to the worker with the fewest open associations, which
runs the association exactly as the service would (same AE, checks, segment writer). Several
associations at once (the PACS's parallel C-MOVEs, `DICOMISO_MOVE_LANES`, or several
studies) then use several cores.

What the service process keeps telling its workers, so that a worker's segments count as
"this replica's" (docs/architecture.md, step 3):

    expect / forget   a job of this process moves (no longer moves) the study: the worker
                      accepts its instances at once and tracks their segments
    wait              flush the study's segments and answer with their indexes once they
                      are in the bucket (`take_descriptions` merges every worker's answer)
    drop              a failed transfer: stop tracking the study

A worker that dies is started again; a study it was receiving is failed by the next `wait`
("a receiver worker stopped"), never called complete: its acknowledged but unflushed
instances are lost with it, as with a replica that dies. When no worker is ready (starting,
restarting) the service process handles the association itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import IO, Any

from pydantic import SecretStr

from dicomiso_common.errors import StoreError
from dicomiso_common.models import SegmentIndex

from .settings import RetrieverSettings

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0  # seconds a new worker may take to import and say "ready"
RESTART_DELAY = 1.0  # seconds before a dead worker is started again
SEND_TIMEOUT = 5.0  # seconds a worker may leave a command unread before it is killed
_PACKET = 64 * 1024  # largest control packet (commands are small JSON objects)


def settings_payload(settings: RetrieverSettings) -> dict[str, Any]:
    """The service's settings as JSON for its workers (secrets included: the socket pair is
    private to the two processes; a worker needs the PACS and S3 settings the service has,
    whether they came from the environment or from code)."""
    data = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return data


def _send_line(out: IO[bytes], lock: threading.Lock, message: dict[str, Any]) -> None:
    line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    with lock:
        out.write(line)
        out.flush()


# -- the service's side ----------------------------------------------------------------------


@dataclass
class _Worker:
    number: int
    proc: subprocess.Popen[bytes]
    control: socket.socket  # ours -> the worker: commands, connected sockets (SEQPACKET)
    replies: socket.socket  # the worker -> us: newline-delimited JSON (STREAM)
    ready: threading.Event = field(default_factory=threading.Event)
    open: int = 0  # associations handed over and not yet closed
    handed: int = 0  # associations handed over since it started
    studies: set[str] = field(default_factory=set)  # expected while this process lived
    waits: dict[str, Future[dict[str, SegmentIndex]]] = field(default_factory=dict)
    alive: bool = True


class WorkerPool:
    """N worker processes that run handed-over associations (service side)."""

    def __init__(self, settings: RetrieverSettings, count: int, address: tuple[str, int]) -> None:
        self._settings = settings
        self._count = count
        self._address = address
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._expected: dict[str, int] = {}
        self._tainted: set[str] = set()  # studies a dead worker was receiving
        self.started = threading.Event()  # every worker was ready once (readiness)

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        for number in range(self._count):
            self._spawn(number)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """True once every worker runs and said "ready" (tests; start-up does not wait)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                workers = list(self._workers)
            if len(workers) == self._count and all(w.alive and w.ready.is_set() for w in workers):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def stop(self, timeout: float) -> None:
        """Ask every worker to flush what it acknowledged and exit; kill one that does not."""
        with self._lock:  # from now on _spawn starts nothing
            self._stopping.set()
            workers = list(self._workers)
        for w in workers:
            self._command(w, {"op": "stop"})
        deadline = time.monotonic() + timeout
        for w in workers:
            try:
                w.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("receiver worker did not stop: killed", extra={"worker": w.number})
                w.proc.kill()
                w.proc.wait(5)
            w.control.close()

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in sorted(self._workers, key=lambda x: x.number) if w.alive]

    def handed(self) -> list[int]:
        """Associations handed to each worker since it (last) started, by worker number."""
        with self._lock:
            return [w.handed for w in sorted(self._workers, key=lambda x: x.number)]

    def _spawn(self, number: int) -> None:
        """Start worker `number`: settings first, then what the service expects now, all sent
        under the lock before any other command can reach it (the order of changes to
        `_expected` is the order of sends)."""
        first = json.dumps(
            {
                "op": "settings",
                "settings": settings_payload(self._settings),
                "address": list(self._address),
            },
            separators=(",", ":"),
        ).encode()
        if len(first) > _PACKET:
            raise ValueError(f"receiver worker settings are {len(first)} bytes, over {_PACKET}")
        with self._lock:
            if self._stopping.is_set():
                return
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            replies, their_replies = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            ours.settimeout(SEND_TIMEOUT)  # a stuck worker must not stall the accept loop
            cmd = [
                sys.executable,
                "-m",
                "dicomiso_retriever.workers",
                str(theirs.fileno()),
                str(their_replies.fileno()),
                str(number),
            ]
            try:
                proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    cmd,
                    pass_fds=(theirs.fileno(), their_replies.fileno()),
                    stdin=subprocess.DEVNULL,
                )
            except OSError:
                for sock in (ours, replies):
                    sock.close()
                raise
            finally:
                theirs.close()
                their_replies.close()
            worker = _Worker(number, proc, ours, replies, studies=set(self._expected))
            self._workers = [w for w in self._workers if w.number != number] + [worker]
            self._send(worker, first)
            for uid, times in self._expected.items():  # a restarted worker learns them too
                for _ in range(times):
                    self._command(worker, {"op": "expect", "uid": uid})
        threading.Thread(
            target=self._read, args=(worker,), name=f"receiver-worker-{number}", daemon=True
        ).start()
        log.info("receiver worker started", extra={"worker": number, "pid": proc.pid})

    def _read(self, w: _Worker) -> None:
        with w.replies.makefile("rb") as lines:
            for line in lines:
                try:
                    self._on_reply(w, json.loads(line))
                except (ValueError, KeyError, TypeError):
                    log.exception("bad message from receiver worker", extra={"worker": w.number})
        self._died(w)

    def _on_reply(self, w: _Worker, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "ready":
            w.ready.set()
            with self._lock:
                if len(self._workers) == self._count and all(
                    x.ready.is_set() for x in self._workers
                ):
                    self.started.set()
        elif op == "closed":
            with self._lock:
                w.open = max(w.open - 1, 0)
        elif op == "waited":
            with self._lock:
                future = w.waits.pop(msg["id"], None)
            if future is None:
                return
            if msg.get("error"):
                future.set_exception(StoreError(msg["error"]))
            else:
                indexes = {k: SegmentIndex.model_validate(v) for k, v in msg["indexes"].items()}
                future.set_result(indexes)

    def _died(self, w: _Worker) -> None:
        code = w.proc.wait()
        with self._lock:
            w.alive = False
            w.ready.clear()
            self._tainted |= w.studies & self._expected.keys()
            waits, w.waits = list(w.waits.values()), {}
        for future in waits:
            future.set_exception(StoreError("a receiver worker stopped while the study arrived"))
        w.replies.close()
        if self._stopping.is_set():
            return
        log.error(
            "receiver worker stopped: starting it again",
            extra={"worker": w.number, "exit_code": code},
        )
        w.control.close()
        if not self._stopping.wait(RESTART_DELAY):
            try:
                self._spawn(w.number)  # does nothing once stop() began
            except (OSError, ValueError):
                log.exception("receiver worker not started again", extra={"worker": w.number})

    def _command(self, w: _Worker, msg: dict[str, Any], fds: tuple[int, ...] = ()) -> bool:
        return self._send(w, json.dumps(msg, separators=(",", ":")).encode(), fds)

    def _send(self, w: _Worker, data: bytes, fds: tuple[int, ...] = ()) -> bool:
        """One control packet; a worker that does not take it within SEND_TIMEOUT is killed
        (its reader then sees it die and starts it again)."""
        try:
            if fds:
                socket.send_fds(w.control, [data], list(fds))
            else:
                w.control.send(data)
        except TimeoutError:
            log.error(
                "receiver worker not reading its commands: killed", extra={"worker": w.number}
            )
            with contextlib.suppress(OSError):
                w.proc.kill()
            return False
        except OSError:
            return False
        return True

    # -- associations ------------------------------------------------------------------------

    def hand_over(self, conn: socket.socket, address: Any) -> bool:
        """Give a connected socket to the least busy ready worker (False: none took it)."""
        with self._lock:
            ready = [w for w in self._workers if w.alive and w.ready.is_set()]
            if not ready:
                return False
            w = min(ready, key=lambda x: (x.open, x.handed))
            w.open += 1
            w.handed += 1
        peer = list(address) if isinstance(address, tuple) else [str(address), 0]
        if not self._command(w, {"op": "conn", "address": peer[:2]}, (conn.fileno(),)):
            with self._lock:
                w.open = max(w.open - 1, 0)
            return False
        conn.close()  # the worker has its own descriptor; never shutdown(): it is the same TCP
        return True

    # -- studies -----------------------------------------------------------------------------

    def mirror(self, op: str, uid: str) -> None:
        """A `LeaseBook` listener: the service's expect/forget, repeated to every worker."""
        if op == "expect":
            self.expect(uid)
        elif op == "forget":
            self.forget(uid)

    def expect(self, uid: str) -> None:
        with self._lock:
            self._expected[uid] = self._expected.get(uid, 0) + 1
            for w in self._workers:
                if w.alive:
                    w.studies.add(uid)
                    self._command(w, {"op": "expect", "uid": uid})

    def forget(self, uid: str) -> None:
        with self._lock:
            left = self._expected.get(uid, 0) - 1
            if left > 0:
                self._expected[uid] = left
            else:
                self._expected.pop(uid, None)
                self._tainted.discard(uid)
            for w in self._workers:
                if left <= 0:
                    w.studies.discard(uid)
                if w.alive:
                    self._command(w, {"op": "forget", "uid": uid})

    def drop(self, uid: str) -> None:
        with self._lock:
            for w in self._workers:
                if w.alive:
                    self._command(w, {"op": "drop", "uid": uid})

    def wait(self, uid: str, timeout: float) -> dict[str, SegmentIndex]:
        """Every worker's landed segments of the study, by index key.

        Raises:
            StoreError: a worker could not write them, or stopped while the study arrived.
        """
        futures: list[Future[dict[str, SegmentIndex]]] = []
        with self._lock:
            if uid in self._tainted:
                raise StoreError(f"study {uid}: a receiver worker stopped while it arrived")
            workers = [w for w in self._workers if w.alive]
            asks = []
            for w in workers:
                future: Future[dict[str, SegmentIndex]] = Future()
                ask = uuid.uuid4().hex
                w.waits[ask] = future
                futures.append(future)
                asks.append((w, ask))
            for w, ask in asks:
                if not self._command(w, {"op": "wait", "uid": uid, "id": ask, "timeout": timeout}):
                    dropped = w.waits.pop(ask, None)
                    if dropped is not None:
                        dropped.set_exception(StoreError("a receiver worker is not answering"))
        done, late = futures_wait(futures, timeout=timeout + 5)
        if late:
            raise StoreError(f"study {uid}: a receiver worker did not answer in time")
        merged: dict[str, SegmentIndex] = {}
        for future in done:
            merged.update(future.result())  # raises the worker's StoreError
        return merged


# -- the worker's side -----------------------------------------------------------------------


class _Replies:
    def __init__(self, sock: socket.socket) -> None:
        self._out = sock.makefile("wb")
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the service is gone: the control socket tells
            _send_line(self._out, self._lock, message)


def _serve(control: socket.socket, replies: _Replies, number: int) -> None:
    from dicomiso_common.dicom import configure
    from dicomiso_common.logs import configure_logging
    from dicomiso_common.store import Store

    from .leases import LeaseBook
    from .scp import StorageSCP

    first = json.loads(control.recv(_PACKET))
    settings = RetrieverSettings(**first["settings"])
    configure()
    configure_logging(settings.log_level, "retriever")
    store = Store.from_settings(settings)
    leases = LeaseBook(store, settings.job_stale_after)
    scp = StorageSCP(settings, store, leases)
    scp.on_closed = lambda: replies.send({"op": "closed"})
    scp.adopt((str(first["address"][0]), int(first["address"][1])))
    replies.send({"op": "ready"})
    log.info("receiver worker ready", extra={"worker": number})
    handlers: dict[str, Callable[[dict[str, Any], list[int]], None]] = {
        "conn": lambda m, fds: scp.take_connection(socket.socket(fileno=fds[0]), m["address"]),
        "expect": lambda m, _: leases.expect(m["uid"]),
        "forget": lambda m, _: leases.forget(m["uid"]),
        "drop": lambda m, _: scp.writer.forget(m["uid"]),
        "wait": lambda m, _: threading.Thread(
            target=_answer_wait, args=(scp, replies, m), daemon=True
        ).start(),
    }
    try:
        while True:
            data, fds, flags, _addr = socket.recv_fds(control, _PACKET, 4)
            if not data:
                break  # the service process is gone
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                log.error("receiver worker: command cut short, ignored", extra={"worker": number})
                for fd in fds:
                    os.close(fd)
                continue
            msg = json.loads(data)
            if msg["op"] == "stop":
                break
            handler = handlers.get(msg["op"])
            if handler is None:
                for fd in fds:
                    os.close(fd)
                continue
            handler(msg, fds)
    finally:
        scp.stop()  # flush what was acknowledged to the PACS
        log.info("receiver worker stopped", extra={"worker": number})


def _answer_wait(scp: Any, replies: _Replies, msg: dict[str, Any]) -> None:
    try:
        indexes = scp.writer.wait(msg["uid"], timeout=float(msg["timeout"]))
    except StoreError as exc:
        replies.send({"op": "waited", "id": msg["id"], "error": str(exc)})
        return
    payload = {k: v.model_dump(mode="json") for k, v in indexes.items()}
    replies.send({"op": "waited", "id": msg["id"], "indexes": payload})


def main(argv: list[str] | None = None) -> None:
    """`python -m dicomiso_retriever.workers CONTROL_FD REPLIES_FD NUMBER` (started by the
    service, never by hand)."""
    args = argv if argv is not None else sys.argv[1:]
    control = socket.socket(fileno=int(args[0]))
    replies = _Replies(socket.socket(fileno=int(args[1])))
    _serve(control, replies, int(args[2]))


if __name__ == "__main__":
    main()
