"""A real Orthanc 1.10.1 process acting as the PACS in tests.

Facts about Orthanc 1.10.1 this module relies on, each proven by
``tests/harness/test_harness.py``:

* Counting: with ``--verbose``, ``main.cpp`` logs ``Incoming <Find|Move|Get|
  Store|Echo> request from AET ...`` for every DIMSE request *before* the
  permission check, so refused requests count too; every association request
  logs ``Association Received from AET`` (rejected ones included). Lua cannot
  replace this: ``IncomingFindRequestFilter`` only runs for authorised C-FIND
  and there is no Lua hook for incoming C-MOVE/C-GET. Lines appear as soon as
  they are logged, but counters still wait until the log is quiet for a
  short settle time so "zero queries" is never read too early.
* Unknown calling AE: if *any* ``DicomAlwaysAllow*`` option is true (Echo and
  Store are, by default) the association is accepted and a C-FIND/C-MOVE/
  C-GET from an AE missing in ``DicomModalities`` is answered by *aborting the
  association* (A-ABORT, no status at all). With every ``DicomAlwaysAllow*``
  false the association is rejected (A-ASSOCIATE-RJ). See ``unknown_aets``.
  AE comparison is made case-sensitive (``StrictAetComparison``), and a wrong
  called AE is rejected at association time (``DicomCheckCalledAet``).
* ``DicomCheckModalityHost`` makes a registered AE calling from another host
  (string compare: "localhost" does not match 127.0.0.1) count as unknown.
* ``PUT /modalities/{name}`` takes effect at once, both for incoming
  permissions and as C-MOVE destination, but is lost on restart
  (``DicomModalitiesInDatabase`` false), so :meth:`Orthanc.start` re-applies
  registrations.
* C-MOVE of an unknown study, or to an unregistered destination AE, is
  answered with status 0xC000 and zero sub-operations.
* C-GET sends C-STORE sub-operations on the same association: the SCU must
  propose each storage SOP class with the SCP role (role selection). The
  first instance whose SOP class lacks an accepted context fails the whole
  C-GET (0xC000, one failed sub-operation, the rest never attempted).
* Final C-MOVE/C-GET responses carry Completed/Failed/Warning counts.
* There is no bind-address option for HTTP or DICOM in 1.10.1: both listen
  on all interfaces. ``RemoteAccessAllowed: false`` makes REST refuse
  non-loopback clients; the harness only ever connects to 127.0.0.1.

DICOMweb (``dicomweb=True``: Debian's ``orthanc-dicomweb`` 1.7, loaded by path
from :data:`DICOMWEB_PLUGIN`, root :attr:`Orthanc.dicomweb_url`):

* QIDO-RS ``studies?AccessionNumber=`` answers ``application/dicom+json`` with
  NumberOfStudyRelatedInstances (00201208) by default.
* WADO-RS of a study with ``transfer-syntax=*`` answers ``multipart/related;
  type="application/dicom"`` (no transfer-syntax parameter per part), each part
  the stored Part 10 file byte for byte; gzip unless the client says identity.
* With ``AuthenticationEnabled`` a wrong or missing password is 401; a Lua
  ``IncomingHttpRequestFilter`` that returns false makes it 403.
* ``SslEnabled``: Debian's 1.10.1 dies (SIGSEGV) on the first TLS handshake
  (seen here with an openssl-made certificate and key, both PEM orders), so the
  TLS tests put ``support.dicomweb.CraftedArchive(tls_pem=...)`` in front of it.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx

from support.dcmtk import dcmtk_env, terminate
from support.net import LOOPBACK, free_port

ORTHANC_BINARY = "/usr/sbin/Orthanc"
# Debian's orthanc-dicomweb package (scripts/setup installs it) puts the plugin here.
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DICOMWEB_ROOT = "/dicom-web/"
UnknownAetPolicy = Literal["abort", "reject", "allow"]
Event = Literal[
    "Find",
    "Move",
    "Get",
    "Store",
    "Echo",
    "association",
    "rejected_association",
    "refused_request",
]
_KINDS = ("Find", "Move", "Get", "Store", "Echo")
_EVENTS: dict[str, re.Pattern[str]] = {
    **{k: re.compile(rf"\] Incoming {k} request from AET ") for k in _KINDS},
    "association": re.compile(r"\] \(dicom\) Association Received from AET "),
    "rejected_association": re.compile(r"\] Rejected association"),
    "refused_request": re.compile(r"\] Rejected \w+ request from remote DICOM modality"),
}


def dicomweb_config(plugin: str = DICOMWEB_PLUGIN) -> dict[str, Any]:
    """The options that load the DICOMweb plugin by path and serve it at DICOMWEB_ROOT.

    Raises:
        RuntimeError: The plugin is not installed (scripts/setup installs orthanc-dicomweb).
    """
    if not Path(plugin).exists():
        raise RuntimeError(f"{plugin} missing: run scripts/setup (apt package orthanc-dicomweb)")
    return {
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False, "Ssl": False},
    }


class Orthanc:
    """One Orthanc process with its own config, storage and log under ``work_dir``.

    Ports are picked once and kept across :meth:`restart`, so clients that
    were configured with them keep working after a simulated crash.

    Attributes:
        work_dir: Holds ``orthanc.json``, ``storage/``, ``index/``, ``tmp/``, ``logs/``.
        aet: Orthanc's own AE title (the only called AE it accepts).
        host: Always ``127.0.0.1``.
        dicom_port: DICOM port.
        http_port: REST port.
    """

    name = "orthanc"

    def __init__(
        self,
        work_dir: Path,
        aet: str = "ABPACS",
        *,
        unknown_aets: UnknownAetPolicy = "abort",
        check_modality_host: bool = False,
        stable_age: int = 2,
        extra_config: Mapping[str, Any] | None = None,
        binary: str = ORTHANC_BINARY,
        dicomweb: bool = False,
    ) -> None:
        """Prepare (but do not start) an instance.

        Args:
            work_dir: Private directory for this instance (created if missing).
            aet: Orthanc's AE title.
            unknown_aets: Treatment of calling AEs that are not registered:
                ``"abort"`` accepts the association but aborts it on any
                C-FIND/C-MOVE/C-GET (C-ECHO/C-STORE still work); ``"reject"``
                rejects the association; ``"allow"`` lets anyone query and
                retrieve (C-MOVE destinations must still be registered).
            check_modality_host: Require registered AEs to call from their Host.
            stable_age: Seconds without new instances before a study is stable.
            extra_config: Orthanc options overriding the harness defaults.
            binary: Orthanc executable.
            dicomweb: Load the DICOMweb plugin (QIDO-RS, WADO-RS, STOW-RS) at
                :data:`DICOMWEB_ROOT`; see :func:`dicomweb_config`.
        """
        self.work_dir = work_dir
        self.aet = aet
        self.host = LOOPBACK
        self.dicom_port, self.http_port = free_port(), free_port()
        self.unknown_aets, self.check_modality_host = unknown_aets, check_modality_host
        self.stable_age, self.extra_config = stable_age, dict(extra_config or {})
        self.binary = binary
        self.dicomweb = dicomweb
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None
        self._starts = 0
        self._modalities: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._log_offset = 0
        self._counts: dict[str, int] = dict.fromkeys(_EVENTS, 0)
        self._marks: dict[str, int] = dict.fromkeys(_EVENTS, 0)

    # ----------------------------------------------------------------- process

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (only served when started with ``dicomweb=True``)."""
        return self.url + DICOMWEB_ROOT.rstrip("/")

    @property
    def pid(self) -> int | None:
        """PID of the running Orthanc, if any."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """Verbose log of the current (or last) process; one file per start."""
        return self.work_dir / "logs" / f"orthanc-{self._starts}.log"

    def config(self) -> dict[str, Any]:
        """The configuration this instance runs with (written to ``orthanc.json``)."""
        services = ("Echo", "Store", "Find", "FindWorklist", "Get", "Move")
        allowed = {"allow": services, "abort": services[:2], "reject": ()}[self.unknown_aets]
        cfg: dict[str, Any] = {
            "Name": f"harness-{self.aet}",
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "index"),
            "TemporaryDirectory": str(self.work_dir / "tmp"),
            "Plugins": [],
            "LuaScripts": [],  # never load the system plugins
            # REST: loopback clients only (no bind-address option exists), no auth, no UI.
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "HttpThreadsCount": 16,
            # DICOM: strict about who calls whom, like a production PACS.
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "StrictAetComparison": True,
            "DicomCheckModalityHost": self.check_modality_host,
            "DicomModalities": {},
            "DicomModalitiesInDatabase": False,
            "DicomThreadsCount": 8,
            "DicomScpTimeout": 30,
            "DicomScuTimeout": 10,
            "DefaultEncoding": "Utf8",
            "StableAge": self.stable_age,
            "ConcurrentJobs": 2,
            "SynchronousCMove": True,
            "SaveJobs": False,
            "SyncStorageArea": False,  # a killed process keeps its page cache anyway
            "OverwriteInstances": False,
            "DeidentifyLogs": True,
            **{f"DicomAlwaysAllow{k}": k in allowed for k in services},
        }
        if self.dicomweb:
            cfg.update(dicomweb_config())
        cfg.update(self.extra_config)
        return cfg

    def start(self, timeout: float = 30.0) -> None:
        """Start Orthanc, wait for REST ``/system`` and the DICOM listener.

        On the very first start a port collision (someone took a port between
        :func:`free_port` and Orthanc binding it) is retried with fresh
        ports; later starts keep the ports. Counters restart from zero.

        Raises:
            RuntimeError: If Orthanc exits or does not come up in time.
        """
        if self._proc is not None:
            raise RuntimeError("Orthanc already running")
        first_start = self._starts == 0
        for attempt in range(3):
            try:
                self._launch(timeout)
                break
            except RuntimeError:
                if not first_start or attempt == 2:
                    raise
                self.dicom_port, self.http_port = free_port(), free_port()
        for body in self._modalities.values():
            self._put_modality(body)

    def _launch(self, timeout: float) -> None:
        for sub in ("storage", "index", "tmp", "logs"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        config_path = self.work_dir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        self._starts += 1
        with self._lock:
            self._log_offset = 0
            self._counts = dict.fromkeys(_EVENTS, 0)
            self._marks = dict.fromkeys(_EVENTS, 0)
        cmd = [self.binary, "--verbose", f"--logfile={self.log_path}", str(config_path)]
        with (self.work_dir / "logs" / f"stdout-{self._starts}.txt").open("wb") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=dcmtk_env(), cwd=self.work_dir
            )
        self._client = httpx.Client(
            base_url=self.url,
            timeout=30.0,
            trust_env=False,
            auth=self._rest_auth(),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self._forget()
                raise RuntimeError(f"Orthanc exited during startup:\n{self.log_tail()}")
            try:
                # Orthanc starts its DICOM server before the HTTP one; checking the
                # log line avoids a bare TCP connect that would show up in the log.
                if self._client.get("/system").status_code == 200 and (
                    "DICOM server listening" in self.log_tail(1_000_000)
                ):
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"Orthanc did not start in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _rest_auth(self) -> tuple[str, str] | None:
        """The harness's own REST calls sign in as the first registered user, if any."""
        cfg = self.config()
        users = cfg.get("RegisteredUsers") if cfg.get("AuthenticationEnabled") else None
        return next(iter(users.items())) if users else None

    def _forget(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._proc = None

    def stop(self, timeout: float = 20.0) -> None:
        """Graceful shutdown: SIGTERM by PID, wait, SIGKILL if still alive."""
        if self._proc is not None:
            terminate(self._proc, timeout)
        self._forget()

    def kill(self) -> None:
        """SIGKILL by PID, to simulate a PACS crash (e.g. mid-transfer)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._forget()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop if running, then start on the same ports and storage."""
        self.stop()
        self.start(timeout)

    def log_tail(self, chars: int = 4000) -> str:
        """End of the current log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "<no log>"

    def __enter__(self) -> Orthanc:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -------------------------------------------------------------------- REST

    @property
    def http(self) -> httpx.Client:
        """REST client bound to this instance (only while running)."""
        if self._client is None:
            raise RuntimeError("Orthanc is not running")
        return self._client

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs).raise_for_status()
        return response.json() if response.content else None

    def register_modality(
        self,
        aet: str,
        host: str,
        port: int,
        *,
        allow_find: bool = True,
        allow_move: bool = True,
        allow_get: bool = True,
        allow_store: bool = True,
    ) -> None:
        """Make ``aet`` known: it may query/retrieve and be a C-MOVE destination.

        Args:
            aet: Remote AE title (case-sensitive).
            host: Its host; must be loopback.
            port: Its Storage SCP port, used when Orthanc C-MOVEs to it.
            allow_find: Accept C-FIND from it.
            allow_move: Accept C-MOVE from it.
            allow_get: Accept C-GET from it.
            allow_store: Accept C-STORE from it.

        Raises:
            ValueError: If ``host`` is not loopback.
        """
        if host not in (LOOPBACK, "localhost"):
            raise ValueError(f"harness only talks to loopback, not {host!r}")
        body = {
            "AET": aet,
            "Host": host,
            "Port": port,
            "AllowEcho": True,
            "AllowFind": allow_find,
            "AllowMove": allow_move,
            "AllowGet": allow_get,
            "AllowStore": allow_store,
            "AllowTranscoding": True,
        }
        self._modalities[aet] = body
        self._put_modality(body)

    def _put_modality(self, body: Mapping[str, Any]) -> None:
        self._json("PUT", f"/modalities/{self._name(str(body['AET']))}", json=dict(body))

    def unregister_modality(self, aet: str) -> None:
        """Forget ``aet``: it becomes an unknown AE and no C-MOVE destination."""
        self._modalities.pop(aet, None)
        response = self.http.delete(f"/modalities/{self._name(aet)}")
        if response.status_code != 404:
            response.raise_for_status()

    @staticmethod
    def _name(aet: str) -> str:
        """Symbolic modality name: AE titles may hold characters unfit for a URL."""
        return "m-" + re.sub(r"[^A-Za-z0-9_-]", lambda m: f"_{ord(m.group()):x}", aet)

    def upload(self, paths: Iterable[Path]) -> list[str]:
        """Store files through ``POST /instances``; returns Orthanc instance IDs.

        Raises:
            RuntimeError: If Orthanc does not store a file.
        """
        ids = []
        for path in paths:
            result = self._json(
                "POST",
                "/instances",
                content=path.read_bytes(),
                headers={"Content-Type": "application/dicom"},
            )
            if result.get("Status") not in ("Success", "AlreadyStored"):
                raise RuntimeError(f"Orthanc refused {path}: {result}")
            ids.append(str(result["ID"]))
        return ids

    def instance_ids_of_study(self, study_uid: str) -> list[str]:
        """Orthanc instance IDs of one study (empty if unknown)."""
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}
        return [str(i) for i in self._json("POST", "/tools/find", json=query)]

    def sop_uids_of_study(self, study_uid: str) -> set[str]:
        """SOPInstanceUIDs stored for one study."""
        query = {"Level": "Instance", "Expand": True, "Query": {"StudyInstanceUID": study_uid}}
        found = self._json("POST", "/tools/find", json=query)
        return {str(i["MainDicomTags"]["SOPInstanceUID"]) for i in found}

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored Part 10 bytes of one instance."""
        return self.http.get(f"/instances/{orthanc_id}/file").raise_for_status().content

    def study_uids(self) -> list[str]:
        """StudyInstanceUIDs of all stored studies."""
        studies = self._json("GET", "/studies", params={"expand": ""})
        return [str(s["MainDicomTags"]["StudyInstanceUID"]) for s in studies]

    def clear(self) -> None:
        """Delete every stored study (patients vanish with their last study)."""
        for study_id in self._json("GET", "/studies"):
            self.http.delete(f"/studies/{study_id}").raise_for_status()

    # ---------------------------------------------------------------- counters

    def _scan(self) -> dict[str, int]:
        """Fold newly completed log lines into the totals; returns a copy."""
        with self._lock:
            try:
                with self.log_path.open("rb") as log:
                    log.seek(self._log_offset)
                    chunk = log.read()
            except FileNotFoundError:
                chunk = b""
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a half-written line waits
            self._log_offset += len(complete)
            text = complete.decode("utf-8", errors="replace")
            for event, regex in _EVENTS.items():
                self._counts[event] += len(regex.findall(text))
            return dict(self._counts)

    def mark(self) -> None:
        """Make all counters start from zero now (they also reset on every start)."""
        counts = self._scan()
        with self._lock:
            self._marks = counts

    def count(self, event: Event, settle: float = 0.3) -> int:
        """How often ``event`` happened since start/:meth:`mark`.

        Args:
            event: ``Find``/``Move``/``Get``/``Store``/``Echo`` (DIMSE requests,
                refused ones included), ``association`` (association requests,
                rejected ones included), ``rejected_association``, or
                ``refused_request`` (DIMSE requests refused for an unknown AE).
            settle: The log must stay unchanged this long (at most 5 s in
                total) before the count is taken.
        """
        counts = self._scan()
        quiet_since = time.monotonic()
        give_up = quiet_since + 5.0
        while time.monotonic() - quiet_since < settle and time.monotonic() < give_up:
            time.sleep(0.05)
            if (now := self._scan()) != counts:
                counts, quiet_since = now, time.monotonic()
        return counts[event] - self._marks[event]

    def find_requests(self, settle: float = 0.3) -> int:
        """C-FIND requests received since start/:meth:`mark`."""
        return self.count("Find", settle)

    def move_requests(self, settle: float = 0.3) -> int:
        """C-MOVE requests received since start/:meth:`mark`."""
        return self.count("Move", settle)

    def get_requests(self, settle: float = 0.3) -> int:
        """C-GET requests received since start/:meth:`mark`."""
        return self.count("Get", settle)

    def associations(self, settle: float = 0.3) -> int:
        """Association requests received since start/:meth:`mark` (rejected too)."""
        return self.count("association", settle)

    def wait_for(self, event: Event, at_least: int, timeout: float = 5.0) -> int:
        """Wait until ``event`` was seen ``at_least`` times; returns the count.

        Raises:
            TimeoutError: If it is seen fewer times within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while (seen := self._scan()[event] - self._marks[event]) < at_least:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{event} seen {seen}/{at_least} times by {self.aet}")
            time.sleep(0.05)
        return seen
