#!/usr/bin/env python
"""A study bigger than one DVD: the packager's set of discs, time and memory.

Run by hand (never collected by pytest), from the repository root:

    uv run --frozen python bench/discs.py --keep-dir /tmp/bench-discs

It generates (or reuses from --keep-dir) one synthetic CT study of `--series` series of
`--slices` 512x512 16-bit slices each (default 4 x 2,500 = 10,000 instances, 5.26 GB), seeds
it into a moto S3 bucket as the retriever leaves it (bench/package.py `seed`), and runs the
package build of bench/package.py (`--_build`: the real `Jobs` runner and
`Packaging._build_and_upload`, minus lookup and retrieval) with the DVD profile
(STD-GEN-DVD-JPEG, 4,700,000,000 bytes), so the plan makes a set of discs. Then the same
build of one series alone (`--series 1`, one disc) for comparison: the peak RSS (VmHWM) of
the build process should not grow with the study or the number of discs. The online page is
off (DICOMISO_VIEW_ONLINE=false): with it the same build also writes one ZIP of everything.

Reported: wall seconds, CPU seconds of the build process and of the whole machine's
processes we started (bench/retrieve.py CpuMeter), peak RSS, the discs (size each), and the
load average before and after (other work on the machine makes wall time noisy; CPU
seconds are steadier). Raw numbers go to bench/out/discs-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import package as pb  # noqa: E402  (bench/package.py: seed, moto, the build subprocess)
import retrieve as rb  # noqa: E402

from support.studies import make_ct_series  # noqa: E402


def study_files(cache: Path, series: int, slices: int, accession: str) -> list[Path]:
    """`series` CT series of one study, cached: the same files on a second run."""
    from pydicom.uid import generate_uid

    root = cache / f"discs-{series}x{slices}"
    done = root / "done.json"
    if done.exists():
        return [root / p for p in json.loads(done.read_text())["files"]]
    study_uid = generate_uid()
    files: list[Path] = []
    for s in range(series):
        study = make_ct_series(
            root / f"series{s + 1}", slices, accession=accession, study_uid=study_uid, seed=s
        )
        files += study.files
    done.write_text(json.dumps({"files": [str(p.relative_to(root)) for p in files]}))
    return files


def one_run(args: argparse.Namespace, series: int, tag: str) -> dict[str, Any]:
    accession = f"DISCS{series}X{args.slices}"[:16]
    with pb.environment(args) as (work, cache, moto):
        files = study_files(cache, series, args.slices, accession)
        total = sum(f.stat().st_size for f in files)
        store = pb.make_store(moto, f"bench-discs-{tag}")
        pb.seed(store, files, accession)
        load_before = os.getloadavg()
        rb.log(f"{tag}: {len(files)} instances, {total / 1e9:.2f} GB; building")
        r = pb.run_packager(
            args,
            work,
            moto,
            store,
            accession,
            tag,
            timers=False,
            extra_env={"DICOMISO_VIEW_ONLINE": "false"},
        )
        load_after = os.getloadavg()
    discs = r["result"].get("discs") or []
    return {
        "tag": tag,
        "series": series,
        "instances": len(files),
        "study_bytes": total,
        "seconds": round(r["seconds"], 1),
        "packager_cpu_s": r["packager_cpu_s"],
        "cpu_s": r["cpu_s"],
        "vmhwm_mib": round(r["vmhwm_kb"] / 1024, 1),
        "ru_maxrss_mib": round(r["ru_maxrss_kb"] / 1024, 1),
        "discs": [{"number": d["number"], "size": d["size"]} for d in discs],
        "plan": r["result"].get("plan"),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--series", type=int, default=4)
    p.add_argument("--slices", type=int, default=2500, help="512x512 slices per series")
    p.add_argument("--keep-dir", help="cache the generated study here")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--skip-single", action="store_true", help="no one-series comparison run")
    p.add_argument("--packager-env", type=rb.parse_env, action="append", default=[])
    p.add_argument("--packager-pythonpath")
    args = p.parse_args()
    runs = [one_run(args, args.series, "set")]
    if not args.skip_single:
        runs.append(one_run(args, 1, "single"))
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    path = out / f"discs-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"versions": rb.versions(), "runs": runs}, indent=2))
    print("| run | instances | GB | discs (GB each) | wall s | build CPU s | peak RSS MiB | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        sizes = ", ".join(f"{d['size'] / 1e9:.2f}" for d in r["discs"])
        print(
            f"| {r['tag']} | {r['instances']} | {r['study_bytes'] / 1e9:.2f} | "
            f"{len(r['discs'])} ({sizes}) | {r['seconds']} | {r['packager_cpu_s']} | "
            f"{r['vmhwm_mib']} | {r['load_before'][0]} -> {r['load_after'][0]} |"
        )
    print(f"raw: {path}")


if __name__ == "__main__":
    main()
