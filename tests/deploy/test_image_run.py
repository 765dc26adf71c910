"""The built image, run as deploy/k8s runs it: four services in containers, one accession
packaged end to end, health checks, `docker stop` within 10 s with the job handed over.

Every container gets the options of its rendered Deployment (lab overlay): its command, UID
and GID, read-only root file system, dropped capabilities, no privilege escalation, its
emptyDirs (/tmp, the packager's /work) as tmpfs, and exactly the environment names of the
manifest. Only the values that name a place differ: on the host network the peers, the PACS,
moto's S3 and MariaDB's HIS are on 127.0.0.1 at ports this test picks. TEST_ONLY names the few
settings the manifests leave at their defaults and this test must set, each with its reason.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability.helpers import plain_study, wait_until

from support.mariadb import HisDb, add_patient, his_database
from support.net import free_port
from support.studies import make_study

from .docker_support import Docker, download_and_verify, env_names, run_args

# The first test of a session may build the image from scratch (debootstrap, every wheel):
# minutes on a fresh machine, well past the suite's per-test timeout.
pytestmark = pytest.mark.timeout(2400)


USER_TOKEN = "image-user-token"
INTERNAL_TOKEN = "image-internal-token"
SECRETS = {
    "api-token": USER_TOKEN,
    "internal-token": INTERNAL_TOKEN,
    "aws-access-key-id": "testing",
    "aws-secret-access-key": "testing",
}
TEST_ONLY = {
    # the test's own HIS databases (support.mariadb), not the example's fixed names
    "DICOMISO_HIS_ACCESSION_DB",
    "DICOMISO_HIS_PATIENT_DB",
    # with --network host every container has the host's name and PID 1, so the default
    # replica id (hostname-pid) would be the same for both packager replicas
    "DICOMISO_REPLICA_ID",
    # a stopped replica's job is taken over after seconds, not the default 30 s
    "DICOMISO_JOB_HEARTBEAT",
    "DICOMISO_JOB_STALE_AFTER",
}
HEALTH_TIMING = ["--health-interval=1s", "--health-retries=3", "--health-start-period=60s"]


@dataclass
class Stack:
    """The four services in containers against the test's PACS, S3 and HIS."""

    docker: Docker
    image: str
    workloads: dict[str, dict[str, Any]]
    configmaps: dict[str, dict[str, str]]
    s3_url: str
    bucket: str
    his: HisDb
    pacs: Any
    ports: dict[str, int] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def env(self, service: str, name: str) -> dict[str, str]:
        manifest = env_names(self.workloads[service], self.configmaps)
        place = {
            "DICOMISO_HTTP_HOST": "127.0.0.1",  # host network: never on every interface
            "DICOMISO_SCP_HOST": "127.0.0.1",
            "DICOMISO_HTTP_PORT": str(self.ports[name]),
            "DICOMISO_S3_ENDPOINT_URL": self.s3_url,
            "DICOMISO_S3_PUBLIC_URL": self.s3_url,
            "DICOMISO_S3_BUCKET": self.bucket,
            "DICOMISO_LOOKUP_URL": self.url("lookup"),
            "DICOMISO_RETRIEVER_URL": self.url("retriever"),
            "DICOMISO_FORWARDER_URL": self.url("forwarder"),
            "DICOMISO_PACS_HOST": self.pacs.host,
            "DICOMISO_PACS_PORT": str(self.pacs.dicom_port),
            "DICOMISO_SCP_PORT": str(self.ports["scp"]),
        }
        secrets = {**SECRETS, "his-url": self.his.url()}
        env: dict[str, str] = {}
        for key, source in manifest.items():
            if key in place:
                env[key] = place[key]
            elif isinstance(source, tuple):
                _, secret, optional = source
                if secret in secrets:
                    env[key] = secrets[secret]
                else:
                    assert optional, f"{service}: no value for required secret {secret}"
            else:
                env[key] = source
        extra = {
            "DICOMISO_HIS_ACCESSION_DB": self.his.accession_db,
            "DICOMISO_HIS_PATIENT_DB": self.his.patient_db,
            "DICOMISO_REPLICA_ID": name,
            "DICOMISO_JOB_HEARTBEAT": "0.5",
            "DICOMISO_JOB_STALE_AFTER": "3",
        }
        assert not set(extra) & set(manifest), "a TEST_ONLY name is in the manifest now"
        assert set(extra) == TEST_ONLY
        return env | extra

    def start(self, service: str, name: str) -> str:
        workload = self.workloads[service]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        cname = f"dicomiso-ci-{name}-{uuid.uuid4().hex[:6]}"
        args = run_args(workload, self.env(service, name))
        self.docker.run(
            "run", "-d", "--name", cname, *args, *HEALTH_TIMING, self.image, *container["command"]
        )
        self.containers[name] = cname
        return cname

    def health(self, name: str) -> str:
        return self.docker.inspect(self.containers[name], "{{.State.Health.Status}}")

    def wait_healthy(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.health(name)) != "healthy":
            running = self.docker.inspect(self.containers[name], "{{.State.Running}}")
            if running != "true" or time.monotonic() > deadline:
                logs = self.docker.logs(self.containers[name], tail=40)
                raise AssertionError(f"{name} is {status} (running: {running})\n{logs}")
            time.sleep(0.5)

    def stop(self, name: str) -> tuple[float, int]:
        """`docker stop` (SIGTERM, SIGKILL after 10 s); seconds taken and the exit code."""
        started = time.monotonic()
        self.docker.run("stop", "-t", "10", self.containers[name], timeout=60)
        took = time.monotonic() - started
        sys.stderr.write(f"\ndocker stop {name}: {took:.1f} s\n")
        return took, int(self.docker.inspect(self.containers[name], "{{.State.ExitCode}}"))

    def post(self, name: str, accession: str) -> str:
        answer = httpx.post(
            f"{self.url(name)}/v1/packages",
            json={"accession_numbers": [accession]},
            headers={"Authorization": f"Bearer {USER_TOKEN}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        job: str = answer.json()["id"]
        return job

    def status(self, name: str, job: str) -> dict[str, Any]:
        answer = httpx.get(
            f"{self.url(name)}/v1/packages/{job}",
            headers={"Authorization": f"Bearer {USER_TOKEN}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def wait(self, name: str, job: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (status := self.status(name, job))["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        return status

    def record(self, s3: Any, job: str) -> dict[str, Any]:
        body = s3.get_object(Bucket=self.bucket, Key=f"jobs/package/{job}.json")["Body"]
        record: dict[str, Any] = json.loads(body.read())
        return record


@pytest.fixture(scope="module")
def stack(
    docker: Docker,
    image: str,
    rendered: dict[str, list[dict[str, Any]]],
    s3_server: Any,
    orthanc: Any,
) -> Iterator[Stack]:
    """lookup, retriever, forwarder and two packager replicas (A, B), all healthy."""
    docs = rendered["lab"]
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    s3 = s3_server.client()
    bucket = f"dicom-iso-img-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    with ExitStack() as stack_:
        his = stack_.enter_context(his_database())
        system = Stack(
            docker, image, workloads, configmaps, s3_server.endpoint_url, bucket, his, orthanc
        )
        for name in ("lookup", "retriever", "forwarder", "packager-a", "packager-b", "scp"):
            system.ports[name] = free_port()
        orthanc.register_modality("CDRECORD", "127.0.0.1", system.ports["scp"])
        stack_.callback(orthanc.unregister_modality, "CDRECORD")
        try:
            for service in ("lookup", "retriever", "forwarder"):
                system.start(service, service)
            system.start("packager", "packager-a")
            system.start("packager", "packager-b")
            for name in system.containers:
                system.wait_healthy(name)
            yield system
        finally:
            for cname in system.containers.values():
                logs = docker.logs(cname, tail=30)
                sys.stderr.write(f"\n---- {cname}\n{logs}")
            names = list(system.containers.values())
            if names:
                docker.run("rm", "-f", *names, check=False, timeout=60)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)


def test_containers_run_as_the_manifests_say(stack: Stack) -> None:
    """Each container: the manifest's command, UID 10001, read-only, no capabilities, no new
    privileges, and the manifest's environment names (plus TEST_ONLY)."""
    for name, cname in stack.containers.items():
        service = name.removesuffix("-a").removesuffix("-b")
        config = json.loads(stack.docker.run("inspect", cname))[0]
        (container,) = stack.workloads[service]["spec"]["template"]["spec"]["containers"]
        assert config["Config"]["Cmd"] == container["command"]
        assert config["Config"]["User"] == "10001:10001"
        host = config["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert "/tmp" in host["Tmpfs"]
        assert ("/work" in host["Tmpfs"]) == (service == "packager")
        names = {e.split("=", 1)[0] for e in config["Config"]["Env"]}
        manifest = env_names(stack.workloads[service], stack.configmaps)
        expected = {k for k, v in manifest.items() if not (isinstance(v, tuple) and v[2])}
        assert expected | TEST_ONLY <= names, (expected | TEST_ONLY) - names
        assert stack.health(name) == "healthy"
        # the process really is UID 10001 with no capabilities (effective set all zero)
        status = stack.docker.run("exec", cname, "cat", "/proc/1/status")
        assert "\nUid:\t10001\t10001\t10001\t10001" in status
        assert "\nCapEff:\t0000000000000000" in status
        assert "\nNoNewPrivs:\t1" in status


def test_one_accession_end_to_end(stack: Stack, tmp_path: Path) -> None:
    """POST to a packager container: lookup (HIS), retriever (C-MOVE from Orthanc into its
    SCP, to S3), packager (ISO to S3); the link downloads; `dicom-iso verify` passes."""
    study = make_study(
        tmp_path / "study",
        accession=f"A{uuid.uuid4().hex[:15].upper()}",
        patient_id=f"RM-IMG-{uuid.uuid4().hex[:6]}",
    )
    stack.pacs.upload(study.files)
    add_patient(stack.his, study.patient_id, "Wulan Sari", [study.accession])
    job = stack.post("packager-a", study.accession)
    status = stack.wait("packager-a", job)
    assert status["state"] == "succeeded", status
    download_and_verify(status["download_url"], tmp_path / "disc.iso")


def _busy_job(stack: Stack, study_factory: Any, packager: str, name: str) -> str:
    """A 150-slice accession posted to `packager`, returned once it retrieves or builds."""
    study = plain_study(study_factory, f"RM-IMG-{uuid.uuid4().hex[:6]}", ct=150)
    stack.pacs.upload(study.files)
    add_patient(stack.his, study.patient_id, name, [study.accession])
    job = stack.post(packager, study.accession)
    wait_until(
        lambda: stack.status(packager, job).get("phase") in ("retrieve", "build"),
        90,
        f"{packager} to be working",
        0.05,
    )
    return job


def test_stop_mid_job_hands_the_job_over(stack: Stack, s3_server: Any, study_factory: Any) -> None:
    """`docker stop` packager A mid-job: A exits by itself (not SIGKILLed) within 10 s, the
    job record is left running (handed over, not failed), replica B takes it over and
    finishes it."""
    job = _busy_job(stack, study_factory, "packager-a", "Bayu Pratama")
    took, code = stack.stop("packager-a")
    assert took < 10, f"docker stop took {took:.1f} s"
    assert code != 137, "packager A was SIGKILLed by docker stop"
    s3 = s3_server.client()
    record = stack.record(s3, job)
    assert record["state"] in ("queued", "running"), record  # handed over, not failed
    status = stack.wait("packager-b", job)
    assert status["state"] == "succeeded", status
    record = stack.record(s3, job)
    assert record["owner"] == "packager-b" and record["attempt"] == 1, record


def test_killed_mid_package_is_taken_over(stack: Stack, s3_server: Any, study_factory: Any) -> None:
    """Packager A back (`docker start`); B is SIGKILLed (`docker kill`) mid-job; A claims the
    stale job and finishes it as the same attempt."""
    stack.docker.run("start", stack.containers["packager-a"])
    stack.wait_healthy("packager-a")
    job = _busy_job(stack, study_factory, "packager-b", "Citra Lestari")
    stack.docker.run("kill", stack.containers["packager-b"])
    status = stack.wait("packager-a", job)
    assert status["state"] == "succeeded", status
    record = stack.record(s3_server.client(), job)
    assert record["owner"] == "packager-a" and record["attempt"] == 1, record


def test_every_container_stops_within_10_s(stack: Stack) -> None:
    """SIGTERM ends each service by itself: no container waits for docker's SIGKILL."""
    for name in ("packager-a", "forwarder", "retriever", "lookup"):
        took, code = stack.stop(name)
        assert took < 10 and code != 137, (name, took, code)


def test_port_in_use_is_a_clear_failure(stack: Stack) -> None:
    """A service whose port is taken exits non-zero and says which address is in use."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack.ports["lookup-busy"] = port
        cname = stack.start("lookup", "lookup-busy")
        deadline = time.monotonic() + 60
        while stack.docker.inspect(cname, "{{.State.Running}}") == "true":
            assert time.monotonic() < deadline, "the service kept running on a port in use"
            time.sleep(0.3)
    assert int(stack.docker.inspect(cname, "{{.State.ExitCode}}")) != 0
    logs = stack.docker.logs(cname)
    assert "address already in use" in logs.lower(), logs
