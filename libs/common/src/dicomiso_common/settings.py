"""Settings every service reads, from DICOMISO_* variables (see README.md for the table)."""

from __future__ import annotations

import os
import socket
from typing import Annotated

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class CommonSettings(BaseSettings):
    """Names shared by all four services (DESIGN.md, Entry points and settings)."""

    model_config = SettingsConfigDict(env_prefix="DICOMISO_", extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    api_token: SecretStr = SecretStr("")
    call_token: SecretStr | None = None
    log_level: str = "INFO"

    s3_endpoint_url: str | None = "http://127.0.0.1:9000"
    s3_public_url: str | None = None
    s3_bucket: str = "dicom-iso"
    s3_multipart_threshold: int = 64 * 1024 * 1024
    s3_multipart_chunk: int = 16 * 1024 * 1024

    job_heartbeat: Annotated[float, Field(gt=0)] = 5.0  # seconds between heartbeats
    job_stale_after: Annotated[float, Field(gt=0)] = 30.0  # heartbeat age that means "dead"
    job_workers: Annotated[int, Field(ge=1)] = 4  # jobs run at once by one replica
    replica_id: str = Field(default_factory=_default_replica_id)

    def outgoing_token(self) -> str:
        """The bearer token to send to other services (DICOMISO_CALL_TOKEN, else our own)."""
        token = self.call_token if self.call_token is not None else self.api_token
        return token.get_secret_value()
