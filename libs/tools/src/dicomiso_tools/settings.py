"""Configuration of the `dicom-iso` CLI, read from DICOMISO_* variables (options override).

Plain code, not pydantic-settings: that import (with the asyncio it pulls in) was a fifth of
the start-up of every command (issue 19: `--help`, lookup and status in under 0.5 s), and
the CLI reads eight variables.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass


class SettingError(ValueError):
    """A DICOMISO_* variable has a value the CLI cannot use; the message names it."""


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name}: not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingError(f"{name}: must be a number greater than 0")
    return value


@dataclass(frozen=True)
class ClientSettings:
    """Where the services are and the token to send them (same names the services read)."""

    lookup_url: str = "http://127.0.0.1:8001"
    retriever_url: str = "http://127.0.0.1:8002"
    packager_url: str = "http://127.0.0.1:8003"
    forwarder_url: str = "http://127.0.0.1:8004"
    api_token: str = ""
    call_token: str | None = None
    http_timeout: float = 30.0  # seconds per request
    poll_interval: float = 1.0  # seconds between status polls

    def __repr__(self) -> str:  # never the tokens
        return (
            f"ClientSettings(lookup_url={self.lookup_url!r}, retriever_url={self.retriever_url!r}"
            f", packager_url={self.packager_url!r}, forwarder_url={self.forwarder_url!r})"
        )

    @classmethod
    def from_env(
        cls, overrides: Mapping[str, str | None] | None = None, env: Mapping[str, str] | None = None
    ) -> ClientSettings:
        """DICOMISO_* from `env` (default: the process's), then the given URL overrides."""
        env = os.environ if env is None else env
        overrides = overrides or {}
        urls = {
            name: (overrides.get(name) or env.get(f"DICOMISO_{name.upper()}") or default)
            for name, default in (
                ("lookup_url", cls.lookup_url),
                ("retriever_url", cls.retriever_url),
                ("packager_url", cls.packager_url),
                ("forwarder_url", cls.forwarder_url),
            )
        }
        return cls(
            **{k: v.rstrip("/") for k, v in urls.items()},
            api_token=env.get("DICOMISO_API_TOKEN", ""),
            call_token=env.get("DICOMISO_CALL_TOKEN"),
            http_timeout=_positive(env, "DICOMISO_HTTP_TIMEOUT", cls.http_timeout),
            poll_interval=_positive(env, "DICOMISO_POLL_INTERVAL", cls.poll_interval),
        )

    def token(self) -> str:
        """The bearer token to send: DICOMISO_CALL_TOKEN, else DICOMISO_API_TOKEN."""
        return self.call_token if self.call_token is not None else self.api_token
