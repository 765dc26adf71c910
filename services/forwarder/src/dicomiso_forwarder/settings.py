"""Forwarder configuration, read from DICOMISO_* variables (README.md has the table)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from dicomiso_common.dicom import AE_TITLE
from dicomiso_common.settings import CommonSettings


class Peer(BaseModel):
    """A DICOM peer (C-STORE), DICOMISO_PEERS: name -> this; `type` "dicom" is the default."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["dicom"] = "dicom"
    aet: str
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    max_associations: Annotated[int, Field(ge=1, le=16)] = 2
    commitment: bool = False  # ask for Storage Commitment (PS3.4 J) after the C-STOREs

    @field_validator("aet")
    @classmethod
    def _aet(cls, value: str) -> str:
        if not AE_TITLE.fullmatch(value) or value != value.strip():
            raise ValueError("AE title: 1-16 printable characters, no backslash, no padding")
        return value


class DicomwebPeer(BaseModel):
    """A DICOMweb peer (STOW-RS): `url` is the DICOMweb root, e.g. `https://127.0.0.1:8443/dicom-web`.

    Secrets are never in DICOMISO_PEERS itself: a password or token comes from an environment
    variable (`*_env`) or a mounted file (`*_file`), read at each use, so a rotated secret
    needs no restart.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["dicomweb"]
    url: str
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str = ""
    password_env: str = ""
    password_file: Path | None = None
    token_env: str = ""
    token_file: Path | None = None
    verify_tls: bool = True
    ca_file: Path | None = None  # PEM bundle to verify the archive's certificate with
    max_connections: Annotated[int, Field(ge=1, le=16)] = 2  # STOW requests at once
    batch_instances: Annotated[int, Field(ge=1, le=10_000)] = 50  # instances per request
    batch_bytes: Annotated[int, Field(ge=1)] = 256 * 1024 * 1024  # bytes per request (soft)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if "@" in value.split("/")[2]:
            raise ValueError("url must not hold credentials: use auth and *_env or *_file")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> DicomwebPeer:
        if self.auth == "basic" and not (
            self.username and (self.password_env or self.password_file)
        ):
            raise ValueError("auth basic needs username and password_env or password_file")
        if self.auth == "bearer" and not (self.token_env or self.token_file):
            raise ValueError("auth bearer needs token_env or token_file")
        return self

    def secret(self) -> str:
        """The password (basic) or token (bearer), read now; "" when auth is none."""
        env, path = {
            "basic": (self.password_env, self.password_file),
            "bearer": (self.token_env, self.token_file),
        }.get(self.auth, ("", None))
        if path is not None:
            return path.read_text().strip()
        return os.environ.get(env, "") if env else ""


def _peer_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "dicom"))
    return str(getattr(value, "type", "dicom"))


AnyPeer = Annotated[
    Annotated[Peer, Tag("dicom")] | Annotated[DicomwebPeer, Tag("dicomweb")],
    Discriminator(_peer_type),
]


class ForwarderSettings(CommonSettings):
    """Peers come only from here; a request can name a peer, never a host."""

    http_port: int = 8004
    peers: dict[str, AnyPeer] = Field(default_factory=dict)  # DICOMISO_PEERS, JSON
    calling_aet: str = "CDRECORD"
    retriever_url: str = "http://127.0.0.1:8002"
    retrieve_wait: Annotated[float, Field(gt=0)] = 3600.0  # seconds to wait for a retrieval
    send_attempts: Annotated[int, Field(ge=1)] = 4  # per batch, for transient failures
    send_backoff: Annotated[float, Field(ge=0)] = 1.0  # seconds, doubled per attempt
    dicom_acse_timeout: Annotated[float, Field(gt=0)] = 30.0
    dicom_dimse_timeout: Annotated[float, Field(gt=0)] = 120.0
    dicom_network_timeout: Annotated[float, Field(gt=0)] = 60.0
    http_timeout: Annotated[float, Field(gt=0)] = 300.0  # one STOW-RS request, seconds

    # Storage Commitment: our SCP for N-EVENT-REPORTs that come on a new association.
    commitment_timeout: Annotated[float, Field(gt=0)] = 600.0  # seconds to wait for the report
    commitment_host: str = "127.0.0.1"  # bind address of the commitment SCP
    commitment_port: Annotated[int, Field(ge=0, le=65535)] = 10105  # 0: no SCP
    commitment_poll: Annotated[float, Field(gt=0)] = 1.0  # how often the job looks for it

    @property
    def commitment_wanted(self) -> bool:
        """True when some peer asks for Storage Commitment: the SCP runs then."""
        return any(isinstance(p, Peer) and p.commitment for p in self.peers.values())
