#!/usr/bin/env python
"""End to end: accession number -> download link, against the native tools and the legacy
pattern, on one private Orthanc, with every S3 request counted.

Run by hand (never collected by pytest), from the repository root:

    uv run --frozen python bench/e2e.py --keep-dir /tmp/e2e-keep               # 1,000 x 512x512
    uv run --frozen python bench/e2e.py --keep-dir /tmp/e2e-keep --sizes 10 100 1000 3000
    uv run --frozen python bench/e2e.py --cli-only                              # CLI start-up

For each study size, the three paths run alternating (a b c, a b c, ...), `--repeat` times:

  a  ours     lookup, retriever and packager as subprocesses (.venv/bin/dicomiso-*), the
              lookup reading a bench HIS in the local MariaDB through a SELECT-only user
              (`--his pacs`: its PACS fallback), a moto server as S3 in its own process,
              a fresh bucket and fresh services per run. Timed from `POST /v1/packages` to
              state "succeeded", polling the status every `--poll` s.
  b  native   movescu -> storescp (local disk), files renamed to DICOM file IDs, dcmmkdir
              -Pgp +r, genisoimage, sync.
  c  legacy   the PHP scripts' pattern (/work/shared/seed/mkiso-analysis.md): one C-MOVE
              per modality code (14), of which one moves the study (by accession number)
              and 13 match nothing, into storescp; then genisoimage of the received files.
  d  ours, ISO only (`--iso-only`): path a without the online page (no ZIP beside the ISO).
  e  path d with `--variant-env KEY=VALUE` in the retriever's environment (a setting
              measured against the same code without it, alternating in one run).

The moto server runs here (`--_moto PORT`) behind a WSGI middleware that records, per S3
request, the time, verb, key, bytes and the handler thread's CPU seconds; each service signs
with its own access key id, so every request is attributed to its caller. CPU seconds per
process come from /proc (bench/retrieve.py), the dcmtk tools' from wait4 rusage, peak RSS
from VmHWM. Raw numbers: bench/out/e2e-*.json; a Markdown report on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import forward as fb  # noqa: E402  (wait for a quiet machine)
import retrieve as rb  # noqa: E402  (moto, Orthanc environment, CPU meter, study cache)

LOOPBACK, log = rb.LOOPBACK, rb.log
VENV = ROOT / ".venv" / "bin"
SCP_AET = rb.DCMTK_SCP_AET
MODALITIES = ("CR", "CT", "MR", "US", "NM", "PET", "SC", "XA", "XRF", "DX", "MG", "PR", "KO", "SR")
SEGMENT = 32 << 20  # the "segment" lever: instances appended to objects of 32 MiB


# -- the counting S3 server (`--_moto PORT`) ------------------------------------------------


class RequestLog:
    """WSGI middleware: one record per request; GET /_e2e/requests hands them over."""

    def __init__(self, app: Any) -> None:
        self.app, self.lock = app, threading.Lock()
        self.records: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/_e2e/requests":
            with self.lock:
                out, self.records = self.records, []
            body = json.dumps(out).encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        t0, c0, status = time.time(), time.thread_time(), [0]

        def respond(s: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = int(s.split()[0])
            return start_response(s, headers, exc_info)

        body = self.app(environ, respond)
        auth = environ.get("HTTP_AUTHORIZATION", "")
        who = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else "-"

        def stream() -> Iterator[bytes]:
            sent = 0
            try:
                for chunk in body:
                    sent += len(chunk)
                    yield chunk
            finally:
                getattr(body, "close", lambda: None)()
                rec = {
                    "t": t0,
                    "wall": time.time() - t0,
                    "cpu": time.thread_time() - c0,
                    "method": environ["REQUEST_METHOD"],
                    "path": environ["PATH_INFO"],
                    "query": environ.get("QUERY_STRING", ""),
                    "status": status[0],
                    "bytes_in": int(environ.get("CONTENT_LENGTH") or 0),
                    "bytes_out": sent,
                    "who": who,
                }
                with self.lock:
                    self.records.append(rec)

        return stream()


def moto_main(port: int) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = RequestLog(DomainDispatcherApplication(create_backend_app))
    server = make_server(LOOPBACK, port, app, True, request_handler=MotoRequestHandler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


class CountedMoto(rb.Moto):
    """bench/retrieve.py's moto process, started from this file (the counting server)."""

    script = __file__

    def requests(self) -> list[dict[str, Any]]:
        import httpx

        return list(httpx.get(f"{self.url}/_e2e/requests", timeout=60, trust_env=False).json())


class LocalStackS3(rb.Moto):
    """LocalStack's S3 (`--s3 localstack`): the other S3 implementation on this machine, to
    tell what is moto's cost per byte from what we ask of S3. Same interface as the counting
    moto, but it counts nothing (the request tables come from moto runs); signature checks
    are off (LocalStack's default; the services sign with their own key ids)."""

    def start(self) -> None:
        from support.localstack import _BOOT, LOCALSTACK_PYTHON, s3_env

        home = self.log_path.parent / "localstack"
        home.mkdir(exist_ok=True)
        env = s3_env(home, self.port, verify_signatures=False)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [LOCALSTACK_PYTHON, "-c", _BOOT], env=env, cwd=home, stdout=out, stderr=out
            )
        rb.wait_http(f"{self.url}/_localstack/health", timeout=120, proc=self.proc)

    def reset(self) -> None:
        """Delete every object and bucket (LocalStack spools bodies to its temp dir)."""
        client = self.client()
        for bucket in client.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
                gone = [
                    {"Key": o["Key"], "VersionId": o["VersionId"]}
                    for o in page.get("Versions", []) + page.get("DeleteMarkers", [])
                ]
                if gone:
                    client.delete_objects(Bucket=name, Delete={"Objects": gone})
            for up in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
            client.delete_bucket(Bucket=name)

    def requests(self) -> list[dict[str, Any]]:
        return []


def classify(rec: dict[str, Any]) -> tuple[str, str]:
    """(verb class, key prefix) of one S3 request."""
    q = parse_qs(rec["query"], keep_blank_values=True)
    parts = rec["path"].split("/", 2)  # "", bucket, key
    key = parts[2] if len(parts) > 2 and parts[2] else q.get("prefix", [""])[0]
    prefix = key.split("/", 1)[0] + "/" if key else "(bucket)"
    m = rec["method"]
    if "uploads" in q:
        verb = "POST create-multipart" if m == "POST" else "GET list-uploads"
    elif "uploadId" in q:
        verb = {"PUT": "PUT part", "POST": "POST complete-multipart"}.get(m, f"{m} multipart")
    elif "list-type" in q:
        verb = "GET list"
    else:
        verb = m + (f" ?{next(iter(q))}" if q else "")
    return verb, prefix


def request_summary(recs: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, dict[str, float]] = defaultdict(lambda: {"n": 0, "cpu_s": 0.0, "bytes": 0})
    for r in recs:
        verb, prefix = classify(r)
        for key in (f"{verb} {prefix}", f"who:{r['who']}", f"prefix:{prefix}", "total"):
            by[key]["n"] += 1
            by[key]["cpu_s"] += r["cpu"]
            by[key]["bytes"] += r["bytes_in"] + r["bytes_out"]
    return {k: {**v, "cpu_s": round(v["cpu_s"], 3)} for k, v in sorted(by.items())}


# -- (a) ours ------------------------------------------------------------------------------


class Service:
    """`.venv/bin/dicomiso-NAME` on a free loopback port; it signs S3 requests as NAME."""

    def __init__(self, name: str, work: Path, env: dict[str, str]) -> None:
        from support.net import free_port

        self.name, port = name, free_port()
        self.url = f"http://{LOOPBACK}:{port}"
        full = {**rb.s3_env(), "AWS_ACCESS_KEY_ID": name, "DICOMISO_HTTP_HOST": LOOPBACK}
        full.update(DICOMISO_HTTP_PORT=str(port), DICOMISO_LOG_LEVEL="WARNING", **env)
        full.update(DICOMISO_API_TOKEN="", DICOMISO_REPLICA_ID=f"e2e-{name}")
        self.log_path = work / f"{name}.log"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(VENV / f"dicomiso-{name}")], stdout=out, stderr=subprocess.STDOUT, env=full
            )
        rb.wait_http(f"{self.url}/readyz", timeout=90, proc=self.proc)

    def stop(self) -> None:
        rb.stop_pid(self.proc)


def start_stack(
    ctx: Ctx, bucket: str, tag: str, *, online: bool = True, env: dict[str, str] | None = None
) -> dict[str, Any]:
    s3 = {"DICOMISO_S3_ENDPOINT_URL": ctx.moto.url, "DICOMISO_S3_BUCKET": bucket}
    pacs = {
        "DICOMISO_PACS_AET": ctx.orthanc.aet,
        "DICOMISO_PACS_HOST": LOOPBACK,
        "DICOMISO_PACS_PORT": str(ctx.orthanc.dicom_port),
    }
    procs: dict[str, Any] = {}
    try:
        procs["lookup"] = Service("lookup", ctx.work, {**s3, **pacs, **ctx.his_env})
        procs["retriever"] = rb.RetrieverProc(
            ctx.work,
            ctx.moto,
            ctx.orthanc,
            bucket,
            extra_env={"AWS_ACCESS_KEY_ID": "retriever", "DICOMISO_API_TOKEN": "", **(env or {})},
            pythonpath=None,
            profile=None,
            tag=tag,
        )
        procs["packager"] = Service(
            "packager",
            ctx.work,
            {
                **s3,
                "DICOMISO_LOOKUP_URL": procs["lookup"].url,
                "DICOMISO_RETRIEVER_URL": procs["retriever"].url,
                "DICOMISO_WORK_DIR": str(ctx.work),
                "DICOMISO_VIEWER": "false",  # like the native disc: no viewer bundle on it
                # path d: the ISO alone, what the native pipeline makes (no online page, no ZIP)
                "DICOMISO_VIEW_ONLINE": "true" if online else "false",
            },
        )
    except BaseException:
        for p in procs.values():
            p.stop()
        raise
    return procs


def order_and_wait(url: str, accession: str, poll: float, hold: float) -> dict[str, Any]:
    """POST the package and follow it as the CLI does (dicomiso_client JobClient.wait):
    status requests held up to `hold` s by the packager (`?wait=`), `poll` s apart when an
    answer changed nothing; `--long-poll 0` polls every `poll` s as before."""
    import httpx

    phases: dict[str, float] = {}
    params = {"wait": hold} if hold > 0 else {}
    with httpx.Client(base_url=url, timeout=30 + hold, trust_env=False) as http:
        t0 = time.time()
        r = http.post("/v1/packages", json={"accession_numbers": [accession]})
        r.raise_for_status()
        job, polls, stalled = r.json()["id"], 0, []
        last: tuple[str, str] | None = None
        while True:
            asked = time.monotonic()
            try:
                status = http.get(f"/v1/packages/{job}", params=params).json()
            except httpx.TimeoutException:  # a status GET that takes > 30 s is a finding
                stalled.append(round(time.time() - t0, 1))
                continue
            polls += 1
            phases.setdefault(str(status.get("phase") or status["state"]), time.time() - t0)
            if status["state"] in ("succeeded", "failed"):
                break
            if time.time() - t0 > 1800:
                raise TimeoutError(f"package still {status['state']} after 1800 s")
            seen = (str(status["state"]), str(status.get("phase")))
            if seen == last or not hold:
                time.sleep(max(0.0, poll - (time.monotonic() - asked)))
            last = seen
    return dict(
        status=status,
        t0=t0,
        seconds=time.time() - t0,
        polls=polls,
        phases=phases,
        status_timeouts=stalled,
    )


def timeline(recs: list[dict[str, Any]], t0: float) -> dict[str, float]:
    """Seconds after the POST of the first/last instance PUT, GET, and image upload."""
    out: dict[str, float] = {}
    for name, who, verb, prefix in (
        ("instance_put", "retriever", "PUT", "instances/"),
        ("instance_get", "packager", "GET", "instances/"),
        ("image_upload", "packager", "", "packages/"),
        ("retrieval_record", "retriever", "PUT", "jobs/"),
    ):
        # instances/: one object per instance (before segments); segments/: ours now
        prefixes = (prefix, "segments/") if prefix == "instances/" else (prefix,)
        ts = [
            r["t"] - t0
            for r in recs
            if r["who"] == who and classify(r)[1] in prefixes and classify(r)[0].startswith(verb)
        ]
        if ts:
            out[f"{name}_first"], out[f"{name}_last"] = round(min(ts), 2), round(max(ts), 2)
    return out


def run_ours(
    ctx: Ctx, st: Study, i: int, *, online: bool = True, env: dict[str, str] | None = None
) -> dict[str, Any]:
    bucket = f"e2e-{st.n}-{i}" + ("" if online else "-iso") + ("-var" if env else "")
    client = ctx.moto.fresh_bucket(bucket)
    procs = start_stack(ctx, bucket, f"{st.n}-{i}", online=online, env=env)
    pids = {k: p.proc.pid for k, p in procs.items()}
    try:
        ctx.moto.requests()  # start-up traffic (lifecycle rule, ...) is not the study's
        s3 = {ctx.args.s3: ctx.moto_pid}  # "moto" or "localstack"
        with rb.CpuMeter(**pids, **s3, orthanc=ctx.orthanc.pid) as cpu:
            r = order_and_wait(
                procs["packager"].url, st.accession, ctx.args.poll, ctx.args.long_poll
            )
        recs = ctx.moto.requests()
        rss = {k: round(rb.RssSampler(p).status()["VmHWM"] / 1024) for k, p in pids.items()}
        workers = rb.descendants(pids["retriever"])  # DICOMISO_SCP_WORKERS: each its own
        if workers:
            rss["retriever worker"] = max(
                round(rb.RssSampler(w).status()["VmHWM"] / 1024) for w in workers
            )
    finally:
        for p in procs.values():
            p.stop()
    status = r.pop("status")
    result = status.get("result") or {}
    head = client.head_object(Bucket=bucket, Key=result["key"]) if result.get("key") else {}
    if status["state"] != "succeeded" or head.get("ContentLength") != result.get("size"):
        raise RuntimeError(f"ours {st.n}#{i}: {status['state']} {status.get('error')}")
    return {
        **r,
        "cpu_s": cpu.used,
        "rss_mib": rss,
        "iso_bytes": result["size"],
        "requests": request_summary([x for x in recs if x["who"] != "bench"]),
        "timeline": timeline(recs, r["t0"]),
        "raw_requests": recs if ctx.args.keep_requests else None,
    }


# -- (b) native and (c) legacy -------------------------------------------------------------


class Tools:
    """CPU seconds of short-lived child processes (wait4 rusage), by tool name."""

    def __init__(self) -> None:
        self.cpu_s: dict[str, float] = defaultdict(float)
        self.wall_s: dict[str, float] = defaultdict(float)

    def run(self, name: str, cmd: list[str], ok: tuple[int, ...] = (0,), **kw: Any) -> None:
        from support.dcmtk import dcmtk_env

        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        rc = subprocess.run(cmd, env=dcmtk_env(), check=False, **kw).returncode
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.wall_s[name] += time.perf_counter() - t0
        self.cpu_s[name] += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if rc not in ok:
            raise RuntimeError(f"{name} exited {rc}: {' '.join(cmd)}")


def move_cmd(ctx: Ctx, *keys: str) -> list[str]:
    from support.dcmtk import dcmtk_bin

    base = [dcmtk_bin("movescu"), "-aet", rb.MOVESCU_AET, "-aec", ctx.orthanc.aet]
    base += ["-aem", SCP_AET, "-S", "-k", "QueryRetrieveLevel=STUDY"]
    return [*base, *(a for k in keys for a in ("-k", k)), LOOPBACK, str(ctx.orthanc.dicom_port)]


def run_dcmtk(ctx: Ctx, st: Study, i: int, legacy: bool) -> dict[str, Any]:
    from support.dcmtk import StoreSCP, dcmtk_bin

    name = "legacy" if legacy else "native"
    root = ctx.work / f"{name}-{st.n}-{i}"
    iso_path = ctx.work / f"{name}.iso"
    scp = StoreSCP(root / "in", aet=SCP_AET, log_path=ctx.work / "storescp.log")
    scp.start()
    tools = Tools()
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    try:
        ctx.orthanc.register_modality(SCP_AET, LOOPBACK, scp.port)
        with rb.CpuMeter(storescp=scp.pid, orthanc=ctx.orthanc.pid) as cpu:
            t0 = time.perf_counter()
            if legacy:  # one C-MOVE per modality code; only the real one finds the study
                for mod in MODALITIES:
                    acc = st.accession if mod == "CT" else f"NONE{mod}"
                    ok = (0,) if mod == "CT" else (0, 69)  # 69: "UnableToProcess", no match
                    tools.run("movescu", move_cmd(ctx, f"AccessionNumber={acc}"), ok, **quiet)
                tools.run(
                    "genisoimage", ["genisoimage", "-quiet", "-o", str(iso_path), str(scp.out_dir)]
                )
            else:
                tools.run("movescu", move_cmd(ctx, f"StudyInstanceUID={st.study_uid}"), **quiet)
                disc = root / "disc"
                (disc / "DICOM").mkdir(parents=True)
                for k, f in enumerate(sorted(scp.out_dir.glob("*.dcm"))):
                    f.rename(disc / "DICOM" / f"I{k:07d}")
                tools.run("dcmmkdir", [dcmtk_bin("dcmmkdir"), "-Pgp", "+r", "DICOM"], cwd=disc)
                tools.run("genisoimage", ["genisoimage", "-quiet", "-o", str(iso_path), str(disc)])
                tools.run("sync", ["sync"])
            seconds = time.perf_counter() - t0
    finally:
        scp.stop()
    got = len(list(root.rglob("*.dcm" if legacy else "I*")))
    size = iso_path.stat().st_size
    shutil.rmtree(root)
    iso_path.unlink()
    if got != st.n:
        raise RuntimeError(f"{name} {st.n}#{i}: {got}/{st.n} instances")
    cpu_s = {**cpu.used, **{k: round(v, 2) for k, v in tools.cpu_s.items()}}
    steps = {k: round(v, 2) for k, v in tools.wall_s.items()}
    return {"seconds": seconds, "cpu_s": cpu_s, "steps_s": steps, "iso_bytes": size}


# -- one study size, and the levers bounded from outside -----------------------------------


class Study:
    def __init__(self, ctx: Ctx, n: int) -> None:
        a = ctx.args
        self.n, self.accession = n, f"BENCH{n}X{a.rows}"[:16]  # bench/retrieve.py's cache key
        cache = ctx.cache / f"ct-{n}x{a.rows}x{a.cols}"
        self.study_uid, self.files = rb.study_files(cache, n, a.rows, a.cols, self.accession)
        rb.load_pacs(ctx.orthanc, self.study_uid, self.files)
        self.sizes = [f.stat().st_size for f in self.files]
        if ctx.his is not None:
            from support.mariadb import add_patient

            add_patient(ctx.his, f"E2E-MRN-{n}", "Bench^Ct", [self.accession])  # synthetic


def segment_bound(st: Study, ours: list[dict[str, Any]]) -> dict[str, Any]:
    """What 32 MiB segments would leave of the instance traffic (counted, not built)."""
    segments = math.ceil(sum(st.sizes) / SEGMENT)
    req = ours[0]["requests"]
    inst = req.get("prefix:instances/", {"n": 0})["n"]
    # per segment: create + 4 parts of 8 MiB + complete on write; one ranged GET on read
    after = segments * (6 + 1)
    return {"segments": segments, "instance_requests": inst, "segment_requests": after}


def overlap_bound(runs: list[dict[str, Any]]) -> dict[str, float]:
    med = {
        k: statistics.median(r["timeline"].get(k, 0.0) for r in runs) for k in runs[0]["timeline"]
    }
    total = statistics.median(r["seconds"] for r in runs)
    receive = med.get("instance_put_last", 0.0) - med.get("instance_put_first", 0.0)
    gap = med.get("instance_get_first", 0.0) - med.get("instance_put_last", 0.0)
    build = total - med.get("instance_get_first", total)
    return {
        **{k: round(v, 2) for k, v in med.items()},
        "receive_s": round(receive, 2),
        "gap_receive_end_to_build_start_s": round(gap, 2),
        "build_to_link_s": round(build, 2),
        "max_saving_s": round(max(gap, 0.0) + min(receive, build), 2),
    }


def s3_probe(ctx: Ctx, st: Study) -> dict[str, Any]:
    """moto CPU for the study's bytes as one object per instance vs 32 MiB segments."""
    client, out = ctx.moto.fresh_bucket("e2e-probe"), {}
    blob = b"".join(f.read_bytes() for f in st.files)
    for layout, chunks in (
        ("per instance", [(k, s) for k, s in zip(range(st.n), st.sizes, strict=True)]),
        ("32 MiB segments", [(k, SEGMENT) for k in range(math.ceil(len(blob) / SEGMENT))]),
    ):
        ctx.moto.requests()
        pos = 0
        with rb.CpuMeter(moto=ctx.moto_pid, boto3_client=os.getpid()) as cpu:
            for k, size in chunks:
                client.put_object(Bucket="e2e-probe", Key=f"p/{k}", Body=blob[pos : pos + size])
                pos += size
            for k, _ in chunks:
                client.get_object(Bucket="e2e-probe", Key=f"p/{k}")["Body"].read()
        out[layout] = {"requests": len(ctx.moto.requests()), **cpu.used}
        for k, _ in chunks:
            client.delete_object(Bucket="e2e-probe", Key=f"p/{k}")
    return out


# -- the CLI -------------------------------------------------------------------------------


def cli_startup(urls: dict[str, str], accession: str, repeat: int) -> dict[str, Any]:
    """Median wall s of `dicom-iso --help`, `lookup ACC`, `status JOB` (an unknown job: one
    round trip) and of a bare interpreter; what `import dicomiso_client.cli` spends where."""
    env = {**rb.s3_env(), **urls}
    cmds = {"--help": ["--help"]}
    if urls:
        cmds.update(lookup=["lookup", accession], status=["status", "0" * 32])
    cli, py = str(VENV / "dicom-iso"), str(VENV / "python")
    out: dict[str, Any] = {
        name: statistics.median(timed([cli, *argv], env) for _ in range(repeat))
        for name, argv in cmds.items()
    }
    for code in ("pass", "import typer, httpx, pydantic"):  # the floor of a typer/httpx CLI
        out[f"python -c {code}"] = statistics.median(timed([py, "-c", code], env) for _ in range(3))
    probe = [py, "-X", "importtime", "-c", "import dicomiso_client.cli"]
    out["imports"] = top_imports(subprocess.run(probe, capture_output=True, text=True).stderr)
    return out


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, env=env, check=False)
    return round(time.perf_counter() - t0, 3)


def top_imports(importtime: str, top: int = 12) -> list[dict[str, Any]]:
    """Root packages by import seconds (python -X importtime): the outermost import's
    cumulative time (includes what it pulls in) and the package's own (self) time."""
    cum: dict[str, float] = defaultdict(float)
    own: dict[str, float] = defaultdict(float)
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = line[len("import time:") :].split("|")
        root = name.strip().split(".")[0]
        cum[root] = max(cum[root], int(cum_us) / 1e6)
        own[root] += int(self_us) / 1e6
    ranked = sorted(cum, key=lambda k: -cum[k])[:top]
    return [
        {"package": k, "cumulative_s": round(cum[k], 3), "self_s": round(own[k], 3)} for k in ranked
    ]


# -- the run -------------------------------------------------------------------------------


class Ctx:
    """What every path of one run shares: Orthanc, the counting moto, the bench HIS."""

    def __init__(self, args: argparse.Namespace, work: Path, cache: Path, orthanc: Any, moto: Any):
        self.args, self.work, self.cache, self.orthanc, self.moto = args, work, cache, orthanc, moto
        self.moto_pid = moto.proc.pid if moto.proc else None
        self.his: Any = None
        self.his_env: dict[str, str] = {}


def busy_others(cpu: dict[str, float]) -> float:
    """CPU seconds the rest of the machine used during a run (other helpers' work)."""
    measured = sum(v for k, v in cpu.items() if k not in ("wall", "machine_busy"))
    return round(max(cpu["machine_busy"] * cpu["wall"] - measured, 0.0), 1)


def run_size(ctx: Ctx, n: int) -> dict[str, Any]:
    st = Study(ctx, n)
    paths: dict[str, Callable[[int], dict[str, Any]]] = {
        "a ours": lambda i: run_ours(ctx, st, i),
        "b native": lambda i: run_dcmtk(ctx, st, i, legacy=False),
        "c legacy": lambda i: run_dcmtk(ctx, st, i, legacy=True),
        "d ours, ISO only": lambda i: run_ours(ctx, st, i, online=False),
        "e ours, ISO only, variant": lambda i: run_ours(
            ctx, st, i, online=False, env=dict(ctx.args.variant_env)
        ),
    }
    if not ctx.args.iso_only:
        del paths["d ours, ISO only"]
    if not ctx.args.iso_only or not ctx.args.variant_env:
        del paths["e ours, ISO only, variant"]
    paths = {k: v for k, v in paths.items() if k[0] not in ctx.args.skip}
    run_dcmtk(ctx, st, -1, legacy=False)  # warm Orthanc's storage in the page cache, untimed
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in paths}
    for i in range(ctx.args.repeat):
        for name, fn in paths.items():
            waited = fb.wait_quiet(ctx.args.quiet_wait) if ctx.args.quiet_wait else 0.0
            load = os.getloadavg()[0]
            r = fn(i)
            r.update(loadavg_1m=load, others_cpu_s=busy_others(r["cpu_s"]), waited_s=waited)
            r["others_busy_after"] = fb.others_busy()
            log(f"{n} {name} #{i + 1}: {r['seconds']:.2f}s cpu {r['cpu_s']}")
            runs[name].append(r)
    out: dict[str, Any] = {"instances": n, "accession": st.accession, "bytes": sum(st.sizes)}
    out["runs"] = runs
    if "a ours" in runs and runs["a ours"][0]["timeline"]:  # counted (moto) runs only
        out["segments"] = segment_bound(st, runs["a ours"])
        out["overlap"] = overlap_bound(runs["a ours"])
        if ctx.args.probe:
            out["s3_probe"] = s3_probe(ctx, st)
    return out


def _cpu_of(key: str, run: dict[str, Any]) -> float:
    return float(run["cpu_s"][key])


def med(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float]) -> float:
    return statistics.median(get(r) for r in runs)


def report(sizes: list[dict[str, Any]], repeat: int) -> str:
    lines = []
    for sz in sizes:
        runs = sz["runs"]
        native = med(runs["b native"], lambda r: r["seconds"]) if "b native" in runs else None
        lines += [
            f"\n### {sz['instances']} instances, {sz['bytes'] / 1e6:.0f} MB, median of {repeat}\n",
            "| path | wall s (min-max) | vs native | CPU s per process | others' CPU s "
            "| peak RSS MiB |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for name, rs in runs.items():
            wall = med(rs, lambda r: r["seconds"])
            keys = [k for k in rs[0]["cpu_s"] if k not in ("wall", "machine_busy")]
            cpu = ", ".join(f"{k} {med(rs, functools.partial(_cpu_of, k)):.1f}" for k in keys)
            rss = rs[0].get("rss_mib")
            rss_s = (
                ", ".join(f"{k} {max(r['rss_mib'][k] for r in rs)}" for k in rss) if rss else "-"
            )
            ratio = f"{wall / native:.2f}x" if native else "-"
            lo, hi = min(r["seconds"] for r in rs), max(r["seconds"] for r in rs)
            others = med(rs, lambda r: r["others_cpu_s"])
            lines.append(
                f"| {name} | {wall:.2f} ({lo:.2f}-{hi:.2f}) | {ratio} | {cpu} | {others:.1f} "
                f"| {rss_s} |"
            )
        for name in ("a ours", "d ours, ISO only"):
            if name in runs and runs[name][0]["requests"]:
                lines += [f"\n{name}:", *requests_table(runs[name], sz)]
    return "\n".join(lines)


def requests_table(rs: list[dict[str, Any]], sz: dict[str, Any]) -> list[str]:
    req = rs[len(rs) // 2]["requests"]
    lines = [
        "\n| S3 requests of ours (one run) | requests | moto CPU s | moto CPU ms/request | MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in sorted(
        req.items(), key=lambda kv: (kv[0].startswith(("who:", "prefix:")), -kv[1]["n"])
    ):
        if k == "total":
            continue
        ms = v["cpu_s"] / v["n"] * 1000 if v["n"] else 0.0
        lines.append(f"| {k} | {v['n']} | {v['cpu_s']:.2f} | {ms:.2f} | {v['bytes'] / 1e6:.1f} |")
    t = req["total"]
    lines.append(f"| **total** | **{t['n']}** | **{t['cpu_s']:.2f}** | | {t['bytes'] / 1e6:.1f} |")
    polls = med(rs, lambda r: r["polls"])
    lines.append(
        f"\nstatus polls by the bench: {polls:.0f}; timeline (s after POST, median run): "
        f"{json.dumps(rs[len(rs) // 2]['timeline'])}; phases (s after POST): "
        f"{json.dumps(rs[len(rs) // 2]['phases'])}"
    )
    if sz.get("overlap") and rs is sz["runs"].get("a ours"):
        lines.append(f"overlap: {json.dumps(sz['overlap'])}")
    if "s3_probe" in sz:
        lines.append(f"\nS3 probe (same bytes, PUT + GET each): {json.dumps(sz['s3_probe'])}")
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_moto":
        return moto_main(int(sys.argv[2]))
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[1000], help="instances per study")
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--cols", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3, help="runs per path (median reported)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between status polls")
    p.add_argument(
        "--long-poll",
        type=float,
        default=10.0,
        help="seconds each status request may be held (?wait=); 0: plain polling",
    )
    p.add_argument("--his", choices=["mariadb", "pacs"], default="mariadb")
    p.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c", "d", "e"])
    p.add_argument(
        "--variant-env",
        type=rb.parse_env,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --iso-only, also path e: path d with this in the retriever's environment",
    )
    p.add_argument(
        "--iso-only",
        action="store_true",
        help="also path d: ours making the ISO alone, as the native pipeline does",
    )
    p.add_argument(
        "--s3",
        choices=["moto", "localstack"],
        default="moto",
        help="the S3 server (localstack: nothing counted, CPU and wall only)",
    )
    p.add_argument("--probe", action="store_true", help="also the S3 layout probe")
    p.add_argument("--quiet-wait", type=float, default=0, help="wait <= S s for no pytest")
    p.add_argument("--cli-only", action="store_true", help="only the CLI start-up")
    p.add_argument("--cli-repeat", type=int, default=5)
    p.add_argument("--keep-dir", help="cache studies and Orthanc's database (bench/retrieve.py)")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--keep-requests", action="store_true", help="every S3 request in the JSON")
    args = p.parse_args()
    args.orthanc_config = []
    machine0 = rb.machine()
    if args.cli_only:
        result: dict[str, Any] = {"cli": cli_startup({}, "", args.cli_repeat)}
        print(json.dumps(result, indent=2))
        rb.write_json("e2e-cli", {"machine": machine0, **result})
        return None
    # rb.environment() starts rb.Moto: the counting moto, or LocalStack's S3
    rb.Moto = CountedMoto if args.s3 == "moto" else LocalStackS3  # type: ignore[misc]
    from support.mariadb import his_database  # a bench HIS: fresh databases, SELECT-only user

    his = contextlib.nullcontext() if args.his == "pacs" else his_database()
    with rb.environment(args) as (work, cache, orthanc, moto), his as db:
        ctx = Ctx(args, work, cache, orthanc, moto)
        if db is not None:
            ctx.his = db
            ctx.his_env = {
                "DICOMISO_HIS_URL": db.url(),
                "DICOMISO_HIS_ACCESSION_DB": db.accession_db,
                "DICOMISO_HIS_PATIENT_DB": db.patient_db,
            }
        sizes = []
        for n in args.sizes:  # raw numbers after each size: a later failure keeps them
            sizes.append(run_size(ctx, n))
            rb.write_json("e2e-partial", {"args": vars(args), "sizes": sizes})
        ctx.moto.fresh_bucket("e2e-cli")
        procs = start_stack(ctx, "e2e-cli", "cli")
        try:
            urls = {f"DICOMISO_{k.upper()}_URL": procs[k].url for k in ("lookup", "packager")}
            cli = cli_startup(urls, sizes[0]["accession"], args.cli_repeat)
        finally:
            for pr in procs.values():
                pr.stop()
    md = report(sizes, args.repeat)
    print(md)
    print("\nCLI:", json.dumps(cli))
    path = rb.write_json(
        "e2e",
        {
            "args": vars(args),
            "machine_before": machine0,
            "machine_after": rb.machine(),
            "versions": rb.versions(),
            "sizes": sizes,
            "cli": cli,
            "markdown": md,
        },
    )
    print(f"\nraw numbers: {path.relative_to(ROOT)}")
    return None


if __name__ == "__main__":
    main()
