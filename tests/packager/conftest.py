"""The packager against the real stack: lookup (real MariaDB HIS) and retriever over HTTP,
Orthanc as the PACS, the moto server as S3, an aiosmtpd sink with STARTTLS and login."""

from __future__ import annotations

import datetime
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from dicomiso_common.store import Store
from dicomiso_packager.app import create_app as create_packager
from dicomiso_packager.settings import PackagerSettings
from support.mariadb import HisDb
from support.net import free_port
from support.stack import packager_values, start_backend

SMTP_USER, SMTP_PASSWORD = "relay-user", "relay-secret"


@dataclass
class Sink:
    """An SMTP relay on loopback that keeps what it is given."""

    port: int
    ca_file: Path
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, _server: Any, _session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        self.messages.append(BytesParser(policy=default_policy).parsebytes(data))
        return "250 OK"

    def authenticate(
        self, _server: Any, _session: Session, _envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "smtp.crt", tmp / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[Sink]:
    """aiosmtpd requiring STARTTLS before AUTH, with a self-signed certificate."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = Sink(free_port(), cert)
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=sink.port,
        tls_context=context,
        require_starttls=True,
        authenticator=sink.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    yield sink
    controller.stop()


@dataclass
class Stack:
    packager: TestClient
    store: Store
    settings: PackagerSettings
    his: HisDb
    orthanc: Any
    retriever_url: str
    lookup_url: str

    def post(self, body: dict[str, Any]) -> Any:
        return self.packager.post("/v1/packages", json=body)

    def wait(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.packager.get(f"/v1/packages/{job_id}").json()
            if status["state"] in ("succeeded", "failed"):
                return dict(status)
            time.sleep(0.2)
        raise AssertionError(f"package {job_id} did not finish: {status}")

    def run(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(body)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["id"])

    def keys(self, prefix: str) -> list[str]:
        return [o.key for o in self.store.list(prefix)]


@pytest.fixture
def make_stack(s3_bucket: Any, orthanc: Any, tmp_path: Path) -> Iterator[Any]:
    """Start lookup + retriever over HTTP and the packager in-process; all stopped after."""
    with ExitStack() as stack:

        def make(
            pacs: Any = None, retriever: dict[str, Any] | None = None, **overrides: Any
        ) -> Stack:
            pacs = pacs or orthanc
            token = "stack-token"
            backend = start_backend(
                stack, s3_bucket, pacs, token=token, name="stack", retriever=retriever
            )
            values = packager_values(backend, tmp_path, name="stack")
            values["call_token"] = token
            values.update(overrides)
            settings = PackagerSettings(**values)
            client = stack.enter_context(
                TestClient(create_packager(settings), raise_server_exceptions=False)
            )
            return Stack(
                client,
                backend.store,
                settings,
                backend.his,
                pacs,
                backend.retriever_url,
                backend.lookup_url,
            )

        yield make
