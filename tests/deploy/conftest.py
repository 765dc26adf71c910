"""Shared helpers of the deploy tests: the repository's deploy/ tree, rendered with kubectl.

Nothing here is downloaded: kubectl's built-in kustomize renders the overlays, and the
schemas of kubernetes-validate ship inside its wheel. A missing tool fails the test (CI must
not pass by skipping what it was meant to check).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .docker_support import Docker, build_image, own_dockerd

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("lab", "production")
SERVICES = {"lookup": 8001, "retriever": 8002, "packager": 8003, "forwarder": 8004}
SCP_PORT = 10104


def tool(name: str) -> str:
    """Path of a command-line tool from the project venv or PATH; fail loudly if absent."""
    found = shutil.which(
        name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if found is None:
        pytest.fail(
            f"{name} is not installed (see docs/deploy.md, 'Checks'): this test must run, not skip"
        )
    return found


def render(overlay: str) -> str:
    """`kubectl kustomize` of one overlay, as YAML text."""
    path = DEPLOY / "k8s" / "overlays" / overlay
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="session")
def rendered_text() -> dict[str, str]:
    return {name: render(name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Every object of every overlay, parsed."""
    return {
        name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered_text.items()
    }


def base_deployment(service: str) -> dict[str, Any]:
    """The Deployment of one service as written in deploy/k8s/base (no kubectl needed)."""
    docs = yaml.safe_load_all((DEPLOY / "k8s" / "base" / f"{service}.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "Deployment")


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    """The tests' own dockerd (tests/deploy/docker_support.py), stopped at the end."""
    with own_dockerd() as engine:
        yield engine


@pytest.fixture(scope="session")
def image(docker: Docker) -> str:
    """The image deploy/build-image.sh builds from this checkout (cached layers make a
    second run fast); its tag."""
    tag = "dicom-iso:ci"
    started = time.monotonic()
    proc = build_image(docker, ROOT, tag)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    assert proc.stdout.strip().splitlines()[-1] == tag, proc.stdout
    sys.stderr.write(f"\nbuild-image.sh: {time.monotonic() - started:.0f} s\n")
    return tag
