"""Configuration of the `dicom-iso` CLI, read from DICOMISO_* variables (options override)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """Where the services are and the token to send them (same names the services read)."""

    model_config = SettingsConfigDict(env_prefix="DICOMISO_", extra="ignore")

    lookup_url: str = "http://127.0.0.1:8001"
    retriever_url: str = "http://127.0.0.1:8002"
    packager_url: str = "http://127.0.0.1:8003"
    forwarder_url: str = "http://127.0.0.1:8004"
    api_token: SecretStr = SecretStr("")
    call_token: SecretStr | None = None
    http_timeout: Annotated[float, Field(gt=0)] = 30.0  # seconds per request
    poll_interval: Annotated[float, Field(gt=0)] = 1.0  # seconds between status polls

    def token(self) -> str:
        """The bearer token to send: DICOMISO_CALL_TOKEN, else DICOMISO_API_TOKEN."""
        token = self.call_token if self.call_token is not None else self.api_token
        return token.get_secret_value()
