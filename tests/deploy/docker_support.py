"""A Docker engine of the tests' own, the image built by deploy/build-image.sh, and containers
run the way the rendered Kubernetes manifests run them.

The engine is Debian's dockerd (docker.io) with its own data root, exec root, pidfile and unix
socket under ``DOCKER_ROOT``, started with ``--iptables=false --bridge=none`` (every container
and build uses ``--network host``). The data root persists between runs on the same machine,
so the base image and the build cache do too; the daemon itself is stopped by PID at the end
of the session (a daemon that already answered on the socket was not ours and is left alone).
The client is always Debian's ``/usr/bin/docker`` (BuildKit built in; another docker on PATH
may need buildx).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
DOCKER_ROOT = Path(os.environ.get("DICOMISO_CI_DOCKER_ROOT", "/var/lib/dicomiso-ci-docker"))
UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


@dataclass
class Docker:
    """Debian's docker client bound to one daemon socket."""

    socket: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1"}

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        proc = subprocess.run(
            [DOCKER, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
        return proc.stdout

    def answers(self) -> bool:
        try:
            self.run("version", "--format", "{{.Server.Version}}", timeout=10)
        except (AssertionError, subprocess.TimeoutExpired):
            return False
        return True

    def inspect(self, name: str, template: str) -> str:
        return self.run("inspect", "-f", template, name, timeout=30).strip()

    def logs(self, name: str, tail: int | None = None) -> str:
        """The container's stdout and stderr (the services log to stderr)."""
        more = ["--tail", str(tail)] if tail else []
        proc = subprocess.run(
            [DOCKER, "logs", *more, name],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.stdout + proc.stderr

    def has_image(self, ref: str) -> bool:
        return bool(self.run("image", "ls", "-q", ref, timeout=30).strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def own_dockerd(root: Path = DOCKER_ROOT) -> Iterator[Docker]:
    """Start dockerd on `root` (or use one already answering there); stop it by PID after."""
    if not Path(DOCKERD).exists() or not Path(DOCKER).exists():
        pytest.fail("Debian's docker.io is not installed (scripts/setup installs it)")
    root.mkdir(parents=True, exist_ok=True)
    docker = Docker(root / "docker.sock")
    if docker.answers():
        yield docker  # someone else's daemon (a developer's): used, never stopped
        return
    pidfile = root / "dockerd.pid"
    if pidfile.exists():
        old = int(pidfile.read_text().strip() or 0)
        if old and _alive(old):
            pytest.fail(f"dockerd {old} holds {pidfile} but does not answer on {docker.socket}")
        pidfile.unlink()
    log = (root / "dockerd.log").open("ab")
    proc = subprocess.Popen(
        [
            DOCKERD,
            "--iptables=false",
            "--bridge=none",
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={pidfile}",
            f"--host=unix://{docker.socket}",
            "--log-level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not docker.answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockerd did not start; see {root / 'dockerd.log'}")
            time.sleep(0.5)
        yield docker
    finally:
        leftover = docker.run("ps", "-aq", check=False, timeout=30).split()
        if leftover:
            docker.run("rm", "-f", *leftover, check=False, timeout=60)
        proc.terminate()  # by PID; dockerd stops the containerd it started
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        _unmount_under(root / "exec")


def _unmount_under(path: Path) -> None:
    """Unmount what the daemon left mounted under its exec root (libnetwork's netns/default)."""
    prefix = f"{path}/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False, timeout=30)


def build_image(
    docker: Docker, root: Path, tag: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """deploy/build-image.sh TAG against this daemon; its output captured."""
    return subprocess.run(
        ["bash", str(root / "deploy" / "build-image.sh"), tag],
        cwd=root,
        env={**docker.env, **env},
        capture_output=True,
        text=True,
        timeout=3000,
        check=False,
    )


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * UNITS[unit]


def run_args(workload: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """`docker run` options equivalent to the workload's pod: user, read-only root file
    system, dropped capabilities, no privilege escalation, emptyDirs as tmpfs, the command."""
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_sc, sc = pod.get("securityContext", {}), container["securityContext"]
    uid, gid = sc.get("runAsUser", pod_sc["runAsUser"]), sc.get("runAsGroup", pod_sc["runAsGroup"])
    args = ["--network", "host", "--user", f"{uid}:{gid}"]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    args += [f"--cap-drop={cap}" for cap in sc.get("capabilities", {}).get("drop", [])]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    owner = pod_sc.get("fsGroup", gid)
    for mount in container.get("volumeMounts", []):
        empty = volumes[mount["name"]].get("emptyDir")
        assert empty is not None, f"only emptyDir volumes are run here: {mount}"
        size = _bytes(empty.get("sizeLimit", "64Mi"))
        args += ["--tmpfs", f"{mount['mountPath']}:size={size},uid={uid},gid={owner},mode=0770"]
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    return args


def env_names(
    workload: Mapping[str, Any], configmaps: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """Every environment variable the manifest gives the container: name -> its source
    (a literal value, the ConfigMap's value, or ("secret", key, optional))."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    names: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        names.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            names[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            names[item["name"]] = ("secret", ref["key"], ref.get("optional", False))
    return names


def download_and_verify(url: str, disc: Path) -> None:
    """Download the link as a user would, then `dicom-iso verify` it (the host's CLI)."""
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200, response.status_code
        with disc.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
    verify = subprocess.run(
        [str(Path(sys.executable).with_name("dicom-iso")), "verify", str(disc)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
