"""LocalStack's S3 as a plain process on loopback, with SigV4 signature checks on.

moto's server checks neither signatures nor expiry; LocalStack's S3 provider checks both when
S3_SKIP_SIGNATURE_VALIDATION=0. It runs from its own venv (it needs Python 3.13 and pins its
own boto3): tests/common/PRESIGN_ENDPOINT.md has the install commands. LocalStack verifies
links for access keys it does not know with the secret "test" (`VERIFIED_SECRET`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.net import LOOPBACK, free_port

LOCALSTACK_PYTHON = os.environ.get(
    "DICOMISO_TEST_LOCALSTACK_PYTHON", "/opt/dicomiso-localstack/bin/python"
)
VERIFIED_SECRET = "test"  # LocalStack's secret for access keys it has not issued itself

# LocalStack would look up "s3.localhost.localstack.cloud" in DNS at start; tell it the
# answer (no) first, so that nothing leaves loopback.
_BOOT = """
import localstack.utils.aws.aws_stack as aws_stack
aws_stack.CACHE_S3_HOSTNAME_DNS_STATUS = False
from localstack.runtime.main import main
main()
"""


@dataclass(frozen=True)
class VerifyingS3:
    """A running LocalStack S3: `endpoint_url` for the services, `public_url` for links."""

    endpoint_url: str
    public_url: str


def s3_env(home: Path, port: int, *, verify_signatures: bool) -> dict[str, str]:
    """The environment of a LocalStack running S3 alone on loopback `port`, state in `home`."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LOCALSTACK_VOLUME_DIR": str(home / "volume"),
        "GATEWAY_LISTEN": f"{LOOPBACK}:{port}",
        "SERVICES": "s3",
        "EAGER_SERVICE_LOADING": "1",
        "S3_SKIP_SIGNATURE_VALIDATION": "0" if verify_signatures else "1",
        # no analytics, no certificate download, no DNS server, no pinging Docker bridges
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "DNS_ADDRESS": "0",
        "DOCKER_BRIDGE_IP": LOOPBACK,
    }


@contextmanager
def verifying_s3(home: Path) -> Iterator[VerifyingS3]:
    """LocalStack's S3 alone, on a free loopback port, with signature checks on; state in
    `home`; killed by its PID afterwards."""
    if not Path(LOCALSTACK_PYTHON).exists():
        pytest.fail(
            f"{LOCALSTACK_PYTHON} missing: install LocalStack as "
            "tests/common/PRESIGN_ENDPOINT.md says"
        )
    port = free_port()
    env = s3_env(home, port, verify_signatures=True)
    log_path = home / "localstack.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [LOCALSTACK_PYTHON, "-c", _BOOT],
            env=env,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://{LOOPBACK}:{port}"
    try:
        _wait_until_ready(proc, endpoint, log_path)
        yield VerifyingS3(endpoint_url=endpoint, public_url=f"http://localhost:{port}")
    finally:
        proc.kill()  # one process, state in a tmp dir: SIGTERM would only cost 2.5 s
        proc.wait(timeout=30)


def _wait_until_ready(
    proc: subprocess.Popen[bytes], endpoint: str, log_path: Path, timeout: float = 90.0
) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                health = http.get(f"{endpoint}/_localstack/health").json()
                if health["services"].get("s3") in ("running", "available"):
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"LocalStack S3 did not come up (exit {proc.poll()}):\n{tail}")
