"""The local stack as a newcomer runs it: `dicom-iso dev`, `package`, `verify`, Ctrl-C.

The stack runs as a real subprocess on shifted ports with its own state directory; the CLI
talks to it over HTTP like any user would.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pycdlib
import pytest

from dicomiso_tools.dev import Ports

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> set[int]:
    """Every descendant of pid (from /proc), so the test can check each one is gone."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                kids = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except FileNotFoundError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@dataclass
class DevStack:
    proc: subprocess.Popen[str]
    ports: Ports
    lines: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        p = self.ports
        return {
            **os.environ,
            "DICOMISO_PACKAGER_URL": f"http://127.0.0.1:{p.packager}",
            "DICOMISO_LOOKUP_URL": f"http://127.0.0.1:{p.lookup}",
            "DICOMISO_RETRIEVER_URL": f"http://127.0.0.1:{p.retriever}",
            "DICOMISO_FORWARDER_URL": f"http://127.0.0.1:{p.forwarder}",
        }

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "dicom-iso"), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )


def _free_base() -> int:
    for _ in range(50):
        base = random.randrange(20_000, 40_000, 10) - 8001
        if not Ports.standard(base).taken():
            return base
    raise RuntimeError("no free port range")


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[DevStack]:
    base = _free_base()
    proc = subprocess.Popen(
        [
            str(BIN / "dicom-iso"),
            "dev",
            "--port-base",
            str(base),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stack = DevStack(proc, Ports.standard(base))
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stack.lines.append(line.rstrip())
            if "ready:" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        raise AssertionError("stack did not start:\n" + "\n".join(stack.lines[-40:]))
    yield stack
    if proc.poll() is None:
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=10)


def _corrupt_dicomdir(image: Path, target: Path) -> None:
    """Copy the image and change one digit of a SOP Instance UID inside its DICOMDIR."""
    iso = pycdlib.PyCdlib()
    iso.open(str(image))
    record = iso.get_record(iso_path="/DICOMDIR.;1")
    start, length = record.extent_location() * 2048, record.get_data_length()
    iso.close()
    data = bytearray(image.read_bytes())
    region = bytes(data[start : start + length])
    tag = region.index(b"\x04\x00\x11\x15UI")  # (0004,1511) Referenced SOP Instance UID
    pos = start + tag + 8 + 30  # a digit past the UID root
    assert chr(data[pos]).isdigit()
    data[pos] = ord("7") if data[pos] != ord("7") else ord("3")
    target.write_bytes(bytes(data))


def test_newcomer_flow_package_verify_and_ctrl_c(dev_stack: DevStack, tmp_path: Path) -> None:
    """package -> a disc on disk that verify accepts; a corrupted DICOMDIR is named; Ctrl-C
    leaves no child running; then package says in one line which service is down."""
    out = tmp_path / "discs"
    out.mkdir()
    run = dev_stack.cli("--json", "package", "MR.001,CT.002", "--download", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    image = out / "BudiSantoso-MR001CT002.iso"
    assert image.exists(), (result, list(out.iterdir()))
    # The same request again finds the package done: the JSON still has its phase and counts,
    # and every time is ISO 8601; the text names the job.
    again = dev_stack.cli("--json", "package", "MR.001,CT.002", "--download", str(out))
    doc = json.loads(again.stdout)
    assert doc["id"] == result["id"] and doc["phase"] == "done", doc
    assert doc["counts"]["instances"] > 0, doc
    for name in ("created_at", "updated_at", "expires_at"):
        assert datetime.fromisoformat(doc[name]).tzinfo is not None, (name, doc[name])
    text = dev_stack.cli("package", "MR.001,CT.002", "--download", str(out))
    assert text.stdout.startswith(f"package {result['id']}: disc saved: "), text.stdout
    page = httpx.get(result["view_url"], trust_env=False, timeout=30)  # the online page
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="dicomiso-study">{' in page.text

    assert dev_stack.cli("verify", str(image)).returncode == 0
    broken = tmp_path / "broken.iso"
    _corrupt_dicomdir(image, broken)
    checked = dev_stack.cli("verify", str(broken))
    assert checked.returncode != 0
    assert "DICOMDIR" in checked.stdout + checked.stderr

    # Another port base than the standard one: the banner says to source <state>/env, and the
    # line it prints works as typed, without any DICOMISO_*_URL of ours.
    try_line = next(line for line in dev_stack.lines if "try: source " in line)
    command = try_line.split("try: ", 1)[1].replace("uv run dicom-iso", str(BIN / "dicom-iso"))
    command = command.replace("package MR.001,CT.002 --download", "lookup MR.001 #")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DICOMISO_")}
    typed = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=clean, capture_output=True, text=True, check=False
    )
    assert typed.returncode == 0 and "Budi Santoso" in typed.stdout, typed.stdout + typed.stderr
    assert any("demo-pacs" in line for line in dev_stack.lines)

    children = _children(dev_stack.proc.pid)
    assert len(children) >= 6  # moto, Orthanc, four services (uv may add one level)
    dev_stack.proc.send_signal(signal.SIGINT)
    assert dev_stack.proc.wait(timeout=60) == 0
    time.sleep(0.5)
    assert [pid for pid in children if _alive(pid)] == []

    down = dev_stack.cli("package", "MR.001")
    lines = [line for line in down.stderr.splitlines() if line.strip()]
    assert down.returncode == 3 and len(lines) == 1, down.stderr
    assert "packager" in lines[0] and "unreachable" in lines[0]
