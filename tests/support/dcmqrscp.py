"""DCMTK's ``dcmqrscp`` as a second, independent PACS in tests.

Orthanc answers every optional key; many archives do not. dcmqrscp 3.6.7 is the reference
Query/Retrieve SCP that behaves like the sparse ones, and tests rely on these facts about it
(each seen in its verbose log and proven by the tests that use this module):

* A STUDY-level C-FIND returns no NumberOfStudyRelatedInstances, SOPClassesInStudy or
  ModalitiesInStudy; an IMAGE-level C-FIND returns SOPInstanceUID but no SOPClassUID, and
  only when the SeriesInstanceUID is given (hierarchical queries, PS3.4 C.4.1.2.1).
* It stores what it receives under ``<storage>/<MODALITY>_<timestamp>.dcm``; two associations
  storing in the same instant can collide, so a forward to it uses ``max_associations: 1``.
* ``--single-process`` crashes (SIGSEGV) after its first association, so it runs forked: the
  process is started in a session of its own and the whole group is signalled by its PID.
* It reads its configuration only at start, so :meth:`register_modality` (the HostTable
  entry a C-MOVE destination needs) rewrites ``dcmqrscp.cfg`` and restarts it on the same port.
* More associations than ``MaxAssociations`` are rejected as transient ("local limit
  exceeded", PS3.8 9.3.4); ``MaxPDUSize`` is what it accepts (4096..131072).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydicom import dcmread

from support.dcmtk import dcmtk_bin, dcmtk_env
from support.net import LOOPBACK, free_port, wait_for_port

_EVENTS = {
    "Find": re.compile(r"^I: Received Find SCP", re.M),
    "Move": re.compile(r"^I: Received Move SCP", re.M),
    "Get": re.compile(r"^I: Received Get SCP", re.M),
    "association": re.compile(r"^I: Association Received", re.M),
}


class Dcmqrscp:
    """One dcmqrscp with its own config, storage and log under ``work_dir``.

    It offers the part of :class:`support.orthanc.Orthanc`'s interface the retrieval, lookup
    and forward tests use (``aet``, ``dicom_port``, ``register_modality``, ``upload``,
    ``instance_ids_of_study``, ``instance_file``, ``sop_uids_of_study``, ``mark`` and the
    request counters), so a test parametrised over both PACSs runs unchanged.
    """

    name = "dcmqrscp"

    def __init__(
        self,
        work_dir: Path,
        aet: str = "QRPACS",
        *,
        max_pdu: int = 16384,
        max_associations: int = 16,
        options: Sequence[str] = (),
    ) -> None:
        """Prepare (but do not start) an instance.

        Args:
            work_dir: Private directory (config, ``storage/``, log).
            aet: The archive's AE title; any calling AE may query it (``Peers: ANY``).
            max_pdu: ``MaxPDUSize``: the largest PDU it receives.
            max_associations: ``MaxAssociations``: concurrent associations it accepts.
            options: Extra command-line options, e.g. ``("-xb",)`` to propose big endian
                first on its C-MOVE sub-associations, ``("-QS",)`` for no Study Root.
        """
        self.work_dir = work_dir
        self.aet = aet
        self.host = LOOPBACK
        self.dicom_port = free_port()
        self.max_pdu, self.max_associations = max_pdu, max_associations
        self.options = tuple(options)
        self.storage = work_dir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self._hosts: dict[str, tuple[str, int]] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self._mark = dict.fromkeys(_EVENTS, 0)

    @property
    def pid(self) -> int | None:
        """PID of the listening (parent) process, if any."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"dcmqrscp-{self._starts}.log"

    def config(self) -> str:
        """The ``dcmqrscp.cfg`` this instance runs with."""
        hosts = [
            f"h{i} = ({aet}, {host}, {port})"
            for i, (aet, (host, port)) in enumerate(sorted(self._hosts.items()))
        ]
        return "\n".join(
            [
                f"NetworkTCPPort = {self.dicom_port}",
                f"MaxPDUSize = {self.max_pdu}",
                f"MaxAssociations = {self.max_associations}",
                "HostTable BEGIN",
                *hosts,
                "HostTable END",
                "VendorTable BEGIN",
                "VendorTable END",
                "AETable BEGIN",
                f"{self.aet} {self.storage} RW (10000, 4096mb) ANY",
                "AETable END",
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start dcmqrscp and wait until it listens.

        Raises:
            RuntimeError: If it exits during startup.
        """
        cfg = self.work_dir / "dcmqrscp.cfg"
        cfg.write_text(self.config())
        self._starts += 1
        self._mark = dict.fromkeys(_EVENTS, 0)
        cmd = [dcmtk_bin("dcmqrscp"), "-v", "-c", str(cfg), *self.options]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dcmtk_env(),
                cwd=self.work_dir,
                start_new_session=True,  # its forked children share our PID as group id
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dcmqrscp exited early: {self.log_tail()}")
            try:
                wait_for_port(self.host, self.dicom_port, timeout=0.2)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise

    def stop(self) -> None:
        """SIGKILL the process group we started (the archive is files on disk: nothing lost)."""
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._proc.wait(timeout=10)
        self._proc = None

    kill = stop

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def __enter__(self) -> Dcmqrscp:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- archive

    def register_modality(self, aet: str, host: str, port: int, **_: object) -> None:
        """Make ``aet`` a C-MOVE destination (HostTable); restarts dcmqrscp if it changed."""
        if host not in (LOOPBACK, "localhost"):
            raise ValueError(f"harness only talks to loopback, not {host!r}")
        if self._hosts.get(aet) == (LOOPBACK, port):
            return
        self._hosts[aet] = (LOOPBACK, port)
        if self._proc is not None:
            self.restart()

    def upload(self, paths: Iterable[Path], *options: str) -> list[str]:
        """Store files with dcmtk ``storescu`` (``options`` e.g. ``("-xs",)`` keep JPEG).

        Returns:
            The SOPInstanceUIDs sent.
        """
        files = [str(p) for p in paths]
        cmd = [dcmtk_bin("storescu"), "-aec", self.aet, *options]
        cmd += [self.host, str(self.dicom_port), *files]
        done = subprocess.run(cmd, env=dcmtk_env(), capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"storescu failed: {done.stderr.decode(errors='replace')[-2000:]}")
        return [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]

    def _files(self) -> dict[str, tuple[str, str]]:
        """Stored file path -> (StudyInstanceUID, SOPInstanceUID)."""
        found = {}
        for path in self.storage.glob("*.dcm"):
            ds = dcmread(path, stop_before_pixels=True)
            found[str(path)] = (str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
        return found

    def instance_ids_of_study(self, study_uid: str) -> list[str]:
        """Paths of the study's stored files (they play Orthanc's instance ids)."""
        return sorted(p for p, (study, _) in self._files().items() if study == study_uid)

    def instance_file(self, instance_id: str) -> bytes:
        return Path(instance_id).read_bytes()

    def sop_uids_of_study(self, study_uid: str) -> set[str]:
        return {sop for study, sop in self._files().values() if study == study_uid}

    def study_uids(self) -> list[str]:
        return sorted({study for study, _ in self._files().values()})

    # ---------------------------------------------------------------- counters

    def _count_all(self) -> dict[str, int]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return {k: len(p.findall(text)) for k, p in _EVENTS.items()}

    def mark(self) -> None:
        """Start counting requests from now."""
        time.sleep(0.2)  # forked children log a moment after they answer
        self._mark = self._count_all()

    def count(self, event: str, settle: float = 0.3) -> int:
        time.sleep(settle)
        return self._count_all()[event] - self._mark[event]

    def find_requests(self, settle: float = 0.3) -> int:
        return self.count("Find", settle)

    def move_requests(self, settle: float = 0.3) -> int:
        return self.count("Move", settle)

    def get_requests(self, settle: float = 0.3) -> int:
        return self.count("Get", settle)

    def associations(self, settle: float = 0.3) -> int:
        return self.count("association", settle)
