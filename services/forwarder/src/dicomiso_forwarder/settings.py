"""Forwarder configuration, read from DICOMISO_* variables (README.md has the table)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dicomiso_common.dicom import AE_TITLE
from dicomiso_common.settings import CommonSettings


class Peer(BaseModel):
    """One configured destination (DICOMISO_PEERS: name -> this)."""

    model_config = ConfigDict(extra="forbid")

    aet: str
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    max_associations: Annotated[int, Field(ge=1, le=16)] = 2

    @field_validator("aet")
    @classmethod
    def _aet(cls, value: str) -> str:
        if not AE_TITLE.fullmatch(value) or value != value.strip():
            raise ValueError("AE title: 1-16 printable characters, no backslash, no padding")
        return value


class ForwarderSettings(CommonSettings):
    """Peers come only from here; a request can name a peer, never a host."""

    http_port: int = 8004
    peers: dict[str, Peer] = Field(default_factory=dict)  # DICOMISO_PEERS, JSON
    calling_aet: str = "CDRECORD"
    retriever_url: str = "http://127.0.0.1:8002"
    retrieve_wait: Annotated[float, Field(gt=0)] = 3600.0  # seconds to wait for a retrieval
    send_attempts: Annotated[int, Field(ge=1)] = 4  # per batch, for transient failures
    send_backoff: Annotated[float, Field(ge=0)] = 1.0  # seconds, doubled per attempt
    dicom_acse_timeout: Annotated[float, Field(gt=0)] = 30.0
    dicom_dimse_timeout: Annotated[float, Field(gt=0)] = 120.0
    dicom_network_timeout: Annotated[float, Field(gt=0)] = 60.0
