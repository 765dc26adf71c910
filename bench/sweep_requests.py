"""S3 requests of one job sweep, after N and after M finished jobs (run by hand).

    uv run --frozen python bench/sweep_requests.py [--finished 10,100,1000]

Starts a moto server on loopback, a logging proxy in front of it (tests/support/s3fault.py),
runs that many trivial jobs to completion, then counts the requests of one `Jobs.sweep()`.
Uses only the public Jobs API, so the same script measures an older dicomiso_common too
(put its source first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dicomiso_common.jobs import JobHandle, Jobs  # noqa: E402
from dicomiso_common.settings import CommonSettings  # noqa: E402
from dicomiso_common.store import Store  # noqa: E402
from support.s3fault import S3Fault  # noqa: E402


def _done(_handle: JobHandle) -> dict[str, Any]:
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--finished", default="10,100,1000")
    counts = [int(n) for n in parser.parse_args().finished.split(",")]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    upstream = f"http://{host}:{port}"
    bucket = f"sweep-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=upstream,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    ).create_bucket(Bucket=bucket)
    try:
        with S3Fault(upstream) as proxy:
            settings = CommonSettings(
                s3_endpoint_url=proxy.url,
                s3_bucket=bucket,
                job_heartbeat=0.5,
                job_stale_after=3.0,
                replica_id="bench",
                job_workers=8,
            )
            jobs = Jobs(Store.from_settings(settings), "bench", settings, _done)
            made = 0
            for target in counts:
                ids = [jobs.submit({"n": i}).id for i in range(made, target)]
                made = target
                while any(jobs.get(j).state != "succeeded" for j in ids):
                    time.sleep(0.1)
                before = len(proxy.requests)
                jobs.sweep()
                sweep = proxy.requests[before:]
                kinds = sorted({m for m, _ in sweep})
                print(f"finished jobs {target:6d}: one sweep = {len(sweep)} S3 requests {kinds}")
            jobs.shutdown()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
