"""Packager configuration, read from DICOMISO_* variables (README.md has the table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import MAX_LINK_TTL

from .i18n import Lang

Profile = Literal[
    "STD-GEN-DVD-JPEG",
    "STD-GEN-CD",
    "STD-GEN-DVD-J2K",
    "STD-GEN-BD-JPEG",
    "STD-GEN-BD-J2K",
    "STD-GEN-USB-JPEG",
    "STD-GEN-USB-J2K",
]


class PackagerSettings(CommonSettings):
    """Where the other services are, how links and mails look, where images are built."""

    http_port: int = 8003
    lookup_url: str = "http://127.0.0.1:8001"
    retriever_url: str = "http://127.0.0.1:8002"
    forwarder_url: str = "http://127.0.0.1:8004"  # the staff page's "send to PACS"
    # Header in which the reverse proxy names the signed-in staff member (e.g.
    # X-Forwarded-User); trusted only on requests with the valid token; goes into audit events.
    user_header: str | None = None
    retrieve_method: Literal["move", "get", "dicomweb"] | None = None  # None: retriever decides
    retrieve_wait: Annotated[float, Field(gt=0)] = 3600.0  # seconds to wait for a retrieval
    link_ttl: Annotated[int, Field(ge=60, le=MAX_LINK_TTL)] = 259_200
    package_expiry_days: Annotated[int, Field(ge=1, le=3650)] = 7  # lifecycle on packages/
    default_profile: Profile = "STD-GEN-DVD-JPEG"
    # Bytes one medium holds, for every profile (tests, sites with other media); None: the
    # profile's own (CD 734,003,200, DVD 4,700,000,000, ...). A larger study becomes a set.
    medium_capacity_bytes: Annotated[int, Field(gt=0)] | None = None
    work_dir: Path | None = None  # temporary image files; None = the system's TMPDIR
    institution_name: str = "dicom-iso demo hospital"
    # Who the patient asks (shown on the online page and in the e-mail): desk, phone, address.
    institution_contact: str = ""
    # On the patient's hand-out, in the e-mail, on the online page and in README.TXT.
    institution_address: str = ""
    institution_phone: str = ""
    # What the disc, the e-mail and the online page are written in; the staff page follows
    # the browser (Accept-Language) and its own switch.
    language: Lang = "en"
    timezone: str = "UTC"  # an IANA zone (Asia/Jakarta): the times patients and clerks read
    viewer: bool = True  # a viewer on every disc; false: none (README.TXT and INDEX.HTM say so)
    viewer_dir: Path | None = None  # another viewer instead of the bundled web viewer
    # Write the online page (packages/{id}/view.html, the bundled viewer whatever the disc
    # holds) and both formats (ISO and ZIP).
    view_online: bool = True
    build_workers: Annotated[int, Field(ge=1, le=32)] = 4  # parallel S3 reads while building
    build_prefetch: Annotated[int, Field(ge=0, le=16)] = 4  # S3 objects opened ahead of the writer
    # glibc malloc arenas of the process (malloc.py; 0: glibc's default, 8 per CPU): fewer
    # arenas keep less freed memory of the image buffers (peak RSS -16 MiB at 1,000 CT)
    malloc_arenas: Annotated[int, Field(ge=0, le=64)] = 2

    # The staff page's sign-in with the IdP (signin.py; docs/security.md): authorization
    # code with PKCE; the client as registered at DICOMISO_OIDC_ISSUER. Unset: token mode.
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None  # confidential client; or the _FILE below
    oidc_client_secret_file: Path | None = None  # a mounted secret, read at each sign-in
    session_secret: SecretStr | None = None  # signs the session cookie (>= 32 characters)
    session_idle: Annotated[int, Field(ge=60, le=86_400)] = 900  # seconds without a request
    session_max: Annotated[int, Field(ge=300, le=7 * 86_400)] = 8 * 3600  # from sign-in
    # Where staff reach the page (https://staff.hospital.example): the redirect URI is
    # {public_url}/callback. Unset: taken from the request, on loopback only.
    public_url: str | None = None

    smtp_url: SecretStr | None = None  # smtp://user:pass@host:port or smtps://...
    smtp_starttls: bool = True  # smtp:// upgrades with STARTTLS (refuses if absent)
    smtp_ca_file: Path | None = None  # extra CA to trust (self-signed relay, tests)
    smtp_timeout: Annotated[float, Field(gt=0)] = 20.0
    mail_from: str = "dicom-iso@localhost"

    @model_validator(mode="after")
    def _signin_complete(self) -> Self:
        """Sign-in needs the issuer (and so its audience) and a key to sign sessions with."""
        if self.public_url is not None:
            url = urlsplit(self.public_url)
            if url.scheme not in ("https", "http") or not url.hostname or url.query:
                raise ValueError("DICOMISO_PUBLIC_URL must be a URL like https://host[/path]")
        if not self.oidc_client_id:
            return self
        if not self.oidc_issuer:
            raise ValueError("DICOMISO_OIDC_CLIENT_ID needs DICOMISO_OIDC_ISSUER")
        secret = self.session_secret.get_secret_value() if self.session_secret else ""
        if len(secret) < 32:
            raise ValueError(
                "DICOMISO_SESSION_SECRET (at least 32 characters) is required with "
                "DICOMISO_OIDC_CLIENT_ID"
            )
        if self.session_idle > self.session_max:
            raise ValueError("DICOMISO_SESSION_IDLE must not be longer than DICOMISO_SESSION_MAX")
        return self

    def client_secret(self) -> str | None:
        """The OIDC client's secret: the variable, else the file (read now: rotation)."""
        if self.oidc_client_secret is not None:
            return self.oidc_client_secret.get_secret_value()
        if self.oidc_client_secret_file is not None:
            return self.oidc_client_secret_file.read_text("utf-8").strip()
        return None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name like Asia/Jakarta)"
            ) from exc
        return value


def contact_line(settings: PackagerSettings) -> str:
    """Address, telephone and the free contact text, as one line (empty when none is set)."""
    parts = [settings.institution_address.strip(), settings.institution_phone.strip()]
    parts.append(settings.institution_contact.strip())
    return ", ".join(p for p in parts if p)
