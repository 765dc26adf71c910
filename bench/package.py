#!/usr/bin/env python
"""Packager benchmark: the dicom-iso disc image build against dcmmkdir + genisoimage.

Run by hand (never collected by pytest), from the repository root:

    uv run --frozen python bench/package.py --repeat 3 --keep-dir /tmp/bench-keep
    uv run --frozen python bench/package.py --memory --keep-dir /tmp/bench-keep

One run generates (or reuses, with the cache layout of bench/retrieve.py) a synthetic
1,000-instance 512x512 CT, seeds it into an S3 bucket (moto) exactly as the retriever leaves
it (instances, manifest, accession index; tests/forwarder/conftest.py `seed`), and times,
K times each:

  a  packager      the package job without its lookup and retrieval steps: a subprocess
                   (`--_build`) builds PackagerSettings from DICOMISO_* variables and the
                   Store like the service, submits the request to the real `Jobs` runner
                   (job record, heartbeats) whose runner is `Packaging.run` minus lookup and
                   retrieval: the study manifests, `Packaging._build_and_upload`
                   (disc.assemble: file IDs, preview, DICOMDIR, README, INDEX.HTM;
                   iso.write_iso streaming each instance from S3; sha256; multipart upload)
                   and `Packaging._finish` (presign, package manifest). Timed inside the
                   subprocess from submit to "succeeded" (no interpreter start-up), with
                   timers around each step for the breakdown.
  b  native pair   on the same files on local disk (hard links in the same File ID tree):
                   dcmtk `dcmmkdir +r DICOM` (general purpose profile), then
                   `genisoimage -quiet -V VOLID -o out.iso dir`.
  c  pycdlib       pycdlib alone, the same tree (native DICOMDIR) from local files, Level 1.
  d  write_iso     the packager's iso.write_iso (lazy readers) on the same local files.
  e  S3 read       boto3 get_object of every instance from moto, 1 MiB reads, sequential
                   and from 4 threads: the floor of the packager's S3 side.
  f  S3 upload     Store.upload (the service's multipart settings) of an image-sized file.

`--memory` instead builds 200- and 2,000-instance 128x128 studies and reports the peak RSS
(VmHWM, and wait4's ru_maxrss) of the build subprocess.

Throughput is the sum of the Part 10 instance sizes (10^6 bytes = 1 MB) over the wall time.
moto runs in its own process (bench/retrieve.py `Moto`). Every process started here is
stopped by its PID. Results: Markdown on stdout, raw numbers as JSON in bench/out/.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import forward as fb  # noqa: E402  (bench/forward.py: wait for a quiet machine)
import retrieve as rb  # noqa: E402  (bench/retrieve.py: moto, CPU meter, study cache)

LOOPBACK = rb.LOOPBACK
log = rb.log
PROFILE = "STD-GEN-DVD-JPEG"
VOLID = "DICOMISOBENCH"
PACKAGER = "a packager: S3 -> DICOMDIR + ISO -> sha256 -> S3 upload"


# -- the build subprocess (`--_build SPEC OUT`) --------------------------------------------


class Timers:
    """Wall seconds (and calls) spent in wrapped functions, per name, thread-safe."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                with self._lock:
                    self.seconds[name] += time.perf_counter() - t0
                    self.calls[name] += 1

        setattr(owner, attr, timed)


def vm_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def dicomdir_module() -> Any:
    """Where assign_file_ids/build_dicomdir live (media.py before the dicomdir.py split)."""
    try:
        from dicomiso_packager import dicomdir as module
    except ImportError:
        from dicomiso_packager import media as module  # type: ignore[no-redef]  # older tree
    return module


def build_main(spec_path: str, out_path: str) -> None:
    """One package build the way the service runs it, minus lookup and retrieval."""
    spec = json.loads(Path(spec_path).read_text())
    from dicomiso_common.jobs import JobHandle, Jobs
    from dicomiso_common.manifests import load_accession_index, load_manifest
    from dicomiso_common.store import Store
    from dicomiso_packager import disc, iso, online, packaging
    from dicomiso_packager.packaging import Packaging, package_filename, package_request
    from dicomiso_packager.settings import PackagerSettings

    settings = PackagerSettings()  # DICOMISO_* from the environment, as in the service
    store = Store.from_settings(settings)
    pk = Packaging(settings, store)
    timers = Timers()
    if spec.get("timers", True):
        timers.wrap(disc, "assemble", "assemble (total)")
        timers.wrap(disc._Assembler, "_previews", "assemble: preview JPEG")
        timers.wrap(dicomdir_module(), "build_dicomdir", "assemble: DICOMDIR")
        timers.wrap(iso, "write_iso", "write_iso (total)")
        timers.wrap(iso, "write_zip", "write_zip (total)")
        timers.wrap(online, "publish", "online page: sign + view.html")
        timers.wrap(iso._LazyReader, "_source", "write_iso: S3 GET request (open)")
        timers.wrap(iso._LazyReader, "read", "write_iso: source reads (S3 open + body)")
        if hasattr(Store, "file_sha256"):  # one read: the sha256 and the S3 checksum
            timers.wrap(Store, "file_sha256", "sha256 of the image")
        else:  # before: packaging._sha256, then upload_path read the file again to check
            timers.wrap(packaging, "_sha256", "sha256 of the image")
        timers.wrap(Store, "upload", "upload (multipart)")
        timers.wrap(Store, "upload_path", "upload_path (multipart, each image)")
        timers.wrap(Packaging, "_finish", "presign + package manifest")
        timers.wrap(JobHandle, "flush", "job record writes")

    def run(handle: JobHandle) -> dict[str, Any]:  # Packaging.run minus lookup + retrieval
        request = package_request(handle.record)
        acc = request.accession_numbers[0]
        uids = load_accession_index(store, acc).study_uids
        manifests = [load_manifest(store, u) for u in uids]

        def names(fmt: str) -> str:
            return package_filename([acc], "", fmt)

        with tempfile.TemporaryDirectory(prefix="package-", dir=settings.work_dir) as tmp:
            contents, links = pk._build_and_upload(handle, request, manifests, Path(tmp), names)
        return pk._finish(handle, request, contents, links, {}).to_json()

    jobs = Jobs(store, "package", settings, run, pk.is_current)
    before = vm_status()
    started = time.perf_counter()
    record = jobs.submit(
        {
            "accession_numbers": [spec["accession"]],
            "profile": PROFILE,
            "format": "iso",
            "email": None,
            "expires_in": None,
            "bench_run": spec["tag"],
        }
    )
    while (record := jobs.get(record.id)).state not in ("succeeded", "failed"):
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    jobs.shutdown()
    after = vm_status()
    Path(out_path).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "state": record.state,
                "error": record.error,
                "result": {
                    k: v
                    for k, v in record.result.items()
                    if k not in ("download_url", "view_url", "downloads")
                },
                "images": [
                    {k: d[k] for k in ("format", "size")}
                    for d in record.result.get("downloads", [])
                ],
                "counts": record.counts,
                "rss_before_kb": before["VmRSS"],
                "vmhwm_kb": after["VmHWM"],
                "breakdown_s": dict(timers.seconds),
                "calls": dict(timers.calls),
            }
        )
    )


# -- seeding -------------------------------------------------------------------------------


def seed(store: Any, files: list[Path], accession: str) -> str:
    """Put files into the bucket as the retriever would (tests/forwarder/conftest.py)."""
    import pydicom

    from dicomiso_common.dicom import accession_key, instance_key
    from dicomiso_retriever.manifest import build_manifest, write_manifest

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

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        (study_uid,) = set(pool.map(one, files))
    write_manifest(store, build_manifest(store, study_uid, {}, "seed", "bench"))
    store.put_json(
        accession_key(accession), {"accession_number": accession, "study_uids": [study_uid]}
    )
    log(
        f"seeded {len(files)} instances into s3://{store.bucket} in "
        f"{time.perf_counter() - started:.1f}s"
    )
    return study_uid


def make_store(moto: rb.Moto, bucket: str) -> Any:
    from dicomiso_common.store import Store

    client = moto.client()
    client.create_bucket(Bucket=bucket)
    return Store(client, bucket)


# -- (a) the packager ----------------------------------------------------------------------


def run_packager(
    args: argparse.Namespace,
    work: Path,
    moto: rb.Moto,
    store: Any,
    accession: str,
    tag: str,
    timers: bool = True,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec, out = work / f"spec-{tag}.json", work / f"result-{tag}.json"
    spec.write_text(json.dumps({"accession": accession, "tag": tag, "timers": timers}))
    env = rb.s3_env()
    env.update(
        {
            "DICOMISO_S3_ENDPOINT_URL": moto.url,
            "DICOMISO_S3_BUCKET": store.bucket,
            "DICOMISO_LOG_LEVEL": "WARNING",
            "DICOMISO_REPLICA_ID": f"bench-{tag}",
            "DICOMISO_WORK_DIR": str(work),
        }
    )
    env.update(dict(args.packager_env))
    env.update(extra_env or {})
    if args.packager_pythonpath:
        env["PYTHONPATH"] = args.packager_pythonpath
    t0 = time.perf_counter()
    with (work / f"packager-{tag}.log").open("ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--_build", str(spec), str(out)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
        try:
            with rb.CpuMeter(moto=moto.proc.pid if moto.proc else None) as cpu:
                _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            rb.stop_pid(proc)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    process_s = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"build {tag} exited {proc.returncode}; see {work}/packager-{tag}.log")
    r: dict[str, Any] = json.loads(out.read_text())
    if r["state"] != "succeeded":
        raise RuntimeError(f"build {tag}: {r['state']}: {r['error']}")
    r.update(
        process_s=round(process_s, 2),
        ru_maxrss_kb=usage.ru_maxrss,
        packager_cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
        cpu_s=cpu.used,
    )
    key = r["result"]["key"]
    head = store.head(key)
    if head is None or int(head["ContentLength"]) != r["result"]["size"]:
        raise RuntimeError(f"build {tag}: {key} missing or of the wrong size")
    for obj in list(store.list(f"packages/{key.split('/')[1]}/")):
        store.delete(obj.key)  # keep moto's memory flat between runs
    return r


# -- (b) native, (c) pycdlib, (d) write_iso, (e) S3 read -----------------------------------


def native_tree(store: Any, accession: str, files: list[Path], root: Path) -> list[Path]:
    """Hard-link the files into the packager's own File ID tree under root/ (untimed)."""
    import pydicom

    from dicomiso_common.dicom import accession_key
    from dicomiso_common.manifests import load_manifest

    uids = store.get_json(accession_key(accession))[0]["study_uids"]
    manifests = [load_manifest(store, u) for u in uids]
    ids = dicomdir_module().assign_file_ids(manifests)
    if root.exists():
        shutil.rmtree(root)
    out = []
    for path in files:
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        target = root.joinpath(*ids[sop])
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
        out.append(target)
    return out


def run_native(root: Path, work: Path, n: int) -> dict[str, Any]:
    from support.dcmtk import dcmtk_bin

    (root / "DICOMDIR").unlink(missing_ok=True)
    iso_path = work / "native.iso"
    t0 = time.perf_counter()
    with rb.CpuMeter() as cpu:
        subprocess.run(
            [dcmtk_bin("dcmmkdir"), "+r", "DICOM"], cwd=root, check=True, stdout=subprocess.DEVNULL
        )
        t1 = time.perf_counter()
        subprocess.run(
            ["genisoimage", "-quiet", "-V", VOLID, "-o", str(iso_path), str(root)], check=True
        )
        t2 = time.perf_counter()
    size = iso_path.stat().st_size
    iso_path.unlink()
    return {
        "seconds": t2 - t0,
        "dcmmkdir_s": t1 - t0,
        "genisoimage_s": t2 - t1,
        "iso_bytes": size,
        "instances": n,
        "cpu_s": cpu.used,
    }


def tree_files(root: Path) -> list[tuple[tuple[str, ...], Path]]:
    return sorted((p.relative_to(root).parts, p) for p in root.rglob("*") if p.is_file())


def run_pycdlib(root: Path, work: Path) -> dict[str, Any]:
    import pycdlib

    from dicomiso_packager import iso

    files = tree_files(root)
    out = work / "pycdlib.iso"
    t0 = time.perf_counter()
    disc = pycdlib.PyCdlib()
    disc.new(interchange_level=1, vol_ident=VOLID)
    for d in iso._directories(parts for parts, _ in files):
        disc.add_directory(iso_path=iso._iso_dir(d))
    for parts, path in files:
        disc.add_file(str(path), iso_path=iso._iso_file(parts))
    disc.write(str(out), blocksize=iso.COPY_BUFFER)
    disc.close()
    seconds = time.perf_counter() - t0
    size = out.stat().st_size
    out.unlink()
    return {"seconds": seconds, "iso_bytes": size}


def run_write_iso(root: Path, work: Path) -> dict[str, Any]:
    from dicomiso_packager import iso

    def opener(p: Path) -> Callable[[], Any]:
        return lambda: p.open("rb")

    files = [
        iso.DiscFile(parts, path.stat().st_size, opener(path)) for parts, path in tree_files(root)
    ]
    out = work / "write_iso.iso"
    t0 = time.perf_counter()
    with out.open("w+b") as fh:
        iso.write_iso(files, fh, VOLID)
        size = fh.tell()
    seconds = time.perf_counter() - t0
    out.unlink()
    return {"seconds": seconds, "iso_bytes": size}


def run_s3_read(moto: rb.Moto, store: Any, threads: int) -> dict[str, Any]:
    keys = [o.key for o in store.list("instances/")]

    def get(key: str) -> int:
        got = 0
        with contextlib.closing(store.open(key)) as body:
            while chunk := body.read(1 << 20):
                got += len(chunk)
        return got

    t0 = time.perf_counter()
    with rb.CpuMeter(client=os.getpid(), moto=moto.proc.pid if moto.proc else None) as cpu:
        if threads <= 1:
            got = sum(get(k) for k in keys)
        else:
            with ThreadPoolExecutor(threads) as pool:
                got = sum(pool.map(get, keys))
    return {"seconds": time.perf_counter() - t0, "bytes": got, "cpu_s": cpu.used}


def run_s3_upload(moto: rb.Moto, store: Any, work: Path, size: int, i: int) -> dict[str, Any]:
    """The image upload alone: Store.upload of a file of the image's size, with the
    TransferConfig the service derives from its settings (16 MiB parts, 4 threads)."""
    from dicomiso_common.settings import CommonSettings
    from dicomiso_common.store import Store

    blob = work / "upload.bin"
    if not blob.exists() or blob.stat().st_size != size:
        with blob.open("wb") as fh:
            for _ in range(size // (1 << 20)):
                fh.write(os.urandom(1 << 20))
            fh.write(os.urandom(size % (1 << 20)))
    svc = Store.from_settings(CommonSettings(s3_endpoint_url=moto.url, s3_bucket=store.bucket))
    key = f"packages/upload-{i}/upload-{i}.iso"
    t0 = time.perf_counter()
    with (
        rb.CpuMeter(client=os.getpid(), moto=moto.proc.pid if moto.proc else None) as cpu,
        blob.open("rb") as body,
    ):
        svc.upload(key, body, content_type="application/x-iso9660-image")
    seconds = time.perf_counter() - t0
    store.delete(key)
    return {"seconds": seconds, "bytes": size, "cpu_s": cpu.used}


# -- reporting -----------------------------------------------------------------------------


def _each_run(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`fn(*args[:-1])`: for `repeat`, which passes the run's index last."""
    return fn(*args[:-1])


def _variant_run(
    args: argparse.Namespace,
    work: Path,
    moto: rb.Moto,
    store: Any,
    accession: str,
    label: str,
    env: dict[str, str],
    i: int,
) -> dict[str, Any]:
    return run_packager(args, work, moto, store, accession, f"v{label}{i}", extra_env=env)


def repeat(
    name: str, k: int, fn: Callable[[int], dict[str, Any]], mb: float, quiet_wait: float = 0.0
) -> list[dict[str, Any]]:
    runs = []
    for i in range(k):
        waited = fb.wait_quiet(quiet_wait) if quiet_wait else 0.0
        load = os.getloadavg()[0]
        r = fn(i)
        r.update(
            waited_for_quiet_s=round(waited, 1),
            loadavg_1m_before=load,
            others_busy_after=fb.others_busy(),
        )
        log(
            f"{name} #{i + 1}: {r['seconds']:.2f}s ({mb / r['seconds']:.0f} MB/s)"
            + (f" [busy: {r['others_busy_after'][0][:60]}]" if r["others_busy_after"] else "")
        )
        runs.append(r)
    return runs


def summarise(results: dict[str, list[dict[str, Any]]], total: int) -> list[dict[str, Any]]:
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
                "mb_s": total / med / 1e6,
                "runs": secs,
                "vmhwm_mib": max((r["vmhwm_kb"] for r in runs if "vmhwm_kb" in r), default=0)
                / 1024,
            }
        )
    ref = next((r for r in rows if r["path"].startswith("b ")), None)
    for r in rows:
        r["vs_native"] = r["mb_s"] / ref["mb_s"] if ref else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path | median s | min-max s | MB/s | throughput vs native pair | peak RSS (VmHWM) MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['vs_native']:.2f}x" if r["vs_native"] is not None else "-"
        peak = f"{r['vmhwm_mib']:.0f}" if r["vmhwm_mib"] else "-"
        lines.append(
            f"| {r['path']} | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f}"
            f" | {r['mb_s']:.0f} | {ratio} | {peak} |"
        )
    return "\n".join(lines)


def breakdown_table(runs: list[dict[str, Any]]) -> str:
    """Median seconds per timed step of the packager runs (steps nest: see the names)."""
    names = list(runs[0]["breakdown_s"])
    med = statistics.median(r["seconds"] for r in runs)
    lines = ["| step | median s | share of the build |", "|---|---:|---:|"]
    for name in names:
        s = statistics.median(r["breakdown_s"].get(name, 0.0) for r in runs)
        lines.append(f"| {name} | {s:.2f} | {s / med:.0%} |")
    wi = statistics.median(
        r["breakdown_s"]["write_iso (total)"]
        - r["breakdown_s"]["write_iso: source reads (S3 open + body)"]
        for r in runs
    )
    lines.append(
        f"| write_iso minus source reads (pycdlib: records + output writes) | "
        f"{wi:.2f} | {wi / med:.0%} |"
    )
    return "\n".join(lines)


@contextlib.contextmanager
def environment(args: argparse.Namespace) -> Iterator[tuple[Path, Path, rb.Moto]]:
    if args.keep_dir:
        cache = Path(args.keep_dir).resolve()
        cache.mkdir(parents=True, exist_ok=True)
    else:
        cache = Path(tempfile.mkdtemp(prefix="dicomiso-bench-cache-"))
    work = Path(tempfile.mkdtemp(prefix="dicomiso-bench-package-"))
    moto = rb.Moto(work)
    try:
        moto.start()
        moto.reset()
        yield work, cache, moto
    finally:
        moto.stop()
        if args.keep_work:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        if not args.keep_dir:
            shutil.rmtree(cache, ignore_errors=True)


def versions() -> dict[str, str]:
    import pycdlib  # noqa: F401

    out = rb.versions()
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["pycdlib"] = version("pycdlib")
    with contextlib.suppress(Exception):
        out["genisoimage"] = subprocess.run(
            ["genisoimage", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return out


def throughput_mode(args: argparse.Namespace) -> None:
    n, k = args.instances, args.repeat
    accession = f"BENCH{n}X{args.rows}"[:16]  # bench/retrieve.py's study and cache
    with environment(args) as (work, cache, moto):
        _, files = rb.study_files(
            cache / f"ct-{n}x{args.rows}x{args.cols}", n, args.rows, args.cols, accession
        )
        total = sum(f.stat().st_size for f in files)
        mb = total / 1e6
        store = make_store(moto, "bench-package")
        seed(store, files, accession)
        root = work / "native-src"
        native_tree(store, accession, files, root)
        run_native(root, work, n)  # warm the page cache, untimed
        log(f"study {n} instances, {mb:.1f} MB")
        skip = set(args.skip)
        results: dict[str, list[dict[str, Any]]] = {}
        if "b" not in skip:
            results["b native: dcmmkdir + genisoimage (local disk)"] = repeat(
                "native", k, lambda i: run_native(root, work, n), mb, args.quiet_wait
            )
        if "a" not in skip:
            results[PACKAGER] = repeat(
                "packager",
                k,
                lambda i: run_packager(args, work, moto, store, accession, f"a{i}"),
                mb,
                args.quiet_wait,
            )
        if "c" not in skip:
            results["c pycdlib alone (local files)"] = repeat(
                "pycdlib", k, lambda i: run_pycdlib(root, work), mb, args.quiet_wait
            )
        if "d" not in skip:
            results["d packager iso.write_iso (local files)"] = repeat(
                "write_iso", k, lambda i: run_write_iso(root, work), mb, args.quiet_wait
            )
        if "e" not in skip:
            for t in (1, 4):
                label = "sequential" if t == 1 else f"{t} threads"
                results[f"e S3 read: get_object of every instance, {label}"] = repeat(
                    f"s3 read {label}",
                    k,
                    functools.partial(_each_run, run_s3_read, moto, store, t),
                    mb,
                    args.quiet_wait,
                )
        pk = results.get(PACKAGER)
        if "f" not in skip and pk:
            size = pk[0]["result"]["size"]
            results["f S3 upload alone: Store.upload of an image-sized file"] = repeat(
                "s3 upload",
                k,
                lambda i: run_s3_upload(moto, store, work, size, i),
                mb,
                args.quiet_wait,
            )
        for label, env in args.variant:
            results[f"a packager, variant {label}"] = repeat(
                f"packager {label}",
                k,
                functools.partial(_variant_run, args, work, moto, store, accession, label, env),
                mb,
                args.quiet_wait,
            )
        if "a" not in skip and args.untimed:
            results["a' packager without step timers"] = repeat(
                "packager (no timers)",
                k,
                lambda i: run_packager(args, work, moto, store, accession, f"u{i}", False),
                mb,
                args.quiet_wait,
            )
        rows = summarise(results, total)
        md = table(rows)
        print(
            f"\n{n} instances x {args.rows}x{args.cols} x 16 bit, {mb:.1f} MB, "
            f"median of {k}\n\n{md}"
        )
        extra = ""
        if pk:
            extra = breakdown_table(pk)
            print(f"\npackager breakdown (median of {k})\n\n{extra}")
            print(f"\npackager VmHWM: {max(r['vmhwm_kb'] for r in pk) / 1024:.0f} MiB")
        nat = results.get("b native: dcmmkdir + genisoimage (local disk)")
        if nat:
            print(
                f"\nnative: dcmmkdir {statistics.median(r['dcmmkdir_s'] for r in nat):.2f}s"
                f" + genisoimage {statistics.median(r['genisoimage_s'] for r in nat):.2f}s"
            )
        path = rb.write_json(
            "package",
            {
                "mode": "throughput",
                "args": vars(args),
                "machine": rb.machine(),
                "versions": versions(),
                "instances": n,
                "rows": args.rows,
                "cols": args.cols,
                "total_bytes": total,
                "results": results,
                "summary": rows,
                "markdown": md,
                "breakdown_markdown": extra,
            },
        )
        print(f"\nraw numbers: {path.relative_to(ROOT)}")


def memory_mode(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.memory_sizes.split(",")]
    px = args.memory_rows
    out: list[dict[str, Any]] = []
    with environment(args) as (work, cache, moto):
        stores = {}
        for n in sizes:
            accession = f"MEM{n}X{px}"[:16]  # bench/retrieve.py --memory's studies
            _, files = rb.study_files(cache / f"ct-{n}x{px}x{px}", n, px, px, accession)
            store = make_store(moto, f"bench-package-m{n}")
            seed(store, files, accession)
            stores[n] = (store, accession, sum(f.stat().st_size for f in files))
        for n in sizes:
            store, accession, total = stores[n]
            for i in range(args.memory_repeat or args.repeat):
                r = run_packager(args, work, moto, store, accession, f"m{n}-{i}")
                r.update(instances=n, total_bytes=total)
                log(
                    f"memory {n}: {r['seconds']:.2f}s, RSS before {r['rss_before_kb'] / 1024:.0f}"
                    f" MiB, VmHWM {r['vmhwm_kb'] / 1024:.0f} MiB, ru_maxrss "
                    f"{r['ru_maxrss_kb'] / 1024:.0f} MiB"
                )
                out.append(r)
    lines = [
        "| instances | study MB | image MB | seconds | RSS before submit MiB "
        "| VmHWM MiB | ru_maxrss MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        runs = [r for r in out if r["instances"] == n]
        med = statistics.median
        lines.append(
            f"| {n:,} | {runs[0]['total_bytes'] / 1e6:.1f} | "
            f"{runs[0]['result']['size'] / 1e6:.1f} | {med(r['seconds'] for r in runs):.2f}"
            f" | {med(r['rss_before_kb'] for r in runs) / 1024:.0f}"
            f" | {max(r['vmhwm_kb'] for r in runs) / 1024:.0f}"
            f" | {max(r['ru_maxrss_kb'] for r in runs) / 1024:.0f} |"
        )
    md = "\n".join(lines)
    print(f"\npackager build memory, {px}x{px} CT\n\n{md}")
    path = rb.write_json(
        "package-memory",
        {
            "mode": "memory",
            "args": vars(args),
            "machine": rb.machine(),
            "versions": versions(),
            "runs": out,
            "markdown": md,
        },
    )
    print(f"\nraw numbers: {path.relative_to(ROOT)}")


def parse_variant(value: str) -> tuple[str, dict[str, str]]:
    label, _, env = value.partition(":")
    return label, dict(rb.parse_env(e) for e in env.split(",") if e)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_moto":
        return rb.moto_main(int(sys.argv[2]))
    if len(sys.argv) > 1 and sys.argv[1] == "--_build":
        return build_main(sys.argv[2], sys.argv[3])
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--cols", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3, help="K: runs per path (median reported)")
    p.add_argument("--keep-dir", help="cache generated studies here (shared with retrieve.py)")
    p.add_argument("--keep-work", action="store_true", help="keep logs and work files")
    p.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c", "d", "e", "f"])
    p.add_argument(
        "--untimed",
        action="store_true",
        help="also run the packager K times without step timers (their overhead)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each run, wait up to this many s for other benches/pytest",
    )
    p.add_argument("--memory", action="store_true", help="instead: peak RSS of the build")
    p.add_argument("--memory-sizes", default="200,2000")
    p.add_argument("--memory-rows", type=int, default=128, help="rows = cols in --memory")
    p.add_argument("--memory-repeat", type=int, default=None, help="default: --repeat")
    p.add_argument(
        "--packager-env",
        type=rb.parse_env,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the build subprocess",
    )
    p.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="LABEL:K=V,K=V",
        help="extra packager runs with this environment",
    )
    p.add_argument(
        "--packager-pythonpath", help="PYTHONPATH for the build (a patched copy of the sources)"
    )
    args = p.parse_args()
    if args.memory:
        memory_mode(args)
    else:
        throughput_mode(args)
    return None


if __name__ == "__main__":
    main()
