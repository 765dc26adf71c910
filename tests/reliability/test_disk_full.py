"""The temporary image does not fit: DICOMISO_WORK_DIR is a 2 MiB tmpfs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability.helpers import plain_study


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (the tests run as root), unmounted afterwards."""
    mount = tmp_path / "work"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_work_dir_full_fails_the_package_naming_the_space(
    make_system: Any, study_factory: Any, small_tmpfs: Path
) -> None:
    """A ~5 MB image on a 2 MiB work dir: failed, the reason says space and where, no temp
    file is left on the tmpfs, nothing under packages/."""
    study = plain_study(study_factory, "RM-R-DISK", ct=40, rows=256, cols=256)
    system = make_system(work_dir=small_tmpfs)
    system.pacs.upload(study.files)
    system.register("RM-R-DISK", "Wulan Sari", study)

    response = system.post({"accession_numbers": [study.accession]})
    assert response.status_code == 202, response.text
    status = system.wait(response.json()["id"])

    assert status["state"] == "failed", status
    assert list(small_tmpfs.iterdir()) == []  # the temporary directory went with the job
    assert system.keys("packages/") == []
    assert "no space left" in status["error"] and "DICOMISO_WORK_DIR" in status["error"], status[
        "error"
    ]
