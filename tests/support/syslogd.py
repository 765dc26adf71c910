"""A real syslog receiver for the tests: Debian's rsyslogd with imtcp over TLS (gtls, RFC 5425).

Its own config, work directory and output file in a tmp dir; it listens on 127.0.0.1 only, on
a port the kernel picked; it is started in the foreground (`rsyslogd -n`) and stopped by its
PID. Each message it receives is one JSON line in `out` (PRI, APP-NAME, MSGID, structured
data, the message), so tests read what an Audit Record Repository would store.

The certificates are made here with `cryptography`: a CA, a server certificate for
127.0.0.1 that it signed, and an unrelated CA for the "wrong CA" case.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .net import LOOPBACK, free_port, wait_for_port

RSYSLOGD = "/usr/sbin/rsyslogd"


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA the receiver's certificate chains to, its certificate and key, and a
    CA that signed nothing of ours."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_pki(out_dir: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 signed by it, and another CA."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("dicom-iso test ARR CA")
    _, other = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(LOOPBACK))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(out_dir / "ca.pem", out_dir / "cert.pem", out_dir / "key.pem", out_dir / "other.pem")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.other_ca.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_pem_key(key))
    pki.key.chmod(0o600)
    return pki


# One JSON object per received message; rsyslog's :::json escapes each property's value.
_LINE = (
    '{"pri":"%pri%","app":"%app-name:::json%","msgid":"%msgid:::json%",'
    '"host":"%hostname:::json%","sd":"%structured-data:::json%","msg":"%msg:::json%"}\\n'
)
_QUOTED_LINE = _LINE.replace('"', '\\"')  # inside a RainerScript string
_CONFIG = """
global(
  workDirectory="{work}"
  maxMessageSize="256k"
  parser.escapeControlCharactersOnReceive="off"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
       streamDriver.authMode="anon")
template(name="line" type="string" string="{line}")  # quotes escaped below
ruleset(name="atna") {{
  action(type="omfile" file="{out}" template="line" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" address="{host}" port="{port}" ruleset="atna")
"""


class Rsyslog:
    """One rsyslogd on 127.0.0.1:`port` over TLS; `start` and `stop` as often as a test likes,
    on the same port."""

    def __init__(self, base: Path, pki: Pki, port: int | None = None) -> None:
        self.base = base
        self.pki = pki
        self.port = port or free_port()
        self.out = base / "received.jsonl"
        self.work = base / "work"
        self.conf = base / "rsyslog.conf"
        self.pidfile = base / "rsyslogd.pid"
        self.log = base / "rsyslogd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.work.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            _CONFIG.format(
                work=self.work, ca=pki.ca, cert=pki.cert, key=pki.key, line=_QUOTED_LINE,
                out=self.out, host=LOOPBACK, port=self.port,
            )
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"tls://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        check = subprocess.run(
            [RSYSLOGD, "-N1", "-f", str(self.conf)], capture_output=True, text=True, check=False
        )
        if check.returncode:
            raise RuntimeError(f"rsyslog config refused: {check.stderr or check.stdout}")
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_for_port(LOOPBACK, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"rsyslogd did not listen: {self.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        """SIGTERM by PID (rsyslogd writes what it has received), then wait for it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def messages(self) -> list[dict[str, Any]]:
        """Every message received so far, in order of arrival."""
        if not self.out.exists():
            return []
        text = self.out.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The messages once at least `count` have arrived; raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {count} syslog messages arrived")
            time.sleep(0.1)
