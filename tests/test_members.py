"""Each workspace member installs and imports on its own, outside the workspace venv."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("members", "module"),
    [
        (["libs/common"], "dicomiso_common.jobs"),
        (["libs/common", "services/retriever"], "dicomiso_retriever.app"),
        (["libs/common", "services/lookup"], "dicomiso_lookup.app"),
        (["libs/common", "libs/client", "services/forwarder"], "dicomiso_forwarder.app"),
        (["libs/common", "libs/client"], "dicomiso_client"),
        (["libs/common", "libs/client", "libs/tools"], "dicomiso_tools.cli"),
        (["libs/common", "libs/client", "services/packager"], "dicomiso_packager.app"),
    ],
)
def test_member_installs_and_imports_alone(members: list[str], module: str, tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv, "uv is installed by .ci/run"
    args = [uv, "run", "--isolated", "--no-project", "--quiet", "--python", "3.11"]
    for member in members:
        args += ["--with", str(ROOT / member)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    result = subprocess.run(
        [*args, "python", "-c", f"import {module}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
