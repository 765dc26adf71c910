#!/usr/bin/env python
"""Forwarder throughput benchmark: the dicom-iso forwarder against dcmtk `dcmsend`, on loopback.

Run by hand (never collected by pytest), from the repository root:

    uv run python bench/forward.py                               # 1,000 x 512x512 CT, 3 repeats
    uv run python bench/forward.py --keep-dir /tmp/bench-keep    # reuse the generated study
    uv run python bench/forward.py --associations 1,2,4 --repeat 3

One run generates (or reuses) a synthetic CT series (tests/support/studies.make_ct_series),
seeds it into an S3 bucket (moto) exactly as the retriever leaves it (instances at
`instances/{study}/{series}/{sop}.dcm`, manifest, accession index), and times, K times each:

  a  forwarder     POST /v1/forwards {"study_uids": [...], "destination": "bench"} -> state
                   "succeeded": GET of every instance from S3, spool, C-STORE to a dcmtk
                   `storescp --fork` writing to local disk. Once per `--associations` value
                   (the peer's max_associations). `.venv/bin/dicomiso-forwarder` runs as a
                   subprocess, a fresh process and a fresh storescp directory per run; the
                   script checks that the job succeeded and that all files arrived.
  b  dcmsend       dcmtk `dcmsend` of the same Part 10 files from local disk to the same kind
                   of `storescp --fork` (one association).
  c  S3 ceiling    boto3 get_object (the services' client configuration) of the same objects
                   from the same moto server, body read in 1 MiB chunks and dropped:
                   sequential and from 4 threads; and sequentially spooled to a temp file the
                   way the forwarder does it.
  d  pynetdicom    a plain pynetdicom 3 C-STORE loop from local disk (one association,
                   STORE_SEND_CHUNKED_DATASET, TCP_NODELAY): the floor of a pynetdicom sender.
                   Timed from A-ASSOCIATE to release inside the subprocess (no start-up); its
                   CPU seconds ("scu") include the interpreter's start-up and imports.

The S3 endpoint is a moto ThreadedMotoServer in its own process on a free loopback port.
`TCP_NODELAY=1` is in the environment of every dcmtk tool. Throughput is the sum of the
Part 10 file sizes (10^6 bytes = 1 MB) divided by the wall time. Every process started here
is stopped by its PID. Results: a Markdown table on stdout and the raw numbers as JSON in
bench/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import retrieve as rb  # noqa: E402  (bench/retrieve.py: moto, CPU/RSS meters, study cache)

LOOPBACK = rb.LOOPBACK
OUT_DIR = rb.OUT_DIR
BUCKET = "bench-forward"
PEER_AET = "BENCHSCP"
CALLING_AET = "CDRECORD"
log = rb.log


def _stat_cpu(pid: int) -> tuple[int, float]:
    """(parent pid, own + reaped children's CPU seconds) of a process, zombies included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds of a process and of its children (storescp --fork): the reaped ones via
    cutime/cstime, the exited-but-unreaped ones (zombies keep their counters) and live ones
    via /proc."""
    if pid is None:
        return 0.0
    try:
        total = _stat_cpu(pid)[1]
    except OSError:
        return 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pid:
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid, used = _stat_cpu(int(entry.name))
                if ppid == pid:
                    total += used
    return total


class Meter(rb.CpuMeter):
    """rb.CpuMeter plus process trees (storescp and its forked children)."""

    def __init__(self, tree: dict[str, int | None], **pids: int | None) -> None:
        super().__init__(**pids)
        self.tree = tree

    def __enter__(self) -> Meter:
        super().__enter__()
        self._tree0 = {k: tree_cpu_s(p) for k, p in self.tree.items()}
        return self

    def finish_tree(self) -> None:
        """Call once the last child is done, before storescp is stopped."""
        for k, p in self.tree.items():
            self.used[k] = round(tree_cpu_s(p) - self._tree0[k], 2)


# -- a quiet machine ---------------------------------------------------------------------

BUSY_MARKERS = ("bench/lookup.py", "bench/retrieve.py", "pytest")


def others_busy() -> list[str]:
    """Command lines of other benchmarks or test runs on the machine (not our own children:
    moto runs as `bench/retrieve.py --_moto`)."""
    mine = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if (
                any(m in cmd for m in BUSY_MARKERS)
                and "--_moto" not in cmd
                and "uv run" not in cmd
                and not cmd.startswith("timeout ")
            ):
                found.append(cmd.strip()[:120])
    return found


def wait_quiet(limit: float) -> float:
    """Wait (polling every 5 s, at most `limit` s) until no other benchmark or test run is
    running, so that they do not skew each other; returns the seconds waited."""
    started = time.monotonic()
    told = False
    while (busy := others_busy()) and time.monotonic() - started < limit:
        if not told:
            log(f"waiting for a quiet machine: {busy[0]}")
            told = True
        time.sleep(5)
    if busy:
        log(f"still busy after {limit:.0f}s, measuring anyway: {busy[0]}")
    return time.monotonic() - started


# -- seeding -------------------------------------------------------------------------------


def seed(moto: rb.Moto, files: list[Path], accession: str) -> tuple[str, Any]:
    """Put the files into a fresh bucket as the retriever would (tests/forwarder/conftest.py)."""
    import pydicom

    os.environ.update(rb.s3_env())
    from dicomiso_common.dicom import accession_key, instance_key
    from dicomiso_common.store import Store
    from dicomiso_retriever.manifest import build_manifest, write_manifest

    client = moto.fresh_bucket(BUCKET)
    store = Store(client, BUCKET)
    started = time.perf_counter()

    def one(path: Path) -> str:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        data = path.read_bytes()
        store.put_bytes(
            instance_key(
                str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
            ),
            data,
            content_type="application/dicom",
            metadata={"sha256": hashlib.sha256(data).hexdigest()},
        )
        return str(ds.StudyInstanceUID)

    with ThreadPoolExecutor(4) as pool:
        uids = set(pool.map(one, files))
    (study_uid,) = uids
    manifest = build_manifest(store, study_uid, {}, "seed", "bench")
    write_manifest(store, manifest)
    store.put_json(
        accession_key(accession), {"accession_number": accession, "study_uids": [study_uid]}
    )
    log(f"seeded {len(files)} instances into s3://{BUCKET} in {time.perf_counter() - started:.1f}s")
    return study_uid, client


# -- (a) the forwarder ---------------------------------------------------------------------


class ForwarderProc:
    """`.venv/bin/dicomiso-forwarder` as a subprocess, configured by DICOMISO_* variables."""

    def __init__(
        self,
        work: Path,
        moto: rb.Moto,
        peer_port: int,
        associations: int,
        *,
        extra_env: dict[str, str],
        pythonpath: str | None,
        tag: str,
        profile: Path | None = None,
        py_spy: str | None = None,
    ) -> None:
        from support.net import free_port

        self.http_port = free_port()
        self.url = f"http://{LOOPBACK}:{self.http_port}"
        env = rb.s3_env()
        env.update(
            {
                "DICOMISO_S3_ENDPOINT_URL": moto.url,
                "DICOMISO_S3_BUCKET": BUCKET,
                "DICOMISO_HTTP_HOST": LOOPBACK,
                "DICOMISO_HTTP_PORT": str(self.http_port),
                "DICOMISO_LOG_LEVEL": "WARNING",
                "DICOMISO_REPLICA_ID": f"bench-{tag}",
                "DICOMISO_CALLING_AET": CALLING_AET,
                "DICOMISO_PEERS": json.dumps(
                    {
                        "bench": {
                            "aet": PEER_AET,
                            "host": LOOPBACK,
                            "port": peer_port,
                            "max_associations": associations,
                        }
                    }
                ),
            }
        )
        env.update(extra_env)
        if pythonpath:  # a patched copy of the sources shadows the editable install
            env["PYTHONPATH"] = pythonpath
        cmd = [str(ROOT / ".venv" / "bin" / "dicomiso-forwarder")]
        if profile is not None:
            cmd = [
                py_spy or "py-spy",
                "record",
                "--rate",
                "200",
                "--format",
                "speedscope",
                "--threads",
                "--nonblocking",
                "-o",
                str(profile),
                "--",
                *cmd,
            ]
        self.profiling = profile is not None
        self.log_path = work / f"forwarder-{tag}.log"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work
            )
        rb.wait_http(f"{self.url}/readyz", timeout=60, proc=self.proc)

    @property
    def service_pid(self) -> int:
        """PID of the Python process (py-spy's child when profiling)."""
        if not self.profiling:
            return self.proc.pid
        for _ in range(100):
            with contextlib.suppress(OSError):
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
                if kids.split():
                    return int(kids.split()[0])
            time.sleep(0.05)
        raise RuntimeError("py-spy started no child")

    def forward(self, study_uid: str, timeout: float = 900.0) -> dict[str, Any]:
        import httpx

        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as http:
            started = time.perf_counter()
            r = http.post("/v1/forwards", json={"study_uids": [study_uid], "destination": "bench"})
            if r.status_code != 202:
                raise RuntimeError(f"POST /v1/forwards: {r.status_code} {r.text}")
            job = r.json()["id"]
            self.poll_errors: list[str] = []
            while True:
                resp = http.get(f"/v1/forwards/{job}")
                if resp.status_code != 200:  # noted, and polled again (at most 20 times)
                    self.poll_errors.append(f"{resp.status_code} {resp.text[:300]}")
                    log(f"status poll answered {resp.status_code}: {resp.text[:300]}")
                    if len(self.poll_errors) > 20:
                        raise RuntimeError(f"status polls keep failing; see {self.log_path}")
                    time.sleep(0.1)
                    continue
                status = resp.json()
                if status["state"] in ("succeeded", "failed"):
                    break
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"forward still {status['state']} after {timeout}s")
                time.sleep(0.1)  # each poll is an S3 GET in the service: keep it rare
            status["seconds"] = time.perf_counter() - started
            status["poll_errors"] = self.poll_errors
        return dict(status)

    def stop(self) -> None:
        if self.profiling:  # stop the service; py-spy writes its profile and exits
            with contextlib.suppress(ProcessLookupError, RuntimeError):
                os.kill(self.service_pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                rb.stop_pid(self.proc)
        else:
            rb.stop_pid(self.proc)


def storescp(work: Path, name: str) -> Any:
    from support.dcmtk import StoreSCP

    scp = StoreSCP(work / name, aet=PEER_AET, fork=True, log_path=work / "storescp.log")
    scp.start()
    return scp


def finish_scp(scp: Any, n: int, what: str, meter: Meter) -> int:
    """Wait for the files, read storescp's CPU, stop it, remove its directory; file count."""
    try:
        got = len(scp.wait_for_files(n, timeout=10))
    except TimeoutError:
        got = len(scp.files())
    time.sleep(0.2)  # let the forked children exit after the release
    meter.finish_tree()
    scp.stop()
    shutil.rmtree(scp.out_dir, ignore_errors=True)
    if got != n:
        raise RuntimeError(f"{what}: storescp received {got}/{n}")
    return got


def forget_jobs(client: Any) -> int:
    """Delete earlier forward jobs and their results: jobs are idempotent per request, so the
    same POST would otherwise return the finished job instead of sending again."""
    gone = 0
    for prefix in ("jobs/", "forwards/"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for obj in page.get("Contents", ()):
                client.delete_object(Bucket=BUCKET, Key=obj["Key"])
                gone += 1
    return gone


def run_forwarder(
    args: argparse.Namespace,
    work: Path,
    moto: rb.Moto,
    client: Any,
    study_uid: str,
    n: int,
    associations: int,
    tag: str,
    profile: Path | None = None,
    variant_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    forget_jobs(client)
    scp = storescp(work, f"fwd-{tag}")
    try:
        fp = ForwarderProc(
            work,
            moto,
            scp.port,
            associations,
            extra_env={**dict(args.forwarder_env), **(variant_env or {})},
            pythonpath=args.forwarder_pythonpath,
            tag=tag,
            profile=profile,
            py_spy=args.py_spy,
        )
        try:
            sampler = rb.RssSampler(fp.service_pid)
            before = sampler.status()
            with (
                sampler,
                Meter(
                    {"storescp": scp.pid},
                    forwarder=fp.service_pid,
                    moto=moto.proc.pid if moto.proc else None,
                ) as cpu,
            ):
                status = fp.forward(study_uid)
            after = sampler.status()
        finally:
            fp.stop()
        if status["state"] != "succeeded":
            raise RuntimeError(
                f"forward {tag}: {status['state']} {status.get('error')}; see {fp.log_path}"
            )
        got = finish_scp(scp, n, f"forward {tag}", cpu)
    finally:
        scp.stop()
    return {
        "seconds": status["seconds"],
        "files": got,
        "counts": status["counts"],
        "poll_errors": status["poll_errors"],
        "associations": associations,
        "rss_before_kb": before["VmRSS"],
        "rss_peak_kb": max(sampler.peak_kb, after["VmRSS"]),
        "vmhwm_kb": after["VmHWM"],
        "threads_after": after["Threads"],
        "rss_samples": sampler.samples,
        "cpu_s": cpu.used,
    }


# -- (b) dcmsend ---------------------------------------------------------------------------


def run_dcmsend(work: Path, files: list[Path], n: int, i: int) -> dict[str, Any]:
    from support.dcmtk import dcmtk_bin, dcmtk_env

    scp = storescp(work, f"dcmsend-{i}")
    try:
        cmd = [
            dcmtk_bin("dcmsend"),
            "-aet",
            CALLING_AET,
            "-aec",
            PEER_AET,
            LOOPBACK,
            str(scp.port),
            *map(str, files),
        ]
        with (work / "dcmsend.log").open("ab") as out, Meter({"storescp": scp.pid}) as cpu:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dcmtk_env())
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"dcmsend exited {proc.returncode}; see {work / 'dcmsend.log'}")
        got = finish_scp(scp, n, "dcmsend", cpu)
    finally:
        scp.stop()
    cpu.used["dcmsend"] = round(usage.ru_utime + usage.ru_stime, 2)
    return {
        "seconds": seconds,
        "files": got,
        "cpu_s": cpu.used,
        "dcmsend_maxrss_kb": usage.ru_maxrss,
    }


# -- (c) the S3 read ceiling ---------------------------------------------------------------


def run_s3_get(
    moto: rb.Moto, client: Any, keys: list[str], threads: int, spool: bool
) -> dict[str, Any]:
    chunk = 1024 * 1024

    def get(key: str) -> int:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
        got = 0
        if spool:  # what Sender._send_one does before each C-STORE
            with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
                while data := body.read(chunk):
                    fh.write(data)
                    got += len(data)
                fh.flush()
        else:
            while data := body.read(chunk):
                got += len(data)
        body.close()
        return got

    with rb.CpuMeter(client=os.getpid(), moto=moto.proc.pid if moto.proc else None) as cpu:
        started = time.perf_counter()
        if threads <= 1:
            total = sum(get(k) for k in keys)
        else:
            with ThreadPoolExecutor(threads) as pool:
                total = sum(pool.map(get, keys))
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": total, "cpu_s": cpu.used}


# -- (d) plain pynetdicom SCU --------------------------------------------------------------


def plain_scu_main(port: int, list_file: str) -> None:
    """Hidden mode `--_plain-scu PORT LISTFILE`: send the files on one association."""
    from pydicom import dcmread
    from pynetdicom import AE

    from dicomiso_common.dicom import CONNECTION_HANDLERS, configure

    configure()  # quiet logs, C-STORE sent from the file
    files = Path(list_file).read_text().split("\n")
    head = dcmread(files[0], stop_before_pixels=True)
    ae = AE(ae_title=CALLING_AET)
    ae.maximum_pdu_size = 1_048_576
    ae.add_requested_context(str(head.SOPClassUID), [str(head.file_meta.TransferSyntaxUID)])
    started = time.perf_counter()
    assoc = ae.associate(
        LOOPBACK,
        port,
        ae_title=PEER_AET,
        evt_handlers=[*CONNECTION_HANDLERS],  # TCP_NODELAY
    )
    if not assoc.is_established:
        raise SystemExit("association failed")
    bad = 0
    for path in files:
        status = assoc.send_c_store(path)
        if "Status" not in status or int(status.Status) != 0:
            bad += 1
    assoc.release()
    print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
    raise SystemExit(1 if bad else 0)


def run_plain(work: Path, files: list[Path], n: int, i: int) -> dict[str, Any]:
    scp = storescp(work, f"plain-{i}")
    list_file = work / "plain-files.txt"
    list_file.write_text("\n".join(map(str, files)))
    try:
        with Meter({"storescp": scp.pid}) as cpu:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, __file__, "--_plain-scu", str(scp.port), str(list_file)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            output = proc.stdout.read() if proc.stdout else b""
            _, status, usage = os.wait4(proc.pid, 0)
            process_s = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
        (work / "plain-scu.log").write_bytes(output)
        if proc.returncode != 0:
            raise RuntimeError(f"plain SCU exited {proc.returncode}; see {work}/plain-scu.log")
        # time from association request to release, without the interpreter's start-up
        seconds = json.loads(output.decode().strip().splitlines()[-1])["seconds"]
        got = finish_scp(scp, n, "plain pynetdicom", cpu)
    finally:
        scp.stop()
    cpu.used["scu"] = round(usage.ru_utime + usage.ru_stime, 2)
    return {
        "seconds": seconds,
        "process_s": process_s,
        "files": got,
        "cpu_s": cpu.used,
        "scu_maxrss_kb": usage.ru_maxrss,
    }


# -- reporting -----------------------------------------------------------------------------


def summarise(results: dict[str, list[dict[str, Any]]], total_bytes: int) -> list[dict[str, Any]]:
    rows = []
    for name, runs in results.items():
        secs = [r["seconds"] for r in runs]
        med = statistics.median(secs)
        row = {
            "path": name,
            "median_s": med,
            "min_s": min(secs),
            "max_s": max(secs),
            "mb_s": total_bytes / med / 1e6,
            "runs": secs,
        }
        if runs and "rss_peak_kb" in runs[0]:
            row["rss_peak_mib"] = max(r["rss_peak_kb"] for r in runs) / 1024
        cpus = [r.get("cpu_s", {}) for r in runs]
        row["cpu_median"] = {
            k: statistics.median(c.get(k, 0.0) for c in cpus) for k in (cpus[0] if cpus else {})
        }
        rows.append(row)
    ref = next((r for r in rows if r["path"].startswith("b ")), None)
    for r in rows:
        r["vs_dcmsend"] = r["mb_s"] / ref["mb_s"] if ref else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path | median s | min-max s | MB/s | throughput vs dcmsend | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['vs_dcmsend']:.2f}x" if r["vs_dcmsend"] is not None else "-"
        rss = f"{r['rss_peak_mib']:.0f}" if "rss_peak_mib" in r else "-"
        lines.append(
            f"| {r['path']} | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f}"
            f" | {r['mb_s']:.0f} | {ratio} | {rss} |"
        )
    return "\n".join(lines)


def cpu_table(rows: list[dict[str, Any]]) -> str:
    keys = ["forwarder", "dcmsend", "scu", "client", "moto", "storescp", "machine_busy", "wall"]
    lines = ["| path | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for r in rows:
        c = r["cpu_median"]
        lines.append(
            f"| {r['path']} | " + " | ".join(f"{c[k]:.2f}" if k in c else "-" for k in keys) + " |"
        )
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


def repeat(name: str, k: int, fn: Any, mb: float, quiet_wait: float = 0.0) -> list[dict[str, Any]]:
    runs = []
    for i in range(k):
        waited = wait_quiet(quiet_wait) if quiet_wait > 0 else 0.0
        r = fn(i)
        r["waited_for_quiet_s"] = round(waited, 1)
        r["others_busy_after"] = others_busy()
        extra = f", peak RSS {r['rss_peak_kb'] / 1024:.0f} MiB" if "rss_peak_kb" in r else ""
        log(
            f"{name} #{i + 1}: {r['seconds']:.2f}s ({mb / r['seconds']:.0f} MB/s){extra} "
            f"cpu {r.get('cpu_s')}"
        )
        runs.append(r)
    return runs


def throughput(args: argparse.Namespace) -> None:
    # clean up (stop every child by PID) on SIGTERM, and on SIGINT even when started in the
    # background by a non-interactive shell, which starts us with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    n, k = args.instances, args.repeat
    if args.quiet_wait > 0:  # seeding is not timed, but it would slow the other benchmark
        wait_quiet(args.quiet_wait)
    accession = f"BENCH{n}X{args.rows}"[:16]  # the same cache key as bench/retrieve.py
    assocs = [int(a) for a in args.associations.split(",") if a]
    cache = (
        Path(args.keep_dir).resolve()
        if args.keep_dir
        else Path(tempfile.mkdtemp(prefix="dicomiso-fwd-cache-"))
    )
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dicomiso-fwd-"))
    moto = rb.Moto(work)
    try:
        _, files = rb.study_files(
            cache / f"ct-{n}x{args.rows}x{args.cols}", n, args.rows, args.cols, accession
        )
        total = sum(f.stat().st_size for f in files)
        mb = total / 1e6
        moto.start()
        study_uid, client = seed(moto, files, accession)
        keys = [
            k
            for p in client.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix="instances/"
            )
            for k in (o["Key"] for o in p["Contents"])
        ]
        if len(keys) != n:
            raise RuntimeError(f"bucket holds {len(keys)}/{n}")
        # warm the page cache of our files and the dcmtk binaries, untimed
        warm = run_dcmsend(work, files, n, -1)["seconds"]
        log(f"warm-up dcmsend: {warm:.2f}s; study {n} instances, {mb:.1f} MB")
        results: dict[str, list[dict[str, Any]]] = {}
        skip = set(args.skip)
        if "b" not in skip:
            results["b dcmsend (disk) -> storescp"] = repeat(
                "dcmsend", k, lambda i: run_dcmsend(work, files, n, i), mb, args.quiet_wait
            )
        if "a" not in skip:
            for vname, venv in args.variant or [("", {})]:
                for a in assocs:
                    label = f" [{vname}]" if vname else ""
                    results[
                        f"a forwarder, {a} association{'s' if a > 1 else ''}{label} "
                        "(S3 -> storescp, POST to succeeded)"
                    ] = repeat(
                        f"forwarder x{a}{label}",
                        k,
                        lambda i, a=a, vn=vname, ve=venv: run_forwarder(
                            args,
                            work,
                            moto,
                            client,
                            study_uid,
                            n,
                            a,
                            f"a{a}{vn and '-' + vn}-{i}",
                            variant_env=ve,
                        ),
                        mb,
                        args.quiet_wait,
                    )
        if "d" not in skip:
            results["d plain pynetdicom C-STORE loop (disk) -> storescp, 1 assoc."] = repeat(
                "plain pynetdicom", k, lambda i: run_plain(work, files, n, i), mb, args.quiet_wait
            )
        if "c" not in skip:
            for threads, spool, label in (
                (1, False, "sequential"),
                (4, False, "4 threads"),
                (1, True, "sequential, spooled to a temp file"),
            ):
                results[f"c boto3 get_object <- moto, {label}"] = repeat(
                    f"s3 get {label}",
                    k,
                    lambda i, t=threads, s=spool: run_s3_get(moto, client, keys, t, s),
                    mb,
                    args.quiet_wait,
                )
        if args.profile:
            prof = OUT_DIR / f"forwarder-{time.strftime('%Y%m%d-%H%M%S')}.speedscope.json"
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            a = assocs[-1] if args.profile_associations is None else args.profile_associations
            r = run_forwarder(args, work, moto, client, study_uid, n, a, "prof", profile=prof)
            log(
                f"profiled forward ({a} assoc.): {r['seconds']:.2f}s (py-spy overhead "
                f"included) -> {prof}"
            )
        rows = summarise(results, total)
        md, cpu_md = table(rows), cpu_table(rows)
        print(f"\n{n} instances x {args.rows}x{args.cols} x 16 bit, {mb:.1f} MB, median of {k}\n")
        print(md)
        print("\nCPU seconds per run (medians; storescp includes its forked children)\n")
        print(cpu_md)
        path = rb.write_json(
            "forward",
            {
                "args": vars(args),
                "machine": rb.machine(),
                "versions": rb.versions(),
                "instances": n,
                "rows": args.rows,
                "cols": args.cols,
                "total_bytes": total,
                "warmup_dcmsend_s": warm,
                "results": results,
                "summary": rows,
                "markdown": md,
                "cpu_markdown": cpu_md,
            },
        )
        print(f"\nraw numbers: {path.relative_to(ROOT)}")
    finally:
        moto.stop()
        if args.keep_work:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        if not args.keep_dir:
            shutil.rmtree(cache, ignore_errors=True)


def parse_variant(value: str) -> tuple[str, dict[str, str]]:
    """`NAME:KEY=VALUE,KEY=VALUE` (the env list may be empty)."""
    name, _, env = value.partition(":")
    pairs = [rb.parse_env(e) for e in env.split(",") if e]
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise argparse.ArgumentTypeError("expected NAME:KEY=VALUE,...")
    return name, dict(pairs)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_plain-scu":
        return plain_scu_main(int(sys.argv[2]), sys.argv[3])
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--cols", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3, help="K: runs per path (median reported)")
    p.add_argument(
        "--associations",
        default="1,2,4",
        help="peer max_associations values to run the forwarder with",
    )
    p.add_argument(
        "--keep-dir",
        help="cache the generated study here (shared with bench/retrieve.py's --keep-dir)",
    )
    p.add_argument("--keep-work", action="store_true", help="keep logs and work files")
    p.add_argument(
        "--skip", nargs="*", default=[], choices=["a", "b", "c", "d"], help="paths to leave out"
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=600.0,
        help="before each timed run, wait up to this many seconds while another "
        "benchmark (bench/lookup.py, bench/retrieve.py) or pytest runs; 0: never",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="one extra forward under py-spy; speedscope JSON in bench/out/",
    )
    p.add_argument(
        "--profile-associations",
        type=int,
        default=None,
        help="max_associations of the profiled forward (default: the last value)",
    )
    p.add_argument(
        "--py-spy",
        default=shutil.which("py-spy"),
        help="py-spy executable, e.g. $(uv run --with py-spy which py-spy)",
    )
    p.add_argument(
        "--forwarder-env",
        type=rb.parse_env,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the forwarder process",
    )
    p.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=None,
        metavar="NAME:KEY=VALUE,...",
        help="run path a once per variant, with this extra environment (levers "
        "in a patched copy: see --forwarder-pythonpath); repeatable",
    )
    p.add_argument(
        "--forwarder-pythonpath",
        help="PYTHONPATH for the forwarder (a patched copy of the sources)",
    )
    args = p.parse_args()
    throughput(args)
    return None


if __name__ == "__main__":
    main()
