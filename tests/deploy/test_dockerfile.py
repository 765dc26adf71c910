"""deploy/Dockerfile: hadolint-clean, and the rules a cluster admin checks by eye.

What can be proven without building: the lint, the structure (stages, user, tags,
healthcheck), that every COPY source exists in the build context, and that the locked non-dev
set the image installs holds no dev tool. The built image is checked in test_image_build.py
and run in test_image_run.py and test_compose.py; the entry points outside a container in
test_entrypoints.py.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import subprocess

import pytest

from .conftest import DEPLOY, ROOT, SERVICES, tool

DOCKERFILE = DEPLOY / "Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "python3-dev", "libc6-dev")
DEV_ONLY = ("pytest", "moto", "ruff", "mypy", "boto3-stubs", "aiosmtpd")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def args() -> dict[str, str]:
    return dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)


def test_hadolint_passes() -> None:
    """hadolint (the PyPI wheel ships the binary) reports nothing at its default threshold."""
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_images_are_pinned() -> None:
    """Every FROM names an explicit version (directly or through an ARG default), never latest.

    A stage built on an earlier stage, or on `scratch` (the SBOM export), names no image.
    """
    defaults = args()
    names: set[str] = {"scratch"}
    for stage in stages():
        image, *alias = stage[0][1].split()
        names.update(alias[1:2])
        if image in names:
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        _, _, tag = image.rpartition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), image


def test_multi_stage_final_runtime_has_no_build_tools() -> None:
    """The build stage installs; the final stage only copies the venv and runs as 10001."""
    all_stages = stages()
    assert len(all_stages) >= 2
    final = all_stages[-1]
    final_text = " ".join(a for _, a in final)
    for name in BUILD_TOOLS:
        assert not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", final_text), name
    assert not any(w == "RUN" and ("apt-get" in a or "pip" in a or "uv " in a) for w, a in final)
    copies = [a for w, a in final if w == "COPY"]
    assert "--from=build /app/.venv /app/.venv" in copies
    assert not any("/uv" in c for c in copies), "uv itself stays in the build stage"
    users = [a for w, a in final if w == "USER"]
    assert users, "final stage runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), users[-1]


def test_dependencies_are_locked_and_non_dev() -> None:
    """`uv sync --frozen --no-dev` from uv.lock, for all members, non-editable."""
    runs = [a for w, a in instructions() if w == "RUN" and "uv sync" in a]
    assert runs
    for run in runs:
        for flag in ("--frozen", "--no-dev", "--all-packages", "--no-editable"):
            assert flag in run, f"{flag} missing: {run}"


def test_locked_runtime_set_holds_no_dev_tool() -> None:
    """What `uv sync --frozen --no-dev --all-packages` installs (from uv.lock, offline)."""
    proc = subprocess.run(
        [
            tool("uv"),
            "export",
            "--frozen",
            "--no-dev",
            "--all-packages",
            "--no-hashes",
            "--offline",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    names = {
        re.split(r"[=<>\[ ;]", line, maxsplit=1)[0].lower()
        for line in proc.stdout.splitlines()
        if line and line[0].isalnum()
    }
    assert {"fastapi", "uvicorn", "boto3", "pynetdicom", "pymysql"} <= names
    assert not names & set(DEV_ONLY), names & set(DEV_ONLY)


def test_healthcheck_and_entry_points() -> None:
    """A HEALTHCHECK on /healthz; the four console scripts on PATH; bind-all inside."""
    final = stages()[-1]
    health = [a for w, a in final if w == "HEALTHCHECK"]
    assert health and "/app/healthcheck.py" in health[0]
    env = " ".join(a for w, a in final if w == "ENV")
    assert "PATH=/app/.venv/bin:$PATH" in env
    assert "DICOMISO_HTTP_HOST=0.0.0.0" in env and "DICOMISO_SCP_HOST=0.0.0.0" in env
    exposed = {int(p) for w, a in final if w == "EXPOSE" for p in a.split()}
    assert set(SERVICES.values()) | {10104} <= exposed
    cmd = [a for w, a in final if w == "CMD"]
    assert cmd and re.fullmatch(r'\["dicomiso-(lookup|retriever|packager|forwarder)"\]', cmd[-1])


def ignored(path: str, patterns: list[str]) -> bool:
    """dockerignore semantics, enough for our file: the last matching pattern wins."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!")
        # fnmatch's `*` also crosses `/`, which is what `**` means here
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat + "/*"):
            result = not negate
    return result


def test_every_copy_source_is_in_the_build_context() -> None:
    """Each COPY source exists at the repo root and survives Dockerfile.dockerignore."""
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for word, arguments in instructions():
        if word != "COPY" or "--from=" in arguments:
            continue
        *sources, _ = arguments.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), source
            files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
            if not files:  # a directory without Python, such as the viewer's sources
                files = [p for p in path.rglob("*") if p.is_file()]
            assert files, source
            for file in files:
                rel = file.relative_to(ROOT).as_posix()
                assert not ignored(rel, patterns), f"{rel} is excluded from the context"
    for unwanted in (
        ".venv/bin/python",
        "tests/conftest.py",
        ".git/HEAD",
        "services/packager/viewer/node_modules/dicom-parser/package.json",
    ):
        assert ignored(unwanted, patterns), unwanted


@pytest.mark.parametrize(
    ("environ", "cmdline", "port"),
    [
        ({"DICOMISO_HTTP_PORT": "9999"}, "dicomiso-lookup", 9999),
        ({}, "/app/.venv/bin/python /app/.venv/bin/dicomiso-retriever", 8002),
        ({}, "dicomiso-forwarder", 8004),
    ],
)
def test_healthcheck_port(environ: dict[str, str], cmdline: str, port: int) -> None:
    """The HEALTHCHECK probes the setting, else the default port of the service PID 1 runs."""
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.service_port(environ, cmdline) == port
