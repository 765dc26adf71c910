"""Run one of our FastAPI apps over real HTTP (uvicorn in a thread) for the duration of a test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from dicomiso_common import serve
from dicomiso_common.settings import CommonSettings


@contextmanager
def serving(app: FastAPI, settings: CommonSettings, timeout: float = 20.0) -> Iterator[str]:
    """Serve the app on settings.http_host:http_port; yield its base URL; stop it after."""
    server = serve.server(app, settings)
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{settings.http_host}:{settings.http_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
