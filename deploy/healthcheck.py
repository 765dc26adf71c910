"""Container HEALTHCHECK: exit 0 when this container's service answers GET /healthz.

The port is DICOMISO_HTTP_PORT, else the default of the service that PID 1 runs (one image,
four entry points). Standard library only: the runtime image has no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

DEFAULT_PORTS = {
    "dicomiso-lookup": 8001,
    "dicomiso-retriever": 8002,
    "dicomiso-packager": 8003,
    "dicomiso-forwarder": 8004,
}


def service_port(environ: dict[str, str], cmdline: str) -> int:
    """The HTTP port to probe: the setting, else the default of the service on the command line."""
    if environ.get("DICOMISO_HTTP_PORT"):
        return int(environ["DICOMISO_HTTP_PORT"])
    for name, port in DEFAULT_PORTS.items():
        if name in cmdline:
            return port
    raise SystemExit(f"healthcheck: no DICOMISO_HTTP_PORT and no service in {cmdline!r}")


def main() -> int:
    try:
        cmdline = Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmdline = ""
    port = service_port(dict(os.environ), cmdline)
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed http URL
            return 0 if response.status == 200 else 1
    except OSError as exc:
        sys.stderr.write(f"healthcheck: {url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
