"""deploy/compose.yaml, run by Debian's docker-compose (1.29) with tests/deploy/compose.host.yaml:
the built image, every container on the host network, the moto server in place of MinIO
(MinIO's image is on Docker Hub, which these machines cannot reach), the test's Orthanc and
MariaDB HIS on the host. One accession is packaged end to end and `dicom-iso verify` passes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import moto
import pytest
import yaml

from support.mariadb import add_patient, his_database
from support.net import free_port
from support.studies import make_study

from .conftest import DEPLOY, ROOT
from .docker_support import Docker, download_and_verify

# The first test of a session may build the image from scratch (debootstrap, every wheel):
# minutes on a fresh machine, well past the suite's per-test timeout.
pytestmark = pytest.mark.timeout(2400)


COMPOSE = DEPLOY / "compose.yaml"
OVERRIDE = Path(__file__).with_name("compose.host.yaml")
USER_TOKEN = "compose-user-token"


def compose(
    docker: Docker, project: str, env: dict[str, str], *args: str, files: list[Path]
) -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("Debian's docker-compose is not installed (scripts/setup installs it)")
    proc = subprocess.run(
        [exe, "-p", project, *[a for f in files for a in ("-f", str(f))], *args],
        cwd=ROOT,
        env={**docker.env, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"docker-compose {' '.join(args)}:\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def wait_ready(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=3).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready"
        time.sleep(0.5)


def test_compose_packages_one_accession_end_to_end(
    docker: Docker, image: str, orthanc: Any, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("s3", "lookup", "retriever", "packager", "forwarder")}
    ports["scp"] = free_port()
    s3_url = f"http://127.0.0.1:{ports['s3']}"
    project = f"dicomiso-ci-{uuid.uuid4().hex[:8]}"
    with his_database() as his:
        env = {
            "IMAGE": image,
            "DICOMISO_IMAGE": image,
            "S3_IMAGE": image,
            "S3_COMMAND": f"python -m moto.server -H 127.0.0.1 -p {ports['s3']}",
            "MOTO_SITE": str(Path(moto.__file__).resolve().parents[1]),
            "S3_PORT": str(ports["s3"]),
            "S3_BUCKET": f"dicom-iso-compose-{uuid.uuid4().hex[:8]}",
            "LOOKUP_PORT": str(ports["lookup"]),
            "RETRIEVER_PORT": str(ports["retriever"]),
            "PACKAGER_PORT": str(ports["packager"]),
            "FORWARDER_PORT": str(ports["forwarder"]),
            "PACS_PORT": str(orthanc.dicom_port),
            "SCP_PORT": str(ports["scp"]),
            "HIS_ACCESSION_DB": his.accession_db,
            "HIS_PATIENT_DB": his.patient_db,
            # what deploy/secrets.env holds in a real installation
            "DICOMISO_USER_TOKEN": USER_TOKEN,
            "DICOMISO_INTERNAL_TOKEN": "compose-internal-token",
            "S3_ACCESS_KEY": "testing",
            "S3_SECRET_KEY": "testing",
            "DICOMISO_HIS_URL": his.url(),
            "PUBLIC_S3_URL": s3_url,
            "PACS_HOST": orthanc.host,
        }
        # compose.yaml + the override, merged by docker-compose itself; then the published
        # ports go (docker refuses port bindings on the host network, and an override cannot
        # remove a list entry): the only change made to the merged file.
        merged = yaml.safe_load(compose(docker, project, env, "config", files=[COMPOSE, OVERRIDE]))
        for service in merged["services"].values():
            service.pop("ports", None)
        run_file = tmp_path / "compose.merged.yaml"
        run_file.write_text(yaml.safe_dump(merged))
        files = [run_file]
        orthanc.register_modality("CDRECORD", "127.0.0.1", ports["scp"])
        try:
            compose(docker, project, env, "up", "-d", files=files)
            packager = f"http://127.0.0.1:{ports['packager']}"
            for name in ("lookup", "retriever", "packager", "forwarder"):
                wait_ready(f"http://127.0.0.1:{ports[name]}")
            study = make_study(
                tmp_path / "study",
                accession=f"A{uuid.uuid4().hex[:15].upper()}",
                patient_id=f"RM-CMP-{uuid.uuid4().hex[:6]}",
            )
            orthanc.upload(study.files)
            add_patient(his, study.patient_id, "Sari Dewi", [study.accession])
            auth = {"Authorization": f"Bearer {USER_TOKEN}"}
            accepted = httpx.post(
                f"{packager}/v1/packages",
                json={"accession_numbers": [study.accession]},
                headers=auth,
                timeout=30,
            )
            assert accepted.status_code == 202, accepted.text
            job = accepted.json()["id"]
            deadline = time.monotonic() + 180
            while True:
                status = httpx.get(f"{packager}/v1/packages/{job}", headers=auth, timeout=10).json()
                if status["state"] in ("succeeded", "failed"):
                    break
                assert time.monotonic() < deadline, status
                time.sleep(0.3)
            assert status["state"] == "succeeded", status
            assert status["download_url"].startswith(s3_url)
            download_and_verify(status["download_url"], tmp_path / "disc.iso")
        finally:
            try:
                sys.stderr.write(compose(docker, project, env, "logs", "--tail", "20", files=files))
            finally:
                compose(docker, project, env, "down", "-v", "--timeout", "10", files=files)
                orthanc.unregister_modality("CDRECORD")
