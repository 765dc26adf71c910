"""Time the disc viewer in headless Chromium on a 1,000-slice 512x512 CT disc folder.

Measures (docs/benchmarks.md, "Viewer"): the built bundle's size; the time from choosing
the folder to the first image painted (in the page: the input's change event to the first
canvas render followed by an animation frame; and from Python: send_keys to that moment);
slices per second while scrolling (N ArrowDown key events, each waiting for its slice to be
drawn and the next animation frame); CPU seconds of the browser's processes. Run by hand:

    uv run --frozen python bench/viewer.py --keep-dir /tmp/dicomiso-viewer-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pydicom.fileset import FileSet
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dicomiso_packager.viewer import bundle_html  # noqa: E402
from support.studies import make_ct_series  # noqa: E402
from support.viewer import chromium, wait_for  # noqa: E402

SCROLL = """
const [count, done] = [arguments[0], arguments[arguments.length - 1]];
const stage = document.getElementById('stage');
const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
(async () => {
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const want = dicomisoViewer.stats.paints + 1;
    stage.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
    while (dicomisoViewer.stats.paints < want) await frame();
  }
  await frame();
  done([performance.now() - start, dicomisoViewer.state().index]);
})();
"""


def disc_folder(base: Path, slices: int) -> Path:
    """DICOMDIR + slices (pydicom's FileSet), VIEWER/VIEWER.HTM; cached in base."""
    root = base / f"disc-{slices}"
    if not (root / "DICOMDIR").is_file():
        shutil.rmtree(root, ignore_errors=True)
        study = make_ct_series(base / f"src-{slices}", slices)
        fs = FileSet()
        for path in study.files:
            fs.add(path)
        fs.write(root)
        shutil.rmtree(base / f"src-{slices}")
    (root / "VIEWER").mkdir(exist_ok=True)
    shutil.copy(bundle_html(), root / "VIEWER" / "VIEWER.HTM")
    return root


def browser_cpu(driver_pid: int) -> float:
    """User + system CPU seconds of chromedriver's descendants (the browser's processes)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            stats[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, list(children.get(driver_pid, []))
    while todo:
        pid = todo.pop()
        total += stats.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--scroll", type=int, default=300, help="slices scrolled per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep-dir", type=Path, help="cache the generated disc folder here")
    parser.add_argument("--scan", action="store_true", help="without DICOMDIR: read every header")
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args()
    base = args.keep_dir or Path(tempfile.mkdtemp(prefix="viewer-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    root = disc_folder(base, args.slices)
    print(f"disc folder ready in {time.monotonic() - t0:.1f} s: {root}", flush=True)
    bundle = bundle_html().stat().st_size
    hidden = base / "DICOMDIR.hidden"
    if args.scan:
        (root / "DICOMDIR").rename(hidden)
    try:
        runs = measure(root, args)
    finally:
        if args.scan:
            hidden.rename(root / "DICOMDIR")
    median = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
    result = {"slices": args.slices, "scrolled": args.scroll, "dicomdir": not args.scan,
              "bundle_bytes": bundle, "median": median, "runs": runs}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep_dir:
        shutil.rmtree(base)


def measure(root: Path, args: argparse.Namespace) -> list[dict[str, float]]:
    """One fresh browser per run: choose the folder, first image, then scroll."""
    runs = []
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory() as profile, chromium(Path(profile)) as driver:
            driver.get((root / "VIEWER" / "VIEWER.HTM").as_uri())
            cpu0 = browser_cpu(driver.service.process.pid)
            sent = time.monotonic()
            driver.find_element(By.ID, "folder").send_keys(str(root))
            first = wait_for(
                driver,
                "dicomisoViewer.stats.firstImageAt && "
                "dicomisoViewer.stats.firstImageAt - dicomisoViewer.stats.chosenAt",
                120,
            )
            outside = time.monotonic() - sent
            wait_for(driver, "dicomisoViewer.state().thumbnails", 60)
            cpu1 = browser_cpu(driver.service.process.pid)
            elapsed, index = driver.execute_async_script(SCROLL, args.scroll)
            cpu2 = browser_cpu(driver.service.process.pid)
            assert index == args.scroll, index
            runs.append({
                "first_image_in_page_s": round(first / 1000, 3),
                "first_image_from_send_keys_s": round(outside, 3),
                "scroll_slices_per_s": round(args.scroll / (elapsed / 1000), 1),
                "browser_cpu_s_to_first_image": round(cpu1 - cpu0, 2),
                "browser_cpu_s_scrolling": round(cpu2 - cpu1, 2),
            })  # fmt: skip
            print(f"run {run + 1}: {json.dumps(runs[-1])}", flush=True)
    return runs


if __name__ == "__main__":
    main()
