"""Load driver (by hand, not CI): concurrent package requests against running packagers.

It drives a stack that is already running: `dicom-iso dev --port-base 200` plus, for two
replicas, `bash bench/load_second_replica.sh`; afterwards `bench/load_moves.py` tells how
often each study was moved. The run and its figures: docs/reliability.md, "Load".

    uv run --frozen python bench/load.py --packager http://127.0.0.1:8003 \
        --packager http://127.0.0.1:8013 --accessions A1,A2 --accessions A3 ... \
        --requests 20 --pids 1234,1235

Each `--accessions` is one patient's request body; the requests are spread round-robin over
the packagers and the accession lists. Reports: completed/failed, 5xx count, time from POST
to a link (p50/p99), discs per minute, and VmHWM (peak RSS) of the given PIDs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx


def package(url: str, token: str, accessions: list[str], timeout: float) -> dict[str, Any]:
    """POST one package, poll until it ends; the seconds to the link and the 5xx seen."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    errors_5xx = 0
    start = time.monotonic()
    with httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False) as http:
        r = http.post("/v1/packages", json={"accession_numbers": accessions})
        if r.status_code >= 500 or r.status_code != 202:
            return {"state": f"http {r.status_code}", "5xx": int(r.status_code >= 500)}
        job = r.json()["id"]
        while time.monotonic() - start < timeout:
            s = http.get(f"/v1/packages/{job}")
            if s.status_code >= 500:
                errors_5xx += 1
            elif s.json()["state"] in ("succeeded", "failed"):
                return {
                    "state": s.json()["state"],
                    "job": job,
                    "5xx": errors_5xx,
                    "seconds": time.monotonic() - start,
                }
            time.sleep(0.5)
    return {"state": "timeout", "job": job, "5xx": errors_5xx}


def vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packager", action="append", required=True)
    ap.add_argument(
        "--accessions",
        action="append",
        required=True,
        help="comma-separated accession numbers of one patient (repeatable)",
    )
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--pids", default="", help="comma-separated PIDs for VmHWM")
    args = ap.parse_args()
    token = os.environ.get("DICOMISO_CALL_TOKEN") or os.environ.get("DICOMISO_API_TOKEN", "")
    bodies = [[a for a in acc.split(",") if a] for acc in args.accessions]
    start = time.monotonic()
    with ThreadPoolExecutor(args.requests) as pool:
        results = list(
            pool.map(
                lambda i: package(
                    args.packager[i % len(args.packager)],
                    token,
                    bodies[i % len(bodies)],
                    args.timeout,
                ),
                range(args.requests),
            )
        )
    wall = time.monotonic() - start
    times = sorted(r["seconds"] for r in results if r["state"] == "succeeded")
    report = {
        "requests": args.requests,
        "packagers": len(args.packager),
        "succeeded": len(times),
        "other": [r["state"] for r in results if r["state"] != "succeeded"],
        "http_5xx": sum(r["5xx"] for r in results),
        "wall_s": round(wall, 1),
        "discs_per_minute": round(len(times) / wall * 60, 2) if wall else None,
        "p50_s": round(statistics.median(times), 1) if times else None,
        "p99_s": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1) if times else None,
        "distinct_jobs": len({r.get("job") for r in results if r.get("job")}),
        "vm_hwm_kib": {p: vm_hwm_kib(int(p)) for p in args.pids.split(",") if p},
    }
    print(json.dumps(report, indent=2))  # noqa: T201 - a bench script reports on stdout


if __name__ == "__main__":
    main()
