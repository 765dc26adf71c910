"""What `dicom-iso` loads before it does anything: never a web framework, the S3 SDK or the DICOM
stack (issue 19: every call took 2-4 s, most of it importing fastapi, boto3 and pydicom that
only the services and `verify` need). A test of WHAT is imported, in a fresh interpreter, never
of how long it takes (docs/benchmarks.md "CLI start-up" has the timings)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

# Each costs 0.1-1 s to import; none is needed by --help, lookup, status or the HTTP clients.
HEAVY = ("fastapi", "starlette", "boto3", "botocore", "pydicom", "pynetdicom", "pycdlib", "numpy")
# Optional imports of httpx/httpcore that the console script keeps out (dicomiso_tools.__main__),
# and the progress bars, imported by the commands that draw one.
UNUSED = ("httpx._main", "pygments", "trio", "rich.progress")
# What `--help` itself never needs: the HTTP stack, pydantic (the clients' models), rich (bars
# and typer's boxed help, ~0.35 s of CPU), pydantic-settings (with asyncio: ~0.1 s).
NOT_FOR_HELP = ("httpx", "pydantic", "rich", "pydantic_settings", "asyncio")
# What no client command needs: rich draws only bars on a terminal; settings are plain code.
NOT_FOR_COMMANDS = ("rich", "pydantic_settings", "asyncio")

_PROBE = """
import json, sys
argv, watch = json.loads(sys.argv[1]), json.loads(sys.argv[2])
if argv is None:
    import {module}
else:
    from dicomiso_tools.__main__ import main  # what the console script runs
    sys.argv = ["dicom-iso", *argv]
    try:
        main()
    except SystemExit:
        pass
loaded = sorted(m for m in watch if sys.modules.get(m) is not None)
print("\\nLOADED=" + json.dumps(loaded))
"""


def loaded_after(
    watch: tuple[str, ...], *, module: str = "dicomiso_tools.cli", argv: list[str] | None = None
) -> list[str]:
    """The modules of `watch` that a fresh interpreter holds after importing `module`, or after
    running `dicom-iso ARGV` through the console script's entry point."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module), json.dumps(argv), json.dumps(watch)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    marker = [line for line in proc.stdout.splitlines() if line.startswith("LOADED=")]
    assert marker, f"probe failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    loaded: list[str] = json.loads(marker[-1].removeprefix("LOADED="))
    return loaded


def closed_url() -> str:
    """An HTTP URL on loopback where nothing listens (a port just released by the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    "module", ["dicomiso_tools.cli", "dicomiso_client", "dicomiso_common.errors"]
)
def test_the_cli_the_clients_and_their_errors_load_no_framework(module: str) -> None:
    # What the CLI builds on; the services import these too (httpx's own CLI may load there).
    assert loaded_after(HEAVY, module=module) == []


def test_help_loads_nothing_heavy() -> None:
    assert loaded_after(HEAVY + UNUSED + NOT_FOR_HELP, argv=["--help"]) == []


def test_a_command_help_loads_no_client() -> None:
    # typer 0.29 coerces a command's options through pydantic, so pydantic may load here
    watch = HEAVY + UNUSED + ("httpx", "rich", "pydantic_settings", "asyncio")
    assert loaded_after(watch, argv=["package", "--help"]) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["lookup", "ACC001", "--lookup-url", "{url}"],
        ["status", "0123456789abcdef0123456789abcdef", "--packager-url", "{url}"],
        ["--json", "audit", "--since", "1h", "--packager-url", "{url}"],
    ],
    ids=["lookup", "status", "audit"],
)
def test_client_commands_load_nothing_heavy(argv: list[str]) -> None:
    # Through the whole command, its error path included (nothing listens at the URL).
    url = closed_url()
    watch = HEAVY + UNUSED + NOT_FOR_COMMANDS
    assert loaded_after(watch, argv=[a.format(url=url) for a in argv]) == []


def test_the_probe_sees_a_heavy_import() -> None:
    # The check itself can fail: `verify` does need pydicom, and the probe reports it.
    assert "pydicom" in loaded_after(HEAVY, module="dicomiso_tools.verify")
    # and a command that talks to a service does load its client's stack
    loaded = loaded_after(NOT_FOR_HELP, argv=["status", "x" * 32, "--packager-url", closed_url()])
    assert {"httpx", "pydantic"} <= set(loaded)
