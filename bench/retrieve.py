#!/usr/bin/env python
"""Retrieval throughput benchmark: the dicom-iso retriever against dcmtk, on loopback.

Run by hand (never collected by pytest), from the repository root:

    uv run python bench/retrieve.py                          # 1,000 x 512x512 CT, 3 repeats
    uv run python bench/retrieve.py --keep-dir /tmp/bench    # cache study + Orthanc DB
    uv run python bench/retrieve.py --memory                 # peak RSS, 200 vs 2,000 instances

One run generates a synthetic CT series (tests/support/studies.make_ct_series), loads it once
into a private Orthanc (the PACS), and times, K times each:

  a  retriever     POST /v1/retrievals -> state "succeeded": C-FIND, C-MOVE into the
                   retriever's Storage SCP, PUT of every instance to S3 (moto), manifest.
                   The retriever runs as a subprocess (`.venv/bin/dicomiso-retriever`), with
                   a fresh bucket and a fresh process per repeat.
  b  dcmtk         `movescu` (study root) -> Orthanc -> `storescp` writing to local disk.
  c  S3 ceiling    boto3 put_object of the same files into the same moto server:
                   sequential, and from a pool of 4 and 8 threads.
  e  retriever     the same, by DICOMweb: QIDO-RS, one WADO-RS of the study (transfer-syntax
     (dicomweb)    *, streamed multipart), each part through the SCP's checks, PUT to S3.
  d  pynetdicom    a minimal pynetdicom Storage SCP (chunked spool + rename into a
                   directory, no S3), driven by `movescu -aem`: the floor of the DICOM side.

The S3 endpoint is a moto ThreadedMotoServer in its own process on a free loopback port,
so neither the retriever nor the boto3 client of (c) shares a GIL with it.

Throughput is the sum of the Part 10 file sizes (10^6 bytes = 1 MB) divided by the wall
time. Every process started here is stopped by its PID. Results: a Markdown table on stdout
and the raw numbers as JSON in bench/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
LOOPBACK = "127.0.0.1"
RETRIEVER_AET = "CDRECORD"
DCMTK_SCP_AET = "DCMTKSCP"
PLAIN_SCP_AET = "PLAINSCP"
MOVESCU_AET = "BENCHSCU"

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------


def stop_pid(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM by PID, then SIGKILL by PID (the harness's helper)."""
    from support.dcmtk import terminate

    terminate(proc, timeout)


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """Live processes below `pid` (the retriever's receiver workers, DICOMISO_SCP_WORKERS)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds a process (all its threads) and the processes it started
    (live ones, and those it has reaped) have used so far."""
    if pid is None:
        return 0.0
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for child in descendants(pid):
        if (kid := _stat(child)) is not None:
            ticks += int(kid[11]) + int(kid[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by named processes between enter and exit (`.used`)."""

    def __init__(self, **pids: int | None) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._start = {k: cpu_s(p) for k, p in self.pids.items()}
        self._t0 = time.perf_counter()
        _STAT0[self._t0] = cpu_totals()
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {k: round(cpu_s(p) - self._start[k], 2) for k, p in self.pids.items()}
        self.used["wall"] = round(time.perf_counter() - self._t0, 2)
        self.used["machine_busy"] = round(machine_busy(self._t0), 2)


_STAT0: dict[float, tuple[int, int]] = {}


def cpu_totals() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def machine_busy(key: float) -> float:
    """CPUs busy on average since `mark_machine(key)` (0..nproc), all processes included."""
    busy0, total0 = _STAT0.pop(key, (0, 0))
    busy1, total1 = cpu_totals()
    if total1 == total0:
        return 0.0
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


class RssSampler:
    """Polls /proc/<pid>/status (VmRSS) every `interval` s; VmHWM read at the end."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def status(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:", "Threads:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, self.status()["VmRSS"])
                self.samples += 1
            except (OSError, KeyError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the S3 endpoint ---------------------------------------------------------------------


def moto_main(port: int) -> None:
    """Hidden mode `--_moto PORT`: a ThreadedMotoServer until SIGTERM."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()


class Moto:
    script = __file__  # run as `SCRIPT --_moto PORT` (bench/e2e.py: its counting server)

    def __init__(self, work: Path) -> None:
        from support.net import free_port

        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = work / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, self.script, "--_moto", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=s3_env(),
            )
        wait_http(f"{self.url}/moto-api/", proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None

    def reset(self) -> None:
        """Drop every bucket and object (moto keeps them in memory)."""
        import httpx

        httpx.post(f"{self.url}/moto-api/reset", timeout=60, trust_env=False).raise_for_status()

    def client(self) -> Any:
        os.environ.update(s3_env())
        from dicomiso_common.store import _make_client

        return _make_client(self.url)  # the retriever's own client configuration

    def fresh_bucket(self, name: str) -> Any:
        self.reset()
        client = self.client()
        client.create_bucket(Bucket=name)
        return client


def s3_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(proxy, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def count_objects(client: Any, bucket: str, prefix: str) -> int:
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        n += len(page.get("Contents", ()))
    return n


def stored_instances(client: Any, bucket: str, accession: str) -> int:
    """Instances the manifests of the accession's studies list (0: no manifest)."""
    from dicomiso_common.dicom import accession_key, manifest_key

    def read(key: str) -> Any:
        try:
            return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except client.exceptions.NoSuchKey:
            return None

    index = read(accession_key(accession)) or {}
    manifests = [read(manifest_key(uid)) for uid in index.get("study_uids", ())]
    return sum(int(m["instance_count"]) for m in manifests if m)


def s3_requests(records: list[dict[str, Any]]) -> dict[str, int]:
    """S3 requests of one retrieval by verb and key prefix (bench/e2e.py's counting server)."""
    from e2e import classify

    out: dict[str, int] = {"total": len(records)}
    for rec in records:
        verb, prefix = classify(rec)
        out[f"{verb} {prefix}"] = out.get(f"{verb} {prefix}", 0) + 1
    return out


# -- the PACS ------------------------------------------------------------------------------


def study_files(
    cache: Path, n: int, rows: int, cols: int, accession: str
) -> tuple[str, list[Path]]:
    """Generate (or reuse) one CT series; returns (study uid, files)."""
    from support.studies import make_ct_series

    meta = cache / "study.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        files = [cache / f for f in info["files"]]
        if info["accession"] == accession and len(files) == n and all(f.exists() for f in files):
            log(f"reusing {n} generated instances in {cache}")
            return str(info["study_uid"]), files
        shutil.rmtree(cache)
    log(f"generating {n} x {rows}x{cols} CT instances in {cache}")
    study = make_ct_series(cache, n, rows=rows, cols=cols, accession=accession)
    meta.write_text(
        json.dumps(
            {
                "study_uid": study.study_uid,
                "accession": accession,
                "files": [p.name for p in study.files],
            }
        )
    )
    return study.study_uid, study.files


def load_pacs(orthanc: Any, study_uid: str, files: list[Path]) -> float:
    """Store a study in Orthanc unless it already holds it (4 REST uploads in flight)."""
    have = len(orthanc.instance_ids_of_study(study_uid))
    if have == len(files):
        log(f"Orthanc already holds {have} instances of the study")
        return 0.0
    log(f"loading {len(files)} instances into Orthanc (had {have})")
    started = time.monotonic()

    def one(path: Path) -> None:
        r = orthanc.http.post(
            "/instances",
            content=path.read_bytes(),
            headers={"Content-Type": "application/dicom"},
            timeout=120,
        )
        r.raise_for_status()
        if r.json().get("Status") not in ("Success", "AlreadyStored"):
            raise RuntimeError(f"Orthanc refused {path}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, files))
    seconds = time.monotonic() - started
    have = len(orthanc.instance_ids_of_study(study_uid))
    if have != len(files):
        raise RuntimeError(f"Orthanc holds {have} of {len(files)} instances")
    log(
        f"loaded in {seconds:.1f}s ({sum(f.stat().st_size for f in files) / seconds / 1e6:.1f}"
        " MB/s)"
    )
    return seconds


# -- (a) the retriever ---------------------------------------------------------------------


class RetrieverProc:
    """`.venv/bin/dicomiso-retriever` as a subprocess, configured by DICOMISO_* variables."""

    def __init__(
        self,
        work: Path,
        moto: Moto,
        orthanc: Any,
        bucket: str,
        *,
        extra_env: dict[str, str],
        pythonpath: str | None,
        profile: Path | None,
        tag: str,
        py_spy: str | None = None,
    ) -> None:
        from support.net import free_port

        self.http_port, self.scp_port = free_port(), free_port()
        self.url = f"http://{LOOPBACK}:{self.http_port}"
        env = s3_env()
        env.update(
            {
                "DICOMISO_S3_ENDPOINT_URL": moto.url,
                "DICOMISO_S3_BUCKET": bucket,
                "DICOMISO_PACS_AET": orthanc.aet,
                "DICOMISO_PACS_HOST": LOOPBACK,
                "DICOMISO_PACS_PORT": str(orthanc.dicom_port),
                "DICOMISO_SCP_AET": RETRIEVER_AET,
                "DICOMISO_SCP_HOST": LOOPBACK,
                "DICOMISO_SCP_PORT": str(self.scp_port),
                "DICOMISO_HTTP_HOST": LOOPBACK,
                "DICOMISO_HTTP_PORT": str(self.http_port),
                "DICOMISO_LOG_LEVEL": "WARNING",
                "DICOMISO_REPLICA_ID": f"bench-{tag}",
            }
        )
        env.update(extra_env)
        if pythonpath:  # a patched copy of the sources shadows the editable install
            env["PYTHONPATH"] = pythonpath
        cmd = [str(ROOT / ".venv" / "bin" / "dicomiso-retriever")]
        if profile is not None:  # py-spy starts the retriever and samples it until it exits
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
        self.log_path = work / f"retriever-{tag}.log"
        self.profiling = profile is not None
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work
            )
        orthanc.register_modality(RETRIEVER_AET, LOOPBACK, self.scp_port)
        wait_http(f"{self.url}/readyz", timeout=60, proc=self.proc)

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

    def retrieve(self, accession: str, timeout: float = 900.0) -> dict[str, Any]:
        import httpx

        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as http:
            started = time.perf_counter()
            r = http.post("/v1/retrievals", json={"accession_numbers": [accession]})
            r.raise_for_status()
            job = r.json()["id"]
            while True:
                status = http.get(f"/v1/retrievals/{job}").json()
                if status["state"] in ("succeeded", "failed"):
                    break
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"retrieval still {status['state']} after {timeout}s")
                time.sleep(0.1)  # each poll is an S3 GET in the service: keep it rare
            status["seconds"] = time.perf_counter() - started
        return dict(status)

    def stop(self) -> None:
        if self.profiling:  # stop the service; py-spy writes its profile and exits
            with contextlib.suppress(ProcessLookupError, RuntimeError):
                os.kill(self.service_pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stop_pid(self.proc)
        else:
            stop_pid(self.proc)


def run_retriever(
    args: argparse.Namespace,
    work: Path,
    moto: Moto,
    orthanc: Any,
    accession: str,
    n: int,
    tag: str,
    profile: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    bucket = f"bench-{tag}".lower().replace("_", "-")
    client = moto.fresh_bucket(bucket)
    rp = RetrieverProc(
        work,
        moto,
        orthanc,
        bucket,
        extra_env={**dict(args.retriever_env), **(extra_env or {})},
        pythonpath=args.retriever_pythonpath,
        profile=profile,
        tag=tag,
        py_spy=args.py_spy,
    )
    requests = getattr(moto, "requests", None)  # the counting server (--count-requests)
    try:
        sampler = RssSampler(rp.service_pid)
        before = sampler.status()
        if requests:
            requests()  # drop the set-up's requests
        with (
            sampler,
            CpuMeter(
                retriever=rp.service_pid,
                moto=moto.proc.pid if moto.proc else None,
                orthanc=orthanc.pid,
            ) as cpu,
        ):
            status = rp.retrieve(accession)
        after = sampler.status()
        recorded = requests() if requests else []
    finally:
        rp.stop()
    stored = stored_instances(client, bucket, accession)
    if status["state"] != "succeeded" or stored != n:
        raise RuntimeError(
            f"retrieval {tag}: {status['state']} {status.get('error')}, "
            f"{stored}/{n} instances in the manifest; see {rp.log_path}"
        )
    return {
        "seconds": status["seconds"],
        "objects": stored,
        "segments": count_objects(client, bucket, "segments/"),
        "s3_requests": s3_requests(recorded) if requests else None,
        "counts": status["counts"],
        "rss_before_kb": before["VmRSS"],
        "rss_peak_kb": max(sampler.peak_kb, after["VmRSS"]),
        "vmhwm_kb": after["VmHWM"],
        "threads_after": after["Threads"],
        "rss_samples": sampler.samples,
        "cpu_s": cpu.used,
    }


# -- (b) dcmtk, (d) plain pynetdicom -------------------------------------------------------


def movescu(orthanc: Any, dest_aet: str, study_uid: str, log_path: Path) -> float:
    from support.dcmtk import dcmtk_bin, dcmtk_env

    cmd = [
        dcmtk_bin("movescu"),
        "-aet",
        MOVESCU_AET,
        "-aec",
        orthanc.aet,
        "-aem",
        dest_aet,
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
        LOOPBACK,
        str(orthanc.dicom_port),
    ]
    started = time.perf_counter()
    with log_path.open("ab") as out:
        rc = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=dcmtk_env(), check=False
        ).returncode
    seconds = time.perf_counter() - started
    if rc != 0:
        raise RuntimeError(f"movescu exited {rc}; see {log_path}")
    return seconds


def run_dcmtk(work: Path, orthanc: Any, study_uid: str, n: int, i: int) -> dict[str, Any]:
    from support.dcmtk import StoreSCP

    out = work / f"storescp-{i}"
    scp = StoreSCP(out, aet=DCMTK_SCP_AET, log_path=work / "storescp.log")
    scp.start()
    try:
        orthanc.register_modality(DCMTK_SCP_AET, LOOPBACK, scp.port)
        with CpuMeter(storescp=scp.pid, orthanc=orthanc.pid) as cpu:
            seconds = movescu(orthanc, DCMTK_SCP_AET, study_uid, work / "movescu.log")
    finally:
        scp.stop()
    got = len(scp.files())
    shutil.rmtree(out)
    if got != n:
        raise RuntimeError(f"storescp received {got}/{n}")
    return {"seconds": seconds, "files": got, "cpu_s": cpu.used}


def plain_scp_main(port: int, out_dir: str, max_pdu: int) -> None:
    """Hidden mode `--_plain-scp PORT DIR MAXPDU`: the smallest useful pynetdicom SCP."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

    from dicomiso_common.dicom import CONNECTION_HANDLERS, configure

    configure()  # quiet logs, C-STORE received into files
    target = Path(out_dir)

    def on_store(event: evt.Event) -> int:
        sop = getattr(event.request, "AffectedSOPInstanceUID", "")  # a C-STORE request
        os.replace(event.dataset_path, target / f"{sop}.dcm")
        return 0x0000

    ae = AE(ae_title=PLAIN_SCP_AET)
    ae.maximum_pdu_size = max_pdu
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(
        (LOOPBACK, port),
        block=False,
        evt_handlers=[*CONNECTION_HANDLERS, (evt.EVT_C_STORE, on_store)],  # TCP_NODELAY
    )
    assert server is not None  # block=False always returns the server
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.shutdown()


def run_plain(
    work: Path, orthanc: Any, study_uid: str, n: int, i: int, max_pdu: int
) -> dict[str, Any]:
    from support.net import free_port, wait_for_port

    out = work / f"plain-{i}"
    out.mkdir()
    port = free_port()
    env = dict(os.environ, TMPDIR=str(out))  # spool on the same file system as the target
    with (work / "plain-scp.log").open("ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--_plain-scp", str(port), str(out), str(max_pdu)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for_port(LOOPBACK, port, timeout=30)
        orthanc.register_modality(PLAIN_SCP_AET, LOOPBACK, port)
        with CpuMeter(scp=proc.pid, orthanc=orthanc.pid) as cpu:
            seconds = movescu(orthanc, PLAIN_SCP_AET, study_uid, work / "movescu.log")
    finally:
        stop_pid(proc)
    got = len(list(out.glob("*.dcm")))
    shutil.rmtree(out)
    if got != n:
        raise RuntimeError(f"plain pynetdicom SCP received {got}/{n}")
    return {"seconds": seconds, "files": got, "cpu_s": cpu.used}


# -- (c) the S3 ceiling --------------------------------------------------------------------


def run_s3(moto: Moto, files: list[Path], threads: int, i: int) -> dict[str, Any]:
    bucket = f"bench-s3-{threads}-{i}"
    client = moto.fresh_bucket(bucket)

    def put(path: Path) -> None:
        with path.open("rb") as fh:
            client.put_object(
                Bucket=bucket,
                Key=f"instances/{path.name}",
                Body=fh,
                ContentType="application/dicom",
                IfNoneMatch="*",
                Metadata={"transfer-syntax": "1.2.840.10008.1.2.1"},
            )

    started = time.perf_counter()
    with CpuMeter(client=os.getpid(), moto=moto.proc.pid if moto.proc else None) as cpu:
        if threads <= 1:
            for path in files:
                put(path)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(put, files))
    seconds = time.perf_counter() - started
    got = count_objects(client, bucket, "instances/")
    if got != len(files):
        raise RuntimeError(f"S3 holds {got}/{len(files)}")
    return {"seconds": seconds, "objects": got, "cpu_s": cpu.used}


# -- reporting -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024**2, 1),
        "loadavg": os.getloadavg(),
        "kernel": platform.release(),
        "cpu": cpu,
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    import boto3
    import moto
    import pydicom
    import pynetdicom

    out = {
        "pydicom": pydicom.__version__,
        "pynetdicom": pynetdicom.__version__,
        "boto3": boto3.__version__,
        "moto": moto.__version__,
    }
    with contextlib.suppress(Exception):
        from support.dcmtk import dcmtk_bin

        text = subprocess.run(
            [dcmtk_bin("movescu"), "--version"], capture_output=True, text=True, check=False
        ).stdout
        out["dcmtk"] = text.split("\n")[0].strip()
    with contextlib.suppress(Exception):
        text = subprocess.run(
            ["/usr/sbin/Orthanc", "--version"], capture_output=True, text=True, check=False
        ).stdout
        out["orthanc"] = text.split("\n")[0].strip()
    return out


def summarise(results: dict[str, list[dict[str, Any]]], total_bytes: int) -> list[dict[str, Any]]:
    rows = []
    for name, runs in results.items():
        secs = [r["seconds"] for r in runs]
        med = statistics.median(secs)
        rows.append(
            {
                "path": name,
                "median_s": med,
                "min_s": min(secs),
                "max_s": max(secs),
                "mb_s": total_bytes / med / 1e6,
                "runs": secs,
            }
        )
    ref = next((r for r in rows if r["path"].startswith("b ")), None)
    for r in rows:
        r["vs_dcmtk"] = r["mb_s"] / ref["mb_s"] if ref else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path | median s | min-max s | MB/s | throughput vs dcmtk |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['vs_dcmtk']:.2f}x" if r["vs_dcmtk"] is not None else "-"
        lines.append(
            f"| {r['path']} | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f}"
            f" | {r['mb_s']:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def write_json(kind: str, data: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


# -- modes ---------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(args: argparse.Namespace) -> Iterator[tuple[Path, Path, Any, Moto]]:
    """(work dir, cache dir, running Orthanc, running moto); everything stopped on exit."""
    from support.orthanc import Orthanc

    if args.keep_dir:
        cache = Path(args.keep_dir).resolve()
        cache.mkdir(parents=True, exist_ok=True)
    else:
        cache = Path(tempfile.mkdtemp(prefix="dicomiso-bench-cache-"))
    work = Path(tempfile.mkdtemp(prefix="dicomiso-bench-"))
    orthanc = Orthanc(
        cache / "orthanc",
        aet="ABPACS",
        extra_config={k: json.loads(v) for k, v in args.orthanc_config},
        dicomweb=True,  # path e; the DICOM paths do not touch the plugin
    )
    moto = Moto(work)
    try:
        orthanc.start(timeout=120)
        orthanc.register_modality(MOVESCU_AET, LOOPBACK, 1)  # calling AE of movescu only
        moto.start()
        yield work, cache, orthanc, moto
    finally:
        moto.stop()
        orthanc.stop()
        if args.keep_work:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        if not args.keep_dir:
            shutil.rmtree(cache, ignore_errors=True)


def repeat(
    name: str, k: int, fn: Callable[[int], dict[str, Any]], mb: float
) -> list[dict[str, Any]]:
    runs = []
    for i in range(k):
        r = fn(i)
        log(
            f"{name} #{i + 1}: {r['seconds']:.2f}s ({mb / r['seconds']:.0f} MB/s) "
            f"cpu {r.get('cpu_s')}"
        )
        runs.append(r)
    return runs


def throughput_mode(args: argparse.Namespace) -> None:
    n, k = args.instances, args.repeat
    accession = f"BENCH{n}X{args.rows}"[:16]
    with environment(args) as (work, cache, orthanc, moto):
        study_uid, files = study_files(
            cache / f"ct-{n}x{args.rows}x{args.cols}", n, args.rows, args.cols, accession
        )
        total = sum(f.stat().st_size for f in files)
        mb = total / 1e6
        load_s = load_pacs(orthanc, study_uid, files)
        # Warm the page cache of Orthanc's storage and of our files, untimed.
        movescu_warm = run_dcmtk(work, orthanc, study_uid, n, -1)["seconds"]
        log(f"warm-up move: {movescu_warm:.2f}s; study {n} instances, {mb:.1f} MB")
        results: dict[str, list[dict[str, Any]]] = {}
        skip = set(args.skip)
        if "b" not in skip:
            results["b dcmtk movescu -> storescp (disk)"] = repeat(
                "dcmtk", k, lambda i: run_dcmtk(work, orthanc, study_uid, n, i), mb
            )
        web = {
            "DICOMISO_RETRIEVE_METHOD": "dicomweb",
            "DICOMISO_PACS_DICOMWEB_URL": orthanc.dicomweb_url,
        }
        ours = {
            "a retriever (C-MOVE -> SCP -> S3 PUT, POST to succeeded)": (
                "retriever",
                lambda i: run_retriever(args, work, moto, orthanc, accession, n, f"a{i}"),
            ),
            "e retriever (QIDO-RS + WADO-RS -> SCP checks -> S3 PUT)": (
                "retriever dicomweb",
                lambda i: run_retriever(
                    args, work, moto, orthanc, accession, n, f"e{i}", extra_env=web
                ),
            ),
        }
        ours = {k2: v for k2, v in ours.items() if k2[0] not in skip}
        if args.alternate:  # a, e, a, e, ...: both paths see the same drift in machine load
            for i in range(k):
                for label, (name, fn) in ours.items():
                    one = functools.partial(lambda fn, i, _: fn(i), fn, i)
                    results.setdefault(label, []).extend(repeat(name, 1, one, mb))
        else:
            for label, (name, fn) in ours.items():
                results[label] = repeat(name, k, fn, mb)
        if "d" not in skip:
            results["d plain pynetdicom SCP (disk, no S3)"] = repeat(
                "plain pynetdicom",
                k,
                lambda i: run_plain(work, orthanc, study_uid, n, i, args.plain_max_pdu),
                mb,
            )
        if "c" not in skip:
            for threads in (1, 4, 8):
                label = "sequential" if threads == 1 else f"{threads} threads"
                results[f"c boto3 put_object -> moto, {label}"] = repeat(
                    f"s3 {label}", k, functools.partial(run_s3, moto, files, threads), mb
                )
        if args.profile:
            prof = OUT_DIR / f"retriever-{time.strftime('%Y%m%d-%H%M%S')}.speedscope.json"
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            env = web if args.profile == "e" else None
            r = run_retriever(
                args, work, moto, orthanc, accession, n, "prof", profile=prof, extra_env=env
            )
            log(f"profiled retrieval: {r['seconds']:.2f}s (py-spy overhead included) -> {prof}")
        rows = summarise(results, total)
        md = table(rows)
        print(f"\n{n} instances x {args.rows}x{args.cols} x 16 bit, {mb:.1f} MB, median of {k}\n")
        print(md)
        ours_md = retriever_table(results)
        if ours_md:
            print(f"\nour retriever, medians of {k} (min-max)\n\n{ours_md}")
        path = write_json(
            "retrieve",
            {
                "mode": "throughput",
                "args": vars(args),
                "machine": machine(),
                "versions": versions(),
                "instances": n,
                "rows": args.rows,
                "cols": args.cols,
                "total_bytes": total,
                "orthanc_load_s": load_s,
                "warmup_move_s": movescu_warm,
                "results": results,
                "summary": rows,
                "markdown": md,
                "retriever_markdown": ours_md,
            },
        )
        print(f"\nraw numbers: {path.relative_to(ROOT)}")


def retriever_table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Paths a and e side by side: wall, CPU s per process, peak RSS, S3 requests."""

    def cell(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float]) -> str:
        values = [get(r) for r in runs]
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    lines = [
        "| path | wall s | retriever CPU s | moto CPU s | Orthanc CPU s | machine busy CPUs "
        "| peak RSS MiB | segments | S3 requests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, runs in results.items():
        if label[0] not in "ae" or not runs:
            continue
        reqs = [r["s3_requests"]["total"] for r in runs if r.get("s3_requests")]
        lines.append(
            f"| {label} | {cell(runs, lambda r: r['seconds'])}"
            + "".join(
                f" | {cell(runs, functools.partial(lambda key, r: r['cpu_s'][key], key))}"
                for key in ("retriever", "moto", "orthanc", "machine_busy")
            )
            + f" | {max(r['rss_peak_kb'] for r in runs) / 1024:.0f}"
            + f" | {statistics.median(r['segments'] for r in runs):.0f}"
            + (f" | {statistics.median(reqs):.0f} |" if reqs else " | - |")
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def memory_mode(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.memory_sizes.split(",")]
    rows_px = args.memory_rows
    out: list[dict[str, Any]] = []
    with environment(args) as (work, cache, orthanc, moto):
        studies = {}
        for n in sizes:
            accession = f"MEM{n}X{rows_px}"[:16]
            uid, files = study_files(
                cache / f"ct-{n}x{rows_px}x{rows_px}", n, rows_px, rows_px, accession
            )
            load_pacs(orthanc, uid, files)
            studies[n] = (accession, sum(f.stat().st_size for f in files))
        for n in sizes:
            accession, total = studies[n]
            for i in range(args.repeat if args.memory_repeat is None else args.memory_repeat):
                r = run_retriever(args, work, moto, orthanc, accession, n, f"m{n}-{i}")
                r.update(instances=n, total_bytes=total)
                log(
                    f"memory {n}: {r['seconds']:.2f}s, RSS {r['rss_before_kb'] / 1024:.0f} -> "
                    f"peak {r['rss_peak_kb'] / 1024:.0f} MiB (VmHWM "
                    f"{r['vmhwm_kb'] / 1024:.0f} MiB)"
                )
                out.append(r)
    lines = [
        "| instances | study MB | seconds | RSS before POST MiB | peak RSS MiB "
        "| growth MiB | VmHWM MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        runs = [r for r in out if r["instances"] == n]
        med = statistics.median
        lines.append(
            f"| {n} | {runs[0]['total_bytes'] / 1e6:.1f} | {med(r['seconds'] for r in runs):.2f}"
            f" | {med(r['rss_before_kb'] for r in runs) / 1024:.0f}"
            f" | {max(r['rss_peak_kb'] for r in runs) / 1024:.0f}"
            f" | {max(r['rss_peak_kb'] - r['rss_before_kb'] for r in runs) / 1024:.0f}"
            f" | {max(r['vmhwm_kb'] for r in runs) / 1024:.0f} |"
        )
    md = "\n".join(lines)
    print(f"\nretriever memory, {rows_px}x{rows_px} CT, RSS sampled every 10 ms\n")
    print(md)
    path = write_json(
        "memory",
        {
            "mode": "memory",
            "args": vars(args),
            "machine": machine(),
            "versions": versions(),
            "runs": out,
            "markdown": md,
        },
    )
    print(f"\nraw numbers: {path.relative_to(ROOT)}")


def parse_env(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return key, val


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_moto":
        return moto_main(int(sys.argv[2]))
    if len(sys.argv) > 1 and sys.argv[1] == "--_plain-scp":
        return plain_scp_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--cols", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3, help="K: runs per path (median reported)")
    p.add_argument(
        "--keep-dir",
        help="cache generated studies and Orthanc's database here (reused by the next run)",
    )
    p.add_argument("--keep-work", action="store_true", help="keep logs and work files")
    p.add_argument(
        "--alternate", action="store_true", help="run paths a and e in turn, not a K times first"
    )
    p.add_argument(
        "--count-requests",
        action="store_true",
        help="S3 through bench/e2e.py's counting moto server: requests per retrieval",
    )
    p.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["a", "b", "c", "d", "e"],
        help="paths to leave out",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="instead: retriever peak RSS for --memory-sizes instances",
    )
    p.add_argument("--memory-sizes", default="200,2000")
    p.add_argument("--memory-rows", type=int, default=128, help="rows = cols in --memory")
    p.add_argument("--memory-repeat", type=int, default=None, help="default: --repeat")
    p.add_argument(
        "--profile",
        nargs="?",
        const="a",
        choices=["a", "e"],
        help="one extra retrieval (path a, or e) under py-spy; speedscope JSON in bench/out/",
    )
    p.add_argument(
        "--py-spy",
        default=shutil.which("py-spy"),
        help="py-spy executable, e.g. $(uv run --with py-spy which py-spy)",
    )
    p.add_argument(
        "--retriever-env",
        type=parse_env,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the retriever process",
    )
    p.add_argument(
        "--retriever-pythonpath",
        help="PYTHONPATH for the retriever (a patched copy of the sources)",
    )
    p.add_argument(
        "--orthanc-config",
        type=parse_env,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="extra Orthanc option, e.g. MaximumPduLength=131072",
    )
    p.add_argument("--plain-max-pdu", type=int, default=1_048_576)
    args = p.parse_args()
    if args.count_requests:
        global Moto  # noqa: PLW0603 - environment() then starts the counting server
        from e2e import CountedMoto

        Moto = CountedMoto  # type: ignore[misc]
    if args.memory:
        memory_mode(args)
    else:
        throughput_mode(args)
    return None


if __name__ == "__main__":
    main()
