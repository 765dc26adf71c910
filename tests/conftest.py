"""Shared fixtures: a moto S3 server, Orthanc PACS instances and synthetic studies.

Everything listens on 127.0.0.1 only and every process a fixture starts is
stopped by that fixture. ``tests/`` is on ``sys.path`` (pytest rootdir
conftest, no ``__init__.py``), so helpers import as ``support.*``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from dicomiso_common.dicom import configure
from support.dcmqrscp import Dcmqrscp
from support.net import LOOPBACK
from support.orthanc import Orthanc
from support.studies import Study, make_study
from support.syslogd import Rsyslog, make_pki

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3_REGION = "us-east-1"
S3_KEY = "testing"  # moto accepts any credentials; used as both key id and secret


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running moto S3 endpoint."""

    endpoint_url: str

    def client(self) -> S3Client:
        """A boto3 S3 client for this endpoint.

        Credentials and region are passed explicitly (never via environment
        variables) so tests cannot leak settings into each other or reach AWS.
        """
        client: S3Client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_KEY,
            config=Config(retries={"max_attempts": 2}, proxies={}),
        )
        return client


@dataclasses.dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on the session's moto server."""

    endpoint_url: str
    name: str
    client: S3Client


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 in a thread on 127.0.0.1; port 0 lets the kernel pick (no race)."""
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()
        wsgi = getattr(server, "_server", None)
        if wsgi is not None:
            wsgi.server_close()  # stop() leaves the listening socket open


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[S3Bucket]:
    """A uniquely named empty bucket, emptied and deleted afterwards."""
    client = s3_server.client()
    name = f"dicom-iso-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    try:
        yield S3Bucket(endpoint_url=s3_server.endpoint_url, name=name, client=client)
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)
        client.close()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """The shared PACS (AE "ABPACS"); tests must not kill or restart it."""
    with Orthanc(tmp_path_factory.mktemp("orthanc"), aet="ABPACS") as pacs:
        yield pacs


@pytest.fixture(scope="session")
def dcmqrscp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dcmqrscp]:
    """The second PACS: dcmtk's dcmqrscp (AE "QRPACS"), sparse in its C-FIND answers."""
    with Dcmqrscp(tmp_path_factory.mktemp("dcmqrscp"), aet="QRPACS") as pacs:
        yield pacs


@pytest.fixture(params=["orthanc", "dcmqrscp"])
def any_pacs(request: pytest.FixtureRequest) -> Orthanc | Dcmqrscp:
    """Each PACS implementation in turn, for the tests that must hold against both."""
    pacs: Orthanc | Dcmqrscp = request.getfixturevalue(request.param)
    return pacs


def _pacs_factory(
    tmp_path_factory: pytest.TempPathFactory, kind: type[Any], default_aet: str
) -> Iterator[Callable[..., Any]]:
    """Make private PACS instances of `kind`; every one is killed by PID at teardown."""
    made: list[Any] = []

    def make(aet: str = default_aet, *, start: bool = True, **kwargs: Any) -> Any:
        pacs = kind(tmp_path_factory.mktemp(f"{kind.name}-{aet.lower()}"), aet, **kwargs)
        made.append(pacs)
        if start:
            pacs.start()
        return pacs

    yield make
    for pacs in made:
        pacs.kill()


DcmqrscpFactory = Callable[..., Dcmqrscp]


@pytest.fixture
def dcmqrscp_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DcmqrscpFactory]:
    """Make private dcmqrscp instances with other options; all killed at the end."""
    yield from _pacs_factory(tmp_path_factory, Dcmqrscp, "QRPACS")


OrthancFactory = Callable[..., Orthanc]


@pytest.fixture
def orthanc_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancFactory]:
    """Make extra, private Orthanc instances the test may kill or restart.

    The factory takes :class:`Orthanc`'s keyword arguments plus ``start``
    (default True). At teardown every instance is SIGKILLed by PID: its
    storage is a throwaway tmp dir, and a graceful Orthanc shutdown costs
    ~2.5 s (mostly the HTTP server winding down).
    """
    yield from _pacs_factory(tmp_path_factory, Orthanc, "ABPACS")


StudyFactory = Callable[..., Study]


@pytest.fixture
def syslog_receiver(tmp_path: Path) -> Iterator[Rsyslog]:
    """rsyslogd receiving syslog over TLS on a free loopback port (`support.syslogd`), with a
    CA made for the test (`.pki`); stopped by PID after the test."""
    rsyslog = Rsyslog(tmp_path / "rsyslog", make_pki(tmp_path / "pki"))
    rsyslog.start()
    try:
        yield rsyslog
    finally:
        rsyslog.stop()


@pytest.fixture
def study_factory(tmp_path: Path) -> StudyFactory:
    """Write studies with :func:`make_study` into ``tmp_path``.

    Each call gets its own directory and, unless given, a unique
    AccessionNumber (16 chars max for SH), so tests sharing the session PACS
    never collide.
    """
    counter = itertools.count(1)

    def make(**kwargs: Any) -> Study:
        index = next(counter)
        kwargs.setdefault("accession", f"A{uuid.uuid4().hex[:15].upper()}")
        return make_study(tmp_path / f"study-{index}", **kwargs)

    return make


@pytest.fixture(scope="session", autouse=True)
def _dicom_configured() -> None:
    """pydicom and pynetdicom set up as each service's start-up does (no identifiers in
    pynetdicom's logs, C-STORE to and from files), before any test's first association."""
    configure()


@pytest.fixture(scope="session", autouse=True)
def _s3_credentials() -> Iterator[None]:
    """The services read S3 credentials the standard way (AWS_* variables): give them moto's.

    Shared credential files are pointed at nothing, so no test can pick up a real profile.
    """
    values = {
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_KEY,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield
    for key, old in saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
