"""Retriever configuration, read from DICOMISO_* variables (README.md has the table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, model_validator

from dicomiso_common.settings import CommonSettings


class RetrieverSettings(CommonSettings):
    """Where the PACS is, how we answer it, and how hard we wait for it."""

    http_port: int = 8002

    pacs_aet: str = "ABPACS"
    pacs_host: str = "127.0.0.1"
    pacs_port: int = 11112
    calling_aet: str | None = None  # AE title we call the PACS with; default: scp_aet

    scp_aet: str = "CDRECORD"
    scp_host: str = "127.0.0.1"  # bind address of the Storage SCP
    scp_port: int = 10104
    scp_calling_aets: str = ""  # who may C-STORE to us; "" = the PACS, "*" = anyone
    scp_max_pdu: Annotated[int, Field(ge=0)] = 1_048_576  # largest PDU we accept (0 = no limit)
    scp_max_instance_bytes: Annotated[int, Field(gt=0)] = 4 * 1024**3  # larger: 0xA700
    scp_fast_dimse: bool = True  # C-STORE-RSP encoded directly (fastdimse.py), not by pynetdicom
    # Receiver worker processes that take the SCP's associations (workers.py); 0: this process
    scp_workers: Annotated[int, Field(ge=0, le=64)] = 0

    scp_upload_workers: Annotated[int, Field(ge=1)] = 4  # parallel PUTs of full segments
    scp_upload_backlog: Annotated[int, Field(ge=1)] = 8  # full segments waiting for a PUT
    segment_bytes: Annotated[int, Field(ge=1)] = 32 * 1024 * 1024  # a segment is flushed at
    segment_idle: Annotated[float, Field(gt=0)] = 2.0  # ... or this long without an instance

    retrieve_method: Literal["move", "get", "dicomweb"] = "move"
    dicom_acse_timeout: float = 30.0  # association negotiation
    dicom_dimse_timeout: float = 600.0  # one DIMSE reply, e.g. the next C-MOVE pending
    dicom_network_timeout: float = 60.0  # silence on the socket
    move_parallel: Annotated[int, Field(ge=1)] = 2  # studies moved at once within one job
    move_lanes: Annotated[int, Field(ge=1)] = 1  # C-MOVEs (associations) at once per study
    move_lane_min_instances: Annotated[int, Field(ge=1)] = 200  # smaller: one C-MOVE
    settle_timeout: Annotated[float, Field(ge=0)] = 30.0  # wait for other replicas' uploads
    lease_poll: Annotated[float, Field(gt=0)] = 0.5  # how often we look at another job's study

    # DICOMweb (method "dicomweb"): QIDO-RS and WADO-RS under this root, e.g. .../dicom-web
    pacs_dicomweb_url: str | None = None
    pacs_dicomweb_username: str | None = None  # basic auth, with the password below
    pacs_dicomweb_password: SecretStr | None = None
    pacs_dicomweb_password_file: Path | None = None  # a mounted secret, read at each job
    pacs_dicomweb_token: SecretStr | None = None  # bearer token
    pacs_dicomweb_token_file: Path | None = None  # a mounted token, read at each job (rotation)
    pacs_dicomweb_ca_file: Path | None = None  # PEM bundle that signs the archive's certificate
    pacs_dicomweb_tls_verify: bool = True
    pacs_dicomweb_timeout: Annotated[float, Field(gt=0)] = 60.0  # silence on the connection

    @model_validator(mode="after")
    def _dicomweb_coherent(self) -> Self:
        """Refuse a DICOMweb setup that would fail at the first job, naming the variable."""
        url = self.pacs_dicomweb_url
        if self.retrieve_method == "dicomweb" and not url:
            raise ValueError("DICOMISO_RETRIEVE_METHOD=dicomweb needs DICOMISO_PACS_DICOMWEB_URL")
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("DICOMISO_PACS_DICOMWEB_URL must start with http:// or https://")
        if url is not None and "@" in url.split("/", 3)[2]:
            raise ValueError(
                "DICOMISO_PACS_DICOMWEB_URL must not carry credentials: use "
                "DICOMISO_PACS_DICOMWEB_USERNAME/_PASSWORD or _TOKEN"
            )
        basic = self.pacs_dicomweb_username is not None
        secret = self.pacs_dicomweb_password is not None or self.pacs_dicomweb_password_file
        bearer = self.pacs_dicomweb_token is not None or self.pacs_dicomweb_token_file
        if basic != bool(secret):
            raise ValueError(
                "DICOMISO_PACS_DICOMWEB_USERNAME and DICOMISO_PACS_DICOMWEB_PASSWORD(_FILE) "
                "go together"
            )
        if basic and bearer:
            raise ValueError("give either basic credentials or a DICOMweb token, not both")
        return self

    @property
    def our_calling_aet(self) -> str:
        return self.calling_aet or self.scp_aet

    @property
    def allowed_calling_aets(self) -> list[str] | None:
        """AE titles our SCP accepts associations from (None: anyone)."""
        raw = self.scp_calling_aets.strip()
        if raw == "*":
            return None
        return [a.strip() for a in raw.split(",") if a.strip()] or [self.pacs_aet]
