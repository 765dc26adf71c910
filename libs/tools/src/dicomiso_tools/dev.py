"""`dicom-iso dev`: the whole system on one machine, on embedded defaults, all on loopback.

Starts, as child processes it owns: the moto server as S3 (bucket + lifecycle rule), a demo
PACS (Orthanc, seeded with synthetic studies, knowing our AE), and the four services; loads
the example HIS schema and synthetic rows into the local MariaDB when one answers (else the
lookup falls back to the PACS, and says so). Every child's output goes to one stream, one line
each, prefixed with its name. Ctrl-C (or SIGTERM) stops every child it started, by PID, and
nothing else. Services are started as programs, never imported.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console
from rich.markup import escape

from .demo import DEMO_STUDIES, demo_files

console = Console(highlight=False)
BUCKET = "dicom-iso"
DEMO_HIS_USER, DEMO_HIS_PASSWORD = "dicomiso_demo", "dicomiso-demo"
_COLOURS = {
    "s3": "bright_black",
    "pacs": "magenta",
    "lookup": "cyan",
    "retriever": "green",
    "packager": "yellow",
    "forwarder": "blue",
    "dev": "bold",
}


@dataclass(frozen=True)
class Ports:
    s3: int
    lookup: int
    retriever: int
    packager: int
    forwarder: int
    scp: int
    pacs: int
    pacs_http: int

    @classmethod
    def standard(cls, base: int = 0) -> Ports:
        """The standard local ports (docs/architecture.md), shifted by `base` if taken."""
        return cls(
            9000 + base,
            8001 + base,
            8002 + base,
            8003 + base,
            8004 + base,
            10104 + base,
            11112 + base,
            8042 + base,
        )

    def taken(self) -> list[int]:
        busy = []
        for port in vars(self).values():
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    busy.append(port)
        return busy


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    pump: threading.Thread | None = None


class StartupFailed(Exception):
    """A part of the stack did not come up; the message says which and why."""


@dataclass
class Stack:
    repo: Path
    state: Path
    ports: Ports
    use_his: bool = True
    children: list[Child] = field(default_factory=list)
    his_note: str = ""
    stopping: threading.Event = field(default_factory=threading.Event)

    # -- children --------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=self.state,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C handling stops it
            preexec_fn=_die_with_parent,
        )
        child = Child(name, proc)
        assert proc.stdout is not None  # noqa: S101 - stdout=PIPE above
        child.pump = threading.Thread(target=_pump, args=(name, proc.stdout), daemon=True)
        child.pump.start()
        self.children.append(child)
        return child

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every child (services first, the PACS and S3 last), SIGKILL stragglers."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.terminate()
            try:
                child.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout=grace)
        for child in self.children:
            if child.pump is not None:
                child.pump.join(timeout=2)

    def exited(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    # -- parts -----------------------------------------------------------------------------

    def start_s3(self) -> str:
        moto = Path(sys.executable).with_name("moto_server")
        if not moto.exists():
            raise StartupFailed("moto_server not found: run `uv sync --frozen` (dev group)")
        self.spawn("s3", [str(moto), "-H", "127.0.0.1", "-p", str(self.ports.s3)], self.env())
        url = f"http://127.0.0.1:{self.ports.s3}"
        _wait_http("s3", f"{url}/", self)
        from dicomiso_common.settings import CommonSettings
        from dicomiso_common.store import Store

        with _environ(self.env()):
            store = Store.from_settings(CommonSettings(s3_endpoint_url=url, s3_bucket=BUCKET))
            store.ensure_bucket()
            store.ensure_expiry("packages/", 7)
        return url

    def start_pacs(self) -> str:
        root = self.state / "orthanc"
        for sub in ("storage", "index", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "dicom-iso demo PACS",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "TemporaryDirectory": str(root / "tmp"),
            "Plugins": [],
            "LuaScripts": [],
            "HttpPort": self.ports.pacs_http,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": "ABPACS",
            "DicomPort": self.ports.pacs,
            "DicomCheckCalledAet": True,
            # Orthanc 1.10 listens on every interface (it cannot bind one address): its DICOM
            # port answers only CDRECORD calling from 127.0.0.1, its HTTP port only loopback.
            "DicomCheckModalityHost": True,
            **{f"DicomAlwaysAllow{s}": False for s in ("Echo", "Find", "Get", "Move", "Store")},
            "DicomModalities": {"cdrecord": ["CDRECORD", "127.0.0.1", self.ports.scp]},
            "DefaultEncoding": "Utf8",
            "DeidentifyLogs": True,
            "SaveJobs": False,
            "SynchronousCMove": True,
        }
        (root / "orthanc.json").write_text(json.dumps(config, indent=2))
        binary = next(
            (b for b in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(b).exists()), "Orthanc"
        )
        self.spawn("pacs", [binary, str(root / "orthanc.json")], {**self.env(), "TCP_NODELAY": "1"})
        url = f"http://127.0.0.1:{self.ports.pacs_http}"
        _wait_http("pacs", f"{url}/system", self)
        _wait_port("pacs", self.ports.pacs, self)
        return url

    def seed_pacs(self, url: str) -> int:
        count = 0
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
            for _study, data in demo_files():
                reply = http.post(
                    "/instances", content=data, headers={"Content-Type": "application/dicom"}
                )
                reply.raise_for_status()
                count += 1
        return count

    def seed_his(self) -> str | None:
        """Load schema.sql + seed.sql into the local MariaDB; the HIS URL, or None."""
        if not self.use_his:
            self.his_note = "HIS: off (--no-his): names come from the PACS"
            return None
        try:
            import pymysql
        except ImportError:
            self.his_note = "HIS: pymysql missing: names come from the PACS"
            return None
        try:
            conn = pymysql.connect(
                host="127.0.0.1",
                port=3306,
                user="root",
                password="",
                autocommit=True,
                connect_timeout=3,
                charset="utf8mb4",
            )
        except pymysql.MySQLError as exc:
            self.his_note = (
                f"HIS: no MariaDB at 127.0.0.1:3306 ({exc.args[0]}): names come from the PACS"
            )
            return None
        sql = "\n".join(
            (self.repo / "services/lookup" / f).read_text(encoding="utf-8")
            for f in ("schema.sql", "seed.sql")
        )
        sql = sql.replace("INSERT INTO", "INSERT IGNORE INTO")  # idempotent on re-runs
        with conn, conn.cursor() as cur:
            for statement in _statements(sql):
                cur.execute(statement)
            cur.execute(
                "CREATE USER IF NOT EXISTS %s@'127.0.0.1' IDENTIFIED BY %s",
                (DEMO_HIS_USER, DEMO_HIS_PASSWORD),
            )
            for db in ("pacsdb_his", "rsabt201107"):
                cur.execute(f"GRANT SELECT ON `{db}`.* TO %s@'127.0.0.1'", (DEMO_HIS_USER,))
        self.his_note = "HIS: MariaDB 127.0.0.1:3306, example schema with synthetic rows"
        return f"mysql://{DEMO_HIS_USER}:{DEMO_HIS_PASSWORD}@127.0.0.1:3306"

    def start_services(self, his_url: str | None) -> None:
        p = self.ports
        common = {
            **self.env(),
            "DICOMISO_S3_ENDPOINT_URL": f"http://127.0.0.1:{p.s3}",
            "DICOMISO_S3_BUCKET": BUCKET,
            "DICOMISO_HTTP_HOST": "127.0.0.1",
            "DICOMISO_LOOKUP_URL": f"http://127.0.0.1:{p.lookup}",
            "DICOMISO_RETRIEVER_URL": f"http://127.0.0.1:{p.retriever}",
            "DICOMISO_FORWARDER_URL": f"http://127.0.0.1:{p.forwarder}",
            "DICOMISO_PACS_AET": "ABPACS",
            "DICOMISO_PACS_HOST": "127.0.0.1",
            "DICOMISO_PACS_PORT": str(p.pacs),
            "DICOMISO_SCP_PORT": str(p.scp),
        }
        work = self.state / "work"
        work.mkdir(exist_ok=True)
        extra: dict[str, dict[str, str]] = {
            "lookup": {"DICOMISO_HIS_URL": his_url} if his_url else {},
            "retriever": {},
            "packager": {"DICOMISO_WORK_DIR": str(work)},
            "forwarder": {
                "DICOMISO_PEERS": json.dumps(
                    {"demo-pacs": {"aet": "ABPACS", "host": "127.0.0.1", "port": p.pacs}}
                )
            },
        }
        for name, port in (
            ("lookup", p.lookup),
            ("retriever", p.retriever),
            ("forwarder", p.forwarder),
            ("packager", p.packager),
        ):
            script = Path(sys.executable).with_name(f"dicomiso-{name}")
            if not script.exists():
                raise StartupFailed(f"{script.name} not found: run `uv sync --frozen`")
            self.spawn(
                name, [str(script)], {**common, **extra[name], "DICOMISO_HTTP_PORT": str(port)}
            )
        for name, port in (
            ("lookup", p.lookup),
            ("retriever", p.retriever),
            ("forwarder", p.forwarder),
            ("packager", p.packager),
        ):
            _wait_http(name, f"http://127.0.0.1:{port}/readyz", self, timeout=60)

    def env(self) -> dict[str, str]:
        """The children's environment: ours without DICOMISO_*/AWS_*, plus demo credentials."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("DICOMISO_", "AWS_"))}
        return {
            **keep,
            "AWS_ACCESS_KEY_ID": "dev",
            "AWS_SECRET_ACCESS_KEY": "dev",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "PYTHONUNBUFFERED": "1",
        }


# -- helpers -------------------------------------------------------------------------------

_print_lock = threading.Lock()


def say(name: str, text: str) -> None:
    """One line of the stream; a closed terminal or pipe (`| tee` ended) is not an error."""
    with _print_lock:
        colour = _COLOURS.get(name, "white")
        try:
            console.print(f"[{colour}]{name:>9}[/] | {escape(text)}", soft_wrap=True)
        except (BrokenPipeError, OSError, ValueError):
            pass


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when `dicom-iso dev` dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG), so no part of the stack outlives it."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


_NOT_SHOWN = {"ts", "level", "event", "logger", "color_message", "service"}


def readable(line: str) -> str:
    """A service's JSON log line as `LEVEL event key=value ...`; other lines unchanged."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "event" not in record:
        return line
    extras = " ".join(f"{k}={v}" for k, v in record.items() if k not in _NOT_SHOWN)
    return f"{str(record.get('level', '')).upper():7} {record['event']} {extras}".rstrip()


# moto's server logs every request (werkzeug access log); only its failures are worth a line.
_S3_ACCESS = re.compile(r'" [1-4]\d\d -?$')


def _pump(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if name == "s3" and _S3_ACCESS.search(line):
            continue
        say(name, readable(line))


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class _environ:
    """Temporarily use the children's AWS settings for our own bucket set-up."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {k: v for k, v in env.items() if k.startswith("AWS_")}
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def __exit__(self, *_exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait(name: str, ready: Callable[[], bool], stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if stack.stopping.is_set():
            raise StartupFailed("interrupted")
        dead = stack.exited()
        if dead is not None:
            raise StartupFailed(f"{dead.name} exited during start-up (code {dead.proc.returncode})")
        if time.monotonic() > deadline:
            raise StartupFailed(f"{name} did not become ready in {timeout:.0f} s")
        time.sleep(0.2)


def _wait_http(name: str, url: str, stack: Stack, timeout: float = 30.0) -> None:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2, trust_env=False).status_code < 500
        except httpx.HTTPError:
            return False

    _wait(name, ready, stack, timeout)


def _wait_port(name: str, port: int, stack: Stack, timeout: float = 30.0) -> None:
    def ready() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    _wait(name, ready, stack, timeout)


def _shown(path: Path) -> Path:
    """The path as typed from the current directory when it is below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def find_repo(start: Path) -> Path:
    """The checkout: the first parent holding services/lookup/schema.sql."""
    for path in (start, *start.parents):
        if (path / "services/lookup/schema.sql").exists():
            return path
    raise StartupFailed("run `dicom-iso dev` inside the dicom-iso checkout")


def client_env(ports: Ports) -> dict[str, str]:
    """The variables that point the `dicom-iso` CLI at this stack's services."""
    return {
        "DICOMISO_LOOKUP_URL": f"http://127.0.0.1:{ports.lookup}",
        "DICOMISO_RETRIEVER_URL": f"http://127.0.0.1:{ports.retriever}",
        "DICOMISO_PACKAGER_URL": f"http://127.0.0.1:{ports.packager}",
        "DICOMISO_FORWARDER_URL": f"http://127.0.0.1:{ports.forwarder}",
    }


def write_client_env(stack: Stack) -> Path:
    """`<state>/env`: export lines for a second terminal (`source .dicom-iso-dev/env`)."""
    path = stack.state / "env"
    lines = [f"export {k}={v}" for k, v in client_env(stack.ports).items()]
    path.write_text(
        "# written by `dicom-iso dev`: source it to reach this stack\n" + "\n".join(lines) + "\n"
    )
    return path


def _banner(stack: Stack, env_file: Path) -> None:
    p = stack.ports
    accessions = ", ".join(s.accession for s in DEMO_STUDIES)
    standard = p == Ports.standard(0)
    source = "" if standard else f"source {_shown(env_file)} && "
    for line in (
        f"ready: packager http://127.0.0.1:{p.packager}  lookup :{p.lookup}  "
        f"retriever :{p.retriever} (SCP CDRECORD :{p.scp})  forwarder :{p.forwarder}",
        f"S3 (moto) http://127.0.0.1:{p.s3} bucket {BUCKET}; demo PACS ABPACS@127.0.0.1:"
        f"{p.pacs} (http :{p.pacs_http})",
        stack.his_note,
        f"demo accessions: {accessions}",
        "the forwarder's demo peer: demo-pacs (the demo PACS itself)",
        *(
            ()
            if standard
            else (f"other ports than the standard ones: the CLI needs {_shown(env_file)}",)
        ),
        f"try: {source}uv run dicom-iso package MR.001,CT.002 --download "
        f"{_shown(stack.state / 'discs')}",
        "Ctrl-C stops everything started here",
    ):
        say("dev", line)


def run(no_his: bool = False, port_base: int = 0, state_dir: Path | None = None) -> int:
    """Start the stack, stream its logs, stop it on Ctrl-C/SIGTERM; the process exit code."""
    ports = Ports.standard(port_base)
    busy = ports.taken()
    if busy:
        say(
            "dev",
            f"ports already in use: {', '.join(map(str, busy))} (another stack, or a "
            "system Orthanc?); stop it or pass --port-base 100",
        )
        return 2
    state = state_dir or Path.cwd() / ".dicom-iso-dev"
    state.mkdir(parents=True, exist_ok=True)
    (state / "discs").mkdir(exist_ok=True)
    stack = Stack(find_repo(Path.cwd()), state, ports, use_his=not no_his)
    stopping = stack.stopping

    def on_signal(_signum: int, _frame: Any) -> None:
        stopping.set()

    previous = {
        s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    code = 0
    try:
        stack.start_s3()
        pacs = stack.start_pacs()
        say("dev", f"demo PACS seeded with {stack.seed_pacs(pacs)} synthetic instances")
        stack.start_services(stack.seed_his())
        _banner(stack, write_client_env(stack))
        while not stopping.wait(0.5):
            dead = stack.exited()
            if dead is not None:
                say("dev", f"{dead.name} exited (code {dead.proc.returncode}); stopping")
                code = 1
                break
    except StartupFailed as exc:
        say("dev", f"error: {exc}")
        code = 1
    except (httpx.HTTPError, OSError) as exc:
        say("dev", f"error: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        stack.stop()  # first: nothing below may keep a child alive
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        say("dev", "stopped every process it started")
    return code
