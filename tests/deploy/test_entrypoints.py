"""The image's entry points, started the way the manifests start them, outside a container.

Each service runs as its own process with the Deployment's `command` (the console script
on PATH, as /app/.venv/bin is in the image), against a moto S3 on loopback, and must answer
/healthz and /readyz, pass the image's HEALTHCHECK script, stay under its memory request
when idle and stop on SIGTERM, as the kubelet stops it. The lab's bucket Job runs its
command the same way.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from dicomiso_packager.app import PACKAGES_PREFIX
from dicomiso_packager.settings import PackagerSettings
from support.net import LOOPBACK, free_port

from .conftest import DEPLOY, SERVICES, base_deployment

VENV_BIN = Path(sys.executable).parent


def load_script(name: str) -> ModuleType:
    """Import one of deploy/'s scripts (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, DEPLOY / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MIB = {"Mi": 1, "Gi": 1024}


def service_env(s3_bucket, tmp_path: Path, port: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The process environment: the pod's PATH order, loopback instead of 0.0.0.0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMISO_")}
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "DICOMISO_HTTP_HOST": LOOPBACK,
            "DICOMISO_HTTP_PORT": str(port),
            "DICOMISO_S3_ENDPOINT_URL": s3_bucket.endpoint_url,
            "DICOMISO_S3_BUCKET": s3_bucket.name,
            "DICOMISO_SCP_HOST": LOOPBACK,
            "DICOMISO_SCP_PORT": str(free_port()),
            "DICOMISO_PACS_HOST": LOOPBACK,
            "DICOMISO_PACS_PORT": str(free_port()),  # nothing listens: not needed to be healthy
            "DICOMISO_WORK_DIR": str(tmp_path),
            "DICOMISO_MANAGE_LIFECYCLE": "false",
            "TMPDIR": str(tmp_path),
            "NO_PROXY": "*",
        }
    )
    return env


@pytest.fixture
def started(
    request: pytest.FixtureRequest,
    s3_bucket: Any,
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], str, dict[str, str]]]:
    """One service process, started with its Deployment's command; stopped by PID after."""
    name = request.param
    command = base_deployment(name)["spec"]["template"]["spec"]["containers"][0]["command"]
    port = free_port()
    env = service_env(s3_bucket, tmp_path, port)
    log = (tmp_path / f"{name}.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        yield proc, f"http://{LOOPBACK}:{port}", env
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"exited with {proc.returncode}"
            try:
                if client.get(f"{url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    pytest.fail(f"{url}/healthz not 200 within {timeout}s")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("started", list(SERVICES), indirect=True)
def test_service_starts_with_its_manifest_command(
    started: tuple[subprocess.Popen[bytes], str, dict[str, str]], request: pytest.FixtureRequest
) -> None:
    """Healthy and ready on S3 (lookup without a HIS: PACS mode), the HEALTHCHECK script
    agrees, idle RSS is below the memory request, and SIGTERM stops it within the grace
    period."""
    proc, url, env = started
    name = request.node.callspec.params["started"]
    wait_healthy(proc, url)
    with httpx.Client(trust_env=False, timeout=10) as client:
        ready = client.get(f"{url}/readyz")
    assert ready.status_code == 200, ready.text

    check = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert check.returncode == 0, check.stderr

    pod = base_deployment(name)["spec"]["template"]["spec"]
    request_mem = pod["containers"][0]["resources"]["requests"]["memory"]
    assert rss_mib(proc.pid) < int(request_mem[:-2]) * MIB[request_mem[-2:]], request_mem

    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal (exit by SIGTERM, not 0)
    assert proc.wait(timeout=pod["terminationGracePeriodSeconds"]) in (0, -signal.SIGTERM)
    log = (Path(env["TMPDIR"]) / f"{name}.log").read_text()
    assert "Application shutdown complete" in log, log[-2000:]


def test_healthcheck_fails_when_nothing_answers(tmp_path: Path) -> None:
    """The HEALTHCHECK exits non-zero when the service does not answer."""
    env = {"PATH": os.environ["PATH"], "DICOMISO_HTTP_PORT": str(free_port()), "NO_PROXY": "*"}
    check = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert check.returncode == 1


def test_bucket_job_creates_bucket_and_lifecycle(s3_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The lab Job's command makes the bucket and its packages/ expiry rule, idempotently."""
    job = yaml.safe_load((DEPLOY / "k8s" / "overlays" / "lab" / "bucket-init.yaml").read_text())
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["python", "/app/bucket_init.py"]  # the image's copy of deploy/
    bucket = f"dicom-iso-{uuid.uuid4().hex[:20]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMISO_")}
    env.update(
        {
            "DICOMISO_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "DICOMISO_S3_BUCKET": bucket,
            "DICOMISO_PACKAGE_EXPIRY_DAYS": "3",
            "NO_PROXY": "*",
        }
    )
    argv = [sys.executable, str(DEPLOY / "bucket_init.py")]
    client = s3_server.client()
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, proc.stderr
        # a second run (the Job again, an admin) changes nothing
        module = load_script("bucket_init")
        settings = PackagerSettings(
            s3_endpoint_url=s3_server.endpoint_url, s3_bucket=bucket, package_expiry_days=3
        )
        module.init_bucket(settings)
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        expiry = {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules}
        assert expiry == {
            "packages/": 3,
            "jobs/package/": 30,
            "jobs/retrieve/": 30,
            "jobs/forward/": 30,
            "forwards/": 30,
        }
        assert len(rules) == len(expiry)
        assert all(r["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1} for r in rules)
    finally:
        client.delete_bucket(Bucket=bucket)


def test_bucket_job_sets_the_packagers_prefix() -> None:
    """The Job's rule covers the prefix the packager writes images under."""
    rules = load_script("bucket_init").all_rules(PackagerSettings())
    assert PACKAGES_PREFIX in rules
