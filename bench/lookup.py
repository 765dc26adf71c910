#!/usr/bin/env python
"""Lookup latency benchmark: `GET /v1/accessions/{acc}` against the raw HIS queries.

Run by hand (never collected by pytest), from the repository root:

    uv run python bench/lookup.py                       # load 1,000,000 rows, pool size 4
    uv run python bench/lookup.py --keep-db             # reuse the loaded tables (and keep them)
    uv run python bench/lookup.py --keep-db --pool-size 4 8 16

One run

1. creates the bench HIS (services/lookup/schema.sql with `pacsdb_his`/`rsabt201107`
   replaced by `--accession-db`/`--patient-db`, as tests/lookup/conftest.py does) in the
   MariaDB on 127.0.0.1:3306 (root, no password) and loads `--rows` synthetic accessions
   (`B` + 9 digits) of `--patients` synthetic patients with LOAD DATA LOCAL INFILE from
   generated TSV files; with `--keep-db` the load is skipped when the row counts match;
2. creates a SELECT-only user for the service and for the raw queries;
3. times the two HIS queries with pymysql directly (the service's connection options), for
   random existing accessions: sequentially on one connection, and from `--clients` threads
   with one connection each;
4. for every `--pool-size`: starts `.venv/bin/dicomiso-lookup` on a free loopback port
   (DICOMISO_HIS_POOL_SIZE), warms it up, then `--clients` threads, each with its own
   keep-alive `httpx.Client`, send `--requests` GETs for random existing accessions in
   total; plus `--single` requests from one client (the latency without queueing). The
   service is stopped by its PID afterwards, always.

`--workers N` (N > 1) starts the same app with `uvicorn --factory --workers N` instead of the
console script (configuration is still only DICOMISO_* variables); `--service-pythonpath`
prepends directories to the service's PYTHONPATH (e.g. httptools + uvloop installed with
`uv pip install --target DIR`, which uvicorn then picks up by itself).

Results: a Markdown table on stdout and all numbers as JSON in bench/out/ (git-ignored).
Synthetic data only, loopback only; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pymysql
import pymysql.cursors

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
SCHEMA = ROOT / "services" / "lookup" / "schema.sql"
LOOPBACK = "127.0.0.1"
MARIADB_PORT = 3306
BENCH_USER = "bench_lookup_ro"
SEED = 20261125

GIVEN = [
    "Budi",
    "Siti",
    "Agus",
    "Dewi",
    "Eko",
    "Sri",
    "Ahmad",
    "Nur",
    "Rina",
    "Joko",
    "Wati",
    "Hendra",
    "Yuni",
    "Bambang",
    "Lestari",
    "Andi",
    "Putri",
    "Rudi",
    "Fitri",
    "Dian",
    "Maria",
    "Yusuf",
    "Indah",
    "Teguh",
    "Ratna",
    "Hadi",
    "Mega",
    "Surya",
    "Ayu",
    "Iwan",
]
FAMILY = [
    "Santoso",
    "Wijaya",
    "Saputra",
    "Hidayat",
    "Nugroho",
    "Kusuma",
    "Pratama",
    "Setiawan",
    "Lestari",
    "Siregar",
    "Nasution",
    "Simanjuntak",
    "Harahap",
    "Gunawan",
    "Susanto",
    "Halim",
    "Tanjung",
    "Purnomo",
    "Rahman",
    "Utami",
    "Wibowo",
    "Suryadi",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- synthetic data --------------------------------------------------------------------------


def accession(i: int) -> str:
    return f"B{i:09d}"


def medrec(i: int) -> str:
    return f"RM{i:07d}"


def synthetic_name(rng: random.Random) -> str:
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    kind = rng.random()
    if kind < 0.3:  # DICOM PN style
        return f"{family}^{given}"
    if kind < 0.4:
        return f"{given} {rng.choice(GIVEN)} {family}, S.Kom."
    return f"{given} {family}"


def write_tsv(work: Path, rows: int, patients: int) -> tuple[Path, Path]:
    """pasien.tsv and accessions.tsv (sorted by primary key, so InnoDB appends)."""
    rng = random.Random(SEED)
    pat = work / "pasien.tsv"
    with pat.open("w", encoding="utf-8") as fh:
        fh.writelines(f"{medrec(i)}\t{synthetic_name(rng)}\n" for i in range(patients))
    acc = work / "accessions.tsv"
    with acc.open("w", encoding="utf-8") as fh:
        chunk: list[str] = []
        for i in range(rows):
            reg = f"REG-{i:08d}" if i % 10 else "\\N"  # every tenth RegID is NULL
            chunk.append(f"{accession(i)}\t{medrec(rng.randrange(patients))}\t{reg}\n")
            if len(chunk) >= 100_000:
                fh.writelines(chunk)
                chunk.clear()
        fh.writelines(chunk)
    return pat, acc


# -- MariaDB -------------------------------------------------------------------------------


def root_conn(**kw: Any) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host=LOOPBACK,
        port=MARIADB_PORT,
        user="root",
        password="",
        autocommit=True,
        charset="utf8mb4",
        **kw,
    )


def root_sql(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = root_conn()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def count_rows(acc_db: str, pat_db: str) -> tuple[int, int] | None:
    try:
        a = root_sql(f"SELECT COUNT(*) FROM `{acc_db}`.accessions")[0][0]
        p = root_sql(f"SELECT COUNT(*) FROM `{pat_db}`.pasien")[0][0]
    except pymysql.err.MySQLError:
        return None
    return int(a), int(p)


def drop_dbs(acc_db: str, pat_db: str) -> None:
    for name in (acc_db, pat_db):
        root_sql(f"DROP DATABASE IF EXISTS `{name}`")


def load_db(args: argparse.Namespace) -> dict[str, Any]:
    """Create schema.sql under the bench names and load the synthetic rows (unless kept)."""
    acc_db, pat_db = args.accession_db, args.patient_db
    if args.keep_db and count_rows(acc_db, pat_db) == (args.rows, args.patients):
        log(f"reusing {acc_db}.accessions ({args.rows:,} rows) and {pat_db}.pasien")
        return {"loaded": False}
    drop_dbs(acc_db, pat_db)
    sql = SCHEMA.read_text(encoding="utf-8")
    sql = sql.replace("pacsdb_his", acc_db).replace("rsabt201107", pat_db)
    subprocess.run(
        [
            "mariadb",
            f"-h{LOOPBACK}",
            f"-P{MARIADB_PORT}",
            "-uroot",
            "--default-character-set=utf8mb4",
        ],
        input=sql.encode(),
        check=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-lookup-") as tmp:
        t0 = time.perf_counter()
        pat, acc = write_tsv(Path(tmp), args.rows, args.patients)
        t_gen = time.perf_counter() - t0
        log(f"generated TSV in {t_gen:.1f} s; loading ...")
        conn = root_conn(local_infile=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
                t1 = time.perf_counter()
                cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE `{pat_db}`.pasien "
                    "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' "
                    "LINES TERMINATED BY '\\n' (MEDRECID, Nama)",
                    (str(pat),),
                )
                t2 = time.perf_counter()
                cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE `{acc_db}`.accessions "
                    "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' "
                    "LINES TERMINATED BY '\\n' (AccessionNumber, MEDRECID, RegID)",
                    (str(acc),),
                )
                t3 = time.perf_counter()
                cur.execute(f"ANALYZE TABLE `{acc_db}`.accessions, `{pat_db}`.pasien")
                cur.fetchall()
        finally:
            conn.close()
    counts = count_rows(acc_db, pat_db)
    if counts != (args.rows, args.patients):
        raise RuntimeError(f"loaded {counts}, expected {(args.rows, args.patients)}")
    total = time.perf_counter() - t0
    log(
        f"loaded {args.rows:,} accessions + {args.patients:,} patients in {total:.1f} s "
        f"(generate {t_gen:.1f} s, pasien {t2 - t1:.1f} s, accessions {t3 - t2:.1f} s)"
    )
    return {
        "loaded": True,
        "total_s": round(total, 2),
        "generate_s": round(t_gen, 2),
        "load_pasien_s": round(t2 - t1, 2),
        "load_accessions_s": round(t3 - t2, 2),
    }


@contextlib.contextmanager
def readonly_user(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    password = secrets.token_hex(16)
    root_sql(f"DROP USER IF EXISTS '{BENCH_USER}'@'{LOOPBACK}'")
    root_sql(f"CREATE USER '{BENCH_USER}'@'{LOOPBACK}' IDENTIFIED BY %s", (password,))
    for name in (args.accession_db, args.patient_db):
        root_sql(f"GRANT SELECT ON `{name}`.* TO '{BENCH_USER}'@'{LOOPBACK}'")
    try:
        yield BENCH_USER, password
    finally:
        root_sql(f"DROP USER IF EXISTS '{BENCH_USER}'@'{LOOPBACK}'")


# -- measuring -------------------------------------------------------------------------------


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def summary(latencies_s: list[float], wall_s: float) -> dict[str, Any]:
    ms = sorted(v * 1000 for v in latencies_s)
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p90_ms": pct(ms, 90),
        "p99_ms": pct(ms, 99),
        "max_ms": ms[-1],
        "mean_ms": sum(ms) / len(ms),
        "wall_s": wall_s,
        "per_s": len(ms) / wall_s,
    }


def cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """pid and all its (living) descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def mariadb_pid() -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("mariadbd", "mysqld"):
                    return int(entry.name)
    return None


def cpu_totals() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU seconds of named process trees, and the machine's average busy CPUs."""

    def __init__(self, hook: Callable[[], Any] | None = None, **pids: list[int]) -> None:
        self.pids, self.hook = pids, hook
        self.used: dict[str, float] = {}
        self.hooked: list[Any] = []

    def _now(self) -> dict[str, float]:
        return {k: sum(cpu_s(p) for p in ps) for k, ps in self.pids.items()}

    def __enter__(self) -> CpuMeter:
        if self.hook:
            self.hooked.append(self.hook())
        self._start, self._m0, self._t0 = self._now(), cpu_totals(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        end, m1 = self._now(), cpu_totals()
        self.used = {f"{k}_cpu_s": round(end[k] - self._start[k], 2) for k in end}
        busy = (m1[0] - self._m0[0]) / max(1, m1[1] - self._m0[1]) * (os.cpu_count() or 1)
        self.used["machine_busy"] = round(busy, 2)
        if self.hook:
            self.hooked.append(self.hook())


def run_threads(
    n: int,
    setup: Callable[[int], Any],
    work: Callable[[Any, int], float | None],
    teardown: Callable[[Any], None],
    warmup: int,
    total: int,
    meter: CpuMeter | None = None,
) -> tuple[list[float], float]:
    """n threads; each does `warmup` untimed calls, then all start together and do
    total/n timed calls. Returns (latencies, wall seconds of the timed part); `meter`
    spans the timed part only. A call that returns a float reports its own latency (the
    open-loop mode measures from the scheduled send time, not from the actual one)."""
    meter = meter or CpuMeter()
    per = total // n
    barrier = threading.Barrier(n + 1)
    done = threading.Barrier(n + 1)
    results: list[list[float]] = [[] for _ in range(n)]
    errors: list[BaseException] = []

    def body(t: int) -> None:
        state = None
        try:
            state = setup(t)
            for _ in range(warmup):
                work(state, -1)  # k < 0: a warm-up call
            barrier.wait()
            lat = results[t]
            for k in range(per):
                s = time.perf_counter()
                own = work(state, k)
                lat.append(time.perf_counter() - s if own is None else own)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait()
            if state is not None:
                teardown(state)

    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(n)]
    for th in threads:
        th.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    with meter:
        t0 = time.perf_counter()
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait()
        wall = time.perf_counter() - t0
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return [v for r in results for v in r], wall


def raw_connect(user: str, password: str) -> pymysql.connections.Connection[Any]:
    """The service's own connection options (his.His._connect)."""
    return pymysql.connect(
        host=LOOPBACK,
        port=MARIADB_PORT,
        user=user,
        password=password,
        connect_timeout=3.0,
        read_timeout=5.0,
        write_timeout=5.0,
        charset="utf8mb4",
        autocommit=True,
        cursorclass=pymysql.cursors.DictCursor,
        init_command="SET SESSION TRANSACTION READ ONLY",
    )


def raw_lookups(
    args: argparse.Namespace, user: str, password: str, threads: int, total: int
) -> dict[str, Any]:
    q1 = f"SELECT MEDRECID, RegID FROM `{args.accession_db}`.accessions WHERE AccessionNumber = %s"
    q2 = f"SELECT Nama FROM `{args.patient_db}`.pasien WHERE MEDRECID = %s"

    def setup(t: int) -> tuple[Any, random.Random]:
        return raw_connect(user, password), random.Random(SEED + 1000 + t)

    def work(state: tuple[Any, random.Random], _: int) -> None:
        conn, rng = state
        with conn.cursor() as cur:
            cur.execute(q1, (accession(rng.randrange(args.rows)),))
            row = cur.fetchone()
            cur.execute(q2, (row["MEDRECID"],))
            if cur.fetchone() is None:
                raise RuntimeError("patient missing")

    meter = CpuMeter(bench=[os.getpid()], mariadb=[mariadb_pid() or 0])
    lat, wall = run_threads(
        threads,
        setup,
        work,
        lambda s: s[0].close(),
        warmup=max(50, args.warmup // threads),
        total=total,
        meter=meter,
    )
    return {**summary(lat, wall), **meter.used, "threads": threads}


class Service:
    """The lookup service as a subprocess on a free loopback port; stopped by PID."""

    def __init__(
        self, args: argparse.Namespace, user: str, password: str, pool: int, log_path: Path
    ) -> None:
        with contextlib.closing(__import__("socket").socket()) as s:
            s.bind((LOOPBACK, 0))
            self.port = s.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        env = {
            **os.environ,
            "DICOMISO_HTTP_HOST": LOOPBACK,
            "DICOMISO_HTTP_PORT": str(self.port),
            "DICOMISO_HIS_URL": f"mysql://{user}:{password}@{LOOPBACK}:{MARIADB_PORT}",
            "DICOMISO_HIS_ACCESSION_DB": args.accession_db,
            "DICOMISO_HIS_PATIENT_DB": args.patient_db,
            "DICOMISO_HIS_POOL_SIZE": str(pool),
            "DICOMISO_LOG_LEVEL": "WARNING",
            "DICOMISO_API_TOKEN": "",
        }
        if args.service_pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                [args.service_pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        venv = ROOT / ".venv" / "bin"
        if args.workers > 1:
            cmd = [
                str(venv / "python"),
                "-m",
                "uvicorn",
                "--factory",
                "dicomiso_lookup.app:create_app",
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
        else:
            cmd = [str(venv / "dicomiso-lookup")]
        self.cmd = cmd
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}; see {log_path}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2.0, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("service not ready in 60 s")
            time.sleep(0.1)
        if args.workers > 1:  # all workers up: each answers readyz on its own
            time.sleep(2.0)

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def server_stats(self) -> tuple[float, float]:
        """(count, sum seconds) of the service's own latency histogram for the route."""
        text = httpx.get(f"{self.url}/metrics", timeout=5.0, trust_env=False).text
        count = total = 0.0
        for line in text.splitlines():
            if 'route="/v1/accessions/{accession}"' in line:
                if line.startswith("dicomiso_http_request_seconds_count"):
                    count += float(line.rsplit(" ", 1)[1])
                elif line.startswith("dicomiso_http_request_seconds_sum"):
                    total += float(line.rsplit(" ", 1)[1])
        return count, total

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self._log.close()


def http_lookups(
    args: argparse.Namespace, svc: Service, clients: int, total: int, warmup: int, rate: float = 0.0
) -> dict[str, Any]:
    """Closed loop (each client sends its next request when the last one is answered), or
    with `rate` > 0 open loop: request i of client t is due at start + (t + i*clients)/rate,
    and its latency counts from that due time (no coordinated omission)."""

    def setup(t: int) -> dict[str, Any]:
        client = httpx.Client(
            base_url=svc.url,
            trust_env=False,
            timeout=30.0,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        return {"client": client, "rng": random.Random(SEED + 2000 + t), "t": t, "start": None}

    def get(state: dict[str, Any]) -> None:
        acc = accession(state["rng"].randrange(args.rows))
        r = state["client"].get(f"/v1/accessions/{acc}")
        if r.status_code != 200:
            raise RuntimeError(f"GET {acc}: HTTP {r.status_code} {r.text[:200]}")

    def work(state: dict[str, Any], k: int) -> float | None:
        if rate <= 0 or k < 0:  # closed loop, or a warm-up call
            get(state)
            return None
        if state["start"] is None:
            state["start"] = time.perf_counter()
        due = state["start"] + (state["t"] + k * clients) / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        get(state)
        return float(time.perf_counter() - due)

    meter = CpuMeter(
        hook=svc.server_stats, service=svc.pids(), bench=[os.getpid()], mariadb=[mariadb_pid() or 0]
    )
    lat, wall = run_threads(
        clients, setup, work, lambda s: s["client"].close(), warmup=warmup, total=total, meter=meter
    )
    (c0, s0), (c1, s1) = meter.hooked
    # with several workers each answers /metrics from its own registry: no usable delta
    server_mean = (s1 - s0) / (c1 - c0) * 1000 if c1 > c0 and args.workers == 1 else None
    return {
        **summary(lat, wall),
        **meter.used,
        "clients": clients,
        "server_mean_ms": server_mean,
        "rate": rate or None,
    }


def check_answer(args: argparse.Namespace, svc: Service) -> dict[str, Any]:
    """One GET compared with the row in the database (the bench measures real answers)."""
    acc = accession(args.rows // 2)
    body = httpx.get(f"{svc.url}/v1/accessions/{acc}", trust_env=False).json()
    medrec_id = root_sql(
        f"SELECT MEDRECID FROM `{args.accession_db}`.accessions WHERE AccessionNumber = %s", (acc,)
    )[0][0]
    if body.get("medrec_id") != medrec_id or body.get("source") != "his":
        raise RuntimeError(f"unexpected answer for {acc}: {body}")
    missing = httpx.get(f"{svc.url}/v1/accessions/X{acc}", trust_env=False).status_code
    if missing != 404:
        raise RuntimeError(f"unknown accession answered {missing}, expected 404")
    return {"checked": acc, "unknown_status": missing}


def service_runtime(args: argparse.Namespace) -> dict[str, Any]:
    """Which HTTP parser / event loop uvicorn will pick in the service's environment."""
    env = dict(os.environ)
    if args.service_pythonpath:
        env["PYTHONPATH"] = args.service_pythonpath
    code = (
        "import importlib.util as u, uvicorn, fastapi, pydantic, pymysql, starlette;"
        "print(uvicorn.__version__, fastapi.__version__, pydantic.__version__,"
        " pymysql.__version__, starlette.__version__,"
        " 'httptools' if u.find_spec('httptools') else 'h11',"
        " 'uvloop' if u.find_spec('uvloop') else 'asyncio')"
    )
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    keys = ["uvicorn", "fastapi", "pydantic", "pymysql", "starlette", "http", "loop"]
    return dict(zip(keys, out, strict=True))


# -- reporting -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    version = root_sql("SELECT VERSION()")[0][0]
    bp = root_sql("SELECT @@innodb_buffer_pool_size")[0][0]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "mariadb": version,
        "innodb_buffer_pool_mib": int(bp) // 2**20,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path | concurrency | n | p50 ms | p90 ms | p99 ms | max ms | req/s "
        "| server mean ms | CPU s: service / bench / mariadb | busy CPUs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        conc = r.get("clients", r.get("threads"))
        cpu = (
            f"{r.get('service_cpu_s', '-')} / {r.get('bench_cpu_s', '-')} / "
            f"{r.get('mariadb_cpu_s', '-')}"
        )
        server = r.get("server_mean_ms")
        server_ms = "-" if server is None else f"{server:.2f}"
        lines.append(
            f"| {r['path']} | {conc} | {r['n']:,} | {r['p50_ms']:.2f} "
            f"| {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} "
            f"| {r['per_s']:,.0f} | {server_ms} | {cpu} | {r['machine_busy']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="accessions to load")
    p.add_argument(
        "--patients", type=int, default=None, help="patients to load (default rows * 0.3)"
    )
    p.add_argument("--clients", type=int, default=20, help="concurrent HTTP clients/threads")
    p.add_argument("--requests", type=int, default=20_000, help="timed requests in total")
    p.add_argument("--warmup", type=int, default=2_000, help="untimed requests in total")
    p.add_argument(
        "--single", type=int, default=2_000, help="timed requests from one client (0 = skip)"
    )
    p.add_argument(
        "--raw-sequential", type=int, default=5_000, help="raw pymysql lookups on one connection"
    )
    p.add_argument(
        "--rate",
        type=float,
        nargs="*",
        default=[],
        help="extra open-loop runs at these total request rates (req/s)",
    )
    p.add_argument(
        "--rate-seconds",
        type=float,
        default=15.0,
        help="length of each open-loop run (capped at --requests)",
    )
    p.add_argument(
        "--pool-size",
        type=int,
        nargs="+",
        default=[4],
        help="DICOMISO_HIS_POOL_SIZE; several values = one service run each",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="> 1: uvicorn --factory --workers N instead of dicomiso-lookup",
    )
    p.add_argument(
        "--service-pythonpath",
        default=None,
        help="prepend to the service's PYTHONPATH (e.g. httptools + uvloop)",
    )
    p.add_argument(
        "--keep-db",
        action="store_true",
        help="reuse the bench tables when their row counts match; keep them",
    )
    p.add_argument("--accession-db", default="bench_his")
    p.add_argument("--patient-db", default="bench_pat")
    p.add_argument("--label", default="", help="free text stored in the JSON")
    args = p.parse_args()
    if args.patients is None:
        args.patients = max(1, int(args.rows * 0.3))

    info: dict[str, Any] = {
        "machine": machine(),
        "args": vars(args),
        "runtime": service_runtime(args),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    log(f"machine {info['machine']}; service runtime {info['runtime']}")
    info["load"] = load_db(args)
    rows: list[dict[str, Any]] = []
    try:
        with readonly_user(args) as (user, password):
            log("raw pymysql, sequential ...")
            r = raw_lookups(args, user, password, 1, args.raw_sequential)
            rows.append({"path": "raw pymysql, 1 connection", **r})
            log(f"raw pymysql, {args.clients} threads ...")
            r = raw_lookups(args, user, password, args.clients, args.requests)
            rows.append({"path": f"raw pymysql, {args.clients} connections", **r})
            for pool in args.pool_size:
                log_path = OUT_DIR / f"lookup-service-pool{pool}.log"
                OUT_DIR.mkdir(parents=True, exist_ok=True)
                svc = Service(args, user, password, pool, log_path)
                try:
                    log(
                        f"service pid {svc.proc.pid} on {svc.url} (pool {pool}, "
                        f"workers {args.workers})"
                    )
                    info.setdefault("checks", []).append(check_answer(args, svc))
                    tag = f"HTTP pool {pool}" + (
                        f", {args.workers} workers" if args.workers > 1 else ""
                    )
                    if args.single:
                        r = http_lookups(args, svc, 1, args.single, warmup=200)
                        rows.append({"path": f"{tag}, 1 client", "pool": pool, **r})
                    r = http_lookups(
                        args,
                        svc,
                        args.clients,
                        args.requests,
                        warmup=max(1, args.warmup // args.clients),
                    )
                    rows.append({"path": f"{tag}, {args.clients} clients", "pool": pool, **r})
                    log(f"pool {pool}: p99 {r['p99_ms']:.2f} ms, {r['per_s']:.0f} req/s")
                    for rate in args.rate:
                        n = min(args.requests, int(rate * args.rate_seconds))
                        r = http_lookups(args, svc, args.clients, n, warmup=10, rate=rate)
                        rows.append(
                            {
                                "path": f"{tag}, {args.clients} clients, open loop {rate:g}/s",
                                "pool": pool,
                                **r,
                            }
                        )
                        log(f"pool {pool} @ {rate:g}/s: p99 {r['p99_ms']:.2f} ms")
                finally:
                    svc.stop()
                    log(f"service pid {svc.proc.pid} stopped ({svc.proc.returncode})")
    finally:
        if not args.keep_db:
            drop_dbs(args.accession_db, args.patient_db)
    raw_conc = next(r for r in rows if r["path"].startswith("raw") and r["threads"] > 1)
    raw_seq = next(r for r in rows if r["path"].startswith("raw") and r["threads"] == 1)
    goals = []
    for r in rows:
        if r["path"].startswith("HTTP") and r["clients"] > 1 and not r.get("rate"):
            goals.append(
                {
                    "path": r["path"],
                    "p99_ms": r["p99_ms"],
                    "under_10ms": r["p99_ms"] < 10,
                    "vs_raw_concurrent_p99": r["p99_ms"] / raw_conc["p99_ms"],
                    "vs_raw_sequential_p99": r["p99_ms"] / raw_seq["p99_ms"],
                }
            )
    info.update(results=rows, goals=goals, machine_end={"loadavg": os.getloadavg()})
    print(table(rows))
    print()
    for g in goals:
        print(
            f"* {g['path']}: p99 {g['p99_ms']:.2f} ms (goal < 10 ms: "
            f"{'met' if g['under_10ms'] else 'MISSED'}); "
            f"{g['vs_raw_concurrent_p99']:.2f}x raw p99 at the same concurrency, "
            f"{g['vs_raw_sequential_p99']:.1f}x raw sequential p99 (goal <= 2x)"
        )
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"lookup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(info, indent=2, default=str))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
