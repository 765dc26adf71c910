"""Settings every service reads, from DICOMISO_* variables (see README.md for the table)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def give_up_after(stale_after: float, margin: float | None = None) -> float:
    """How long an owner keeps a job or lease without a confirmed write: `stale_after` less
    the margin (a third of it unless configured), so it always stops before others take over."""
    return stale_after - (stale_after / 3 if margin is None else margin)


def syslog_target(url: str) -> tuple[str, int]:
    """Host and port of a `tls://host:port` URL (DICOMISO_AUDIT_SYSLOG_URL).

    Raises:
        ValueError: Not such a URL; the message names what is wrong.
    """
    parts = urlsplit(url)
    if parts.scheme != "tls":
        raise ValueError("DICOMISO_AUDIT_SYSLOG_URL must be tls://host:port (RFC 5425)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or port == 0:
        raise ValueError("DICOMISO_AUDIT_SYSLOG_URL needs a host and a port: tls://host:port")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError("DICOMISO_AUDIT_SYSLOG_URL takes only tls://host:port")
    return parts.hostname, port


class CommonSettings(BaseSettings):
    """Names shared by all four services (README.md has the table)."""

    model_config = SettingsConfigDict(env_prefix="DICOMISO_", extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    api_token: SecretStr = SecretStr("")
    call_token: SecretStr | None = None
    log_level: str = "INFO"
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024  # a request body, per route
    # seconds for a request's headers, and again for its body, to arrive (slow clients)
    http_read_timeout: Annotated[float, Field(gt=0)] = 10.0

    # OpenID Connect: the APIs accept the IdP's JWT access tokens too (docs/security.md)
    oidc_issuer: str | None = None  # https://idp.example/realms/hospital; unset: tokens only
    oidc_audience: str | None = None  # the `aud` our tokens carry (required with the issuer)
    oidc_roles_claim: str = "roles"  # dotted path: realm_access.roles (Keycloak), roles
    oidc_clock_skew: Annotated[int, Field(ge=0, le=300)] = 60  # seconds, exp / nbf / iat
    oidc_jwks_min_refresh: Annotated[float, Field(ge=1)] = 30.0  # between JWKS fetches
    oidc_jwks_max_age: Annotated[float, Field(ge=60)] = 3600.0  # then refreshed on use
    oidc_http_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0  # each IdP request

    s3_endpoint_url: str | None = "http://127.0.0.1:9000"
    s3_public_url: str | None = None
    s3_bucket: str = "dicom-iso"
    s3_multipart_threshold: int = 64 * 1024 * 1024
    # a part of a multipart upload; S3 takes parts >= 5 MiB (all but the last)
    s3_multipart_chunk: Annotated[int, Field(ge=5 * 1024 * 1024)] = 16 * 1024 * 1024

    job_heartbeat: Annotated[float, Field(gt=0)] = 5.0  # seconds between heartbeats
    # record age by the bucket's clock that means "dead"; HTTP dates have whole seconds
    job_stale_after: Annotated[float, Field(ge=2)] = 30.0
    job_margin: Annotated[float, Field(gt=0)] | None = None  # owner stops this much earlier
    job_workers: Annotated[int, Field(ge=1)] = 4  # jobs run at once by one replica
    job_expiry_days: Annotated[int, Field(ge=1, le=3650)] = 30  # lifecycle on job records
    manage_lifecycle: bool = True  # put the lifecycle rules on the bucket at start-up
    replica_id: str = Field(default_factory=_default_replica_id)
    # AuditSourceID of the DICOM audit messages (atna.render); None: the service's name
    audit_source_id: str | None = None
    # The Audit Record Repository: RFC 5424 syslog over TLS (RFC 5425); unset, no outbox
    audit_syslog_url: str | None = None  # tls://host:port
    audit_syslog_ca_file: Path | None = None  # the repository's CA; unset: the system's CAs
    audit_syslog_cert_file: Path | None = None  # our client certificate (with the key)
    audit_syslog_key_file: Path | None = None
    audit_syslog_facility: Annotated[int, Field(ge=0, le=23)] = 10  # authpriv (13: log audit)
    audit_syslog_hostname: str | None = None  # HOSTNAME in each message; default the host's
    audit_syslog_app_name: str | None = None  # APP-NAME; default dicomiso-{service}
    # seconds between outbox listings while it is empty (no longer than the job heartbeat)
    audit_syslog_interval: Annotated[float, Field(gt=0)] = 5.0
    audit_syslog_batch: Annotated[int, Field(ge=1, le=1000)] = 100  # messages per connection
    audit_syslog_timeout: Annotated[float, Field(gt=0)] = 10.0  # one batch: connect to close

    @property
    def job_give_up_after(self) -> float:
        """Seconds without a confirmed write after which an owner stops (docs/architecture.md).

        Others take over only at `job_stale_after`, so the owner always stops first.
        """
        return give_up_after(self.job_stale_after, self.job_margin)

    @model_validator(mode="after")
    def _oidc_complete(self) -> Self:
        """An issuer without an audience would accept any of its tokens; plain HTTP only on
        loopback (the tests' IdP), since the keys it serves decide who may sign in."""
        if not self.oidc_issuer:
            return self
        if not self.oidc_audience:
            raise ValueError("DICOMISO_OIDC_AUDIENCE is required with DICOMISO_OIDC_ISSUER")
        url = urlsplit(self.oidc_issuer)
        loopback = url.hostname in ("127.0.0.1", "::1", "localhost")
        if url.scheme != "https" and not (url.scheme == "http" and loopback):
            raise ValueError("DICOMISO_OIDC_ISSUER must be an https:// URL")
        return self

    @model_validator(mode="after")
    def _syslog_complete(self) -> Self:
        """A repository URL we can reach, and files that exist, or no start-up."""
        if self.audit_syslog_url:
            syslog_target(self.audit_syslog_url)
        elif self.audit_syslog_ca_file or self.audit_syslog_cert_file:
            raise ValueError("DICOMISO_AUDIT_SYSLOG_URL is needed for its CA or certificate")
        if bool(self.audit_syslog_cert_file) != bool(self.audit_syslog_key_file):
            raise ValueError(
                "DICOMISO_AUDIT_SYSLOG_CERT_FILE and DICOMISO_AUDIT_SYSLOG_KEY_FILE go together"
            )
        if self.audit_syslog_url and self.audit_syslog_timeout >= self.job_give_up_after:
            raise ValueError(
                "DICOMISO_AUDIT_SYSLOG_TIMEOUT must be shorter than DICOMISO_JOB_STALE_AFTER "
                "minus DICOMISO_JOB_MARGIN: a batch must end while the shipper's lease holds"
            )
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, f"audit_syslog_{name}")
            if path is not None and not path.is_file():
                raise ValueError(f"DICOMISO_AUDIT_SYSLOG_{name.upper()}: no file at {path}")
        return self

    @model_validator(mode="after")
    def _heartbeats_fit(self) -> Self:
        """Refuse timings under which a live owner could look dead to the other replicas."""
        if self.job_give_up_after <= 0:
            raise ValueError("DICOMISO_JOB_MARGIN must be smaller than DICOMISO_JOB_STALE_AFTER")
        if 2 * self.job_heartbeat > self.job_give_up_after:
            raise ValueError(
                "DICOMISO_JOB_HEARTBEAT is too long: two heartbeats must fit into "
                "DICOMISO_JOB_STALE_AFTER minus DICOMISO_JOB_MARGIN "
                f"({self.job_heartbeat:g} s x 2 > {self.job_give_up_after:g} s)"
            )
        return self

    def outgoing_token(self) -> str:
        """The bearer token to send to other services (DICOMISO_CALL_TOKEN, else our own)."""
        token = self.call_token if self.call_token is not None else self.api_token
        return token.get_secret_value()
