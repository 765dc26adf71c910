"""DICOMweb test helpers: pydicom's shipped files as one study, and an archive that lies.

`CraftedArchive(tls_pem=...)` also terminates TLS in front of Orthanc, whose own TLS crashes
in Debian's 1.10.1 (support/orthanc.py).

`CraftedArchive` stands in front of a real Orthanc's DICOMweb root and forwards every request,
then lets a test change the answer: another status, another boundary, a body cut short, a part
of another study, a QIDO answer with another accession. Only what Orthanc itself cannot be made
to answer goes through it (docs: CONTRIBUTING.md, "How to add a PACS behaviour").
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from support.net import LOOPBACK

# pydicom's shipped files in the encodings archives hold: explicit and implicit little endian,
# big endian, deflated, JPEG baseline and extended, JPEG-LS, JPEG 2000, RLE; CT, MR, RT, SR,
# SC, waveform, multi-frame (all in pydicom's wheel: nothing is downloaded).
SHIPPED = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
    "JPEG-lossy.dcm",
    "JPGExtended.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_rle_2frame.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "waveform_ecg.dcm",
)


@dataclass(frozen=True)
class ShippedStudy:
    study_uid: str
    accession: str
    files: list[Path]


def shipped_study(out_dir: Path, accession: str) -> ShippedStudy:
    """Rewrite pydicom's shipped files into one synthetic study (new UIDs, patient, accession),
    each saved in its own transfer syntax: real-world encodings, no real patient."""
    study_uid = generate_uid()
    files = []
    for i, name in enumerate(SHIPPED):
        shipped = get_testdata_file(name, download=False)  # never a download
        assert shipped is not None, name  # noqa: S101 - a test helper
        ds = pydicom.dcmread(shipped)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AccessionNumber = accession
        ds.PatientID, ds.PatientName = "SHIPPED-1", "Shipped^Files"
        ds.InstanceNumber = i + 1
        path = out_dir / f"shipped-{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return ShippedStudy(study_uid, accession, files)


def self_signed_pem(out_dir: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (subjectAltName IP) and its key, in one PEM
    file, as Orthanc's ``SslCertificate`` wants it; it is also the CA file that trusts it."""
    key, cert, pem = out_dir / "key.pem", out_dir / "cert.pem", out_dir / "orthanc-tls.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={LOOPBACK}", "-addext", f"subjectAltName=IP:{LOOPBACK}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return pem


@dataclass
class Answer:
    """What the crafted archive sends back for one request."""

    status: int
    headers: dict[str, str]
    body: bytes


Craft = Callable[[str, Answer], Answer]  # (request path with query, upstream answer) -> answer


class CraftedArchive:
    """An HTTP server on loopback forwarding to `upstream`; `craft` may rewrite each answer."""

    def __init__(self, upstream: str, tls_pem: Path | None = None) -> None:
        """Args:
        upstream: The real archive's DICOMweb root.
        tls_pem: Serve HTTPS with this certificate and key (`self_signed_pem`).
        """
        self.upstream = upstream.rstrip("/")
        self.scheme = "https" if tls_pem else "http"
        self.craft: Craft = lambda _path, answer: answer
        self.requests: list[tuple[str, dict[str, str]]] = []
        archive = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                archive.requests.append((self.path, dict(self.headers)))
                answer = archive.craft(self.path, archive.fetch(self.path, self.headers))
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *_: Any) -> None:  # no request lines on stderr
                return

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        if tls_pem is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_pem)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self._server.server_address[1]}/dicom-web"

    def fetch(self, path: str, headers: Any) -> Answer:
        """The upstream answer to the same request (path below /dicom-web)."""
        sub = path.removeprefix("/dicom-web")
        forward = {k: v for k, v in headers.items() if k.lower() in ("accept",)}
        forward["Accept-Encoding"] = "identity"
        response = httpx.get(self.upstream + sub, headers=forward, timeout=30, trust_env=False)
        keep = {k: v for k, v in response.headers.items() if k.lower() == "content-type"}
        return Answer(response.status_code, keep, response.content)

    def __enter__(self) -> CraftedArchive:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def boundary_of(answer: Answer) -> bytes:
    """The boundary of a multipart answer, as bytes."""
    ctype = answer.headers["content-type"]
    return ctype.split("boundary=", 1)[1].split(";", 1)[0].strip('"').encode()


def parts_of(answer: Answer) -> list[bytes]:
    """The raw parts (headers and content) of a well-formed multipart answer."""
    delimiter = b"\r\n--" + boundary_of(answer)
    body = b"\r\n" + answer.body
    pieces = body.split(delimiter)[1:-1]  # drop the preamble and the close delimiter's tail
    return [p.removeprefix(b"\r\n") for p in pieces]


def multipart(parts: list[bytes], boundary: bytes) -> bytes:
    """A multipart body from raw parts."""
    out = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return out + b"--" + boundary + b"--\r\n"


def qido_with_accession(answer: Answer, accession: str) -> Answer:
    """The same QIDO answer, every study claiming another AccessionNumber."""
    studies = json.loads(answer.body)
    for study in studies:
        study["00080050"] = {"vr": "SH", "Value": [accession]}
    return Answer(answer.status, answer.headers, json.dumps(studies).encode())


def is_wado(path: str) -> bool:
    """Whether a request path is a WADO-RS study retrieval (not QIDO)."""
    return "/studies/" in path and "?" not in path and not path.endswith("/instances")
