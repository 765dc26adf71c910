"""Helpers for running DCMTK command-line tools in tests.

DCMTK is the reference implementation the harness compares our services
against, so its tools must run at full speed: Debian's DCMTK 3.6.7 only
disables Nagle's algorithm when ``TCP_NODELAY=1`` is in the environment;
without it every small PDU waits for a delayed ACK (~40 ms each).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pydicom import dcmread

from support.net import LOOPBACK, free_port, wait_for_port


def dcmtk_env() -> dict[str, str]:
    """Return a copy of ``os.environ`` with ``TCP_NODELAY=1`` set.

    Returns:
        Environment for any process that links DCMTK (dcmtk tools, Orthanc).
    """
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def dcmtk_bin(name: str) -> str:
    """Absolute path of the DCMTK tool ``name``.

    pynetdicom installs console scripts with the same names as the DCMTK
    tools (storescp, findscu, movescu, getscu, echoscu, storescu) into the
    venv, and ``uv run`` puts the venv first on PATH. So a plain
    ``shutil.which`` would silently run pynetdicom's apps; PATH entries inside
    the venv are skipped here.

    Raises:
        FileNotFoundError: If no DCMTK binary of that name is on PATH.
    """
    venv = Path(sys.prefix).resolve()
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        directory = Path(entry or ".").resolve()
        if directory.is_relative_to(venv):
            continue
        found = shutil.which(name, path=str(directory))
        if found is not None:
            return found
    raise FileNotFoundError(f"DCMTK tool {name!r} not found outside the venv")


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM ``proc`` by PID, then SIGKILL if it outlives ``timeout``."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class StoreSCP:
    """DCMTK ``storescp`` on a free loopback port, writing into a directory.

    Used as a reference C-STORE receiver (e.g. the C-MOVE destination of
    Orthanc). Files are written bit-preserving, so their bytes are exactly what
    the sender put on the wire. storescp answers each C-STORE only after the
    file is written, so once a synchronous C-MOVE has completed every received
    file is on disk.

    Attributes:
        out_dir: Directory receiving one ``<MODALITY>.<SOPInstanceUID>.dcm`` per instance.
        aet: AE title storescp answers to.
        port: TCP port on 127.0.0.1.
        host: Always ``127.0.0.1``.
    """

    def __init__(
        self,
        out_dir: Path,
        aet: str = "STORESCP",
        port: int | None = None,
        *,
        fork: bool = False,
        log_path: Path | None = None,
        accept: tuple[str, ...] = ("--accept-all",),
    ) -> None:
        """Configure (but do not start) the receiver.

        Args:
            out_dir: Where received files go (created if missing).
            aet: Called AE title to accept.
            port: Listening port; a free one by default.
            fork: One process per association, for concurrent senders.
            log_path: storescp output; ``<out_dir>/../storescp-<aet>.log`` by default.
            accept: Transfer syntax / SOP class options, e.g. ``("+xe",)`` for uncompressed
                only (Explicit VR Little Endian preferred), ``("--accept-all",
                "--promiscuous")`` for unknown SOP classes too.
        """
        self.out_dir = out_dir
        self.aet = aet
        self.port = port if port is not None else free_port()
        self.host = LOOPBACK
        self.fork = fork
        self.accept = accept
        self.log_path = log_path or out_dir.parent / f"storescp-{aet}-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running storescp, if any."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Launch storescp and wait until it listens.

        Raises:
            RuntimeError: If storescp exits during startup.
        """
        binary = dcmtk_bin("storescp")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            binary,
            "--aetitle",
            self.aet,
            "--output-directory",
            str(self.out_dir),
            *self.accept,
            "--bit-preserving",
            "--disable-host-lookup",
            "--filename-extension",
            ".dcm",
            "--max-pdu",
            "131072",
            "--fork" if self.fork else "--single-process",
            str(self.port),
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=dcmtk_env(), cwd=self.out_dir
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"storescp exited early: {self.log_path.read_text()[-2000:]}")
            try:
                wait_for_port(self.host, self.port, timeout=0.2)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop storescp by PID (SIGTERM, then SIGKILL)."""
        if self._proc is not None:
            terminate(self._proc, timeout)
            self._proc = None

    def files(self) -> list[Path]:
        """Received files, sorted by name."""
        return sorted(self.out_dir.glob("*.dcm"))

    def sop_uids(self) -> set[str]:
        """SOPInstanceUIDs of all received files."""
        return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in self.files()}

    def wait_for_files(self, count: int, timeout: float = 10.0) -> list[Path]:
        """Wait until at least ``count`` files arrived.

        Raises:
            TimeoutError: If fewer than ``count`` files arrive in time.
        """
        deadline = time.monotonic() + timeout
        while len(files := self.files()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(files)}/{count} files received by {self.aet}")
            time.sleep(0.05)
        return files

    def __enter__(self) -> StoreSCP:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
