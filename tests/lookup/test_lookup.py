"""The lookup service against a HIS in the real MariaDB (schema.sql + seed.sql)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from support.mariadb import MARIADB_PORT, HisDb, root_sql
from support.tcpproxy import TcpProxy


def test_known_accession_gives_the_seeded_patient(lookup: TestClient) -> None:
    r = lookup.get("/v1/accessions/MR.001")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "accession_number": "MR.001",
        "patient_id": "RM000001",
        "medrec_id": "RM000001",
        "reg_id": "REG-1001",
        "source": "his",
        "patient_name": {
            "original": "Budi Santoso",
            "display": "Budi Santoso",
            "family": "Budi Santoso",
            "given": None,
            "middle": None,
            "prefix": None,
            "suffix": None,
        },
    }


def test_names_keep_their_full_form(lookup: TestClient) -> None:
    """Apostrophes, commas, dots, ^ separators and accents survive into the JSON."""
    obrien = lookup.get("/v1/accessions/US.200").json()["patient_name"]
    assert (obrien["family"], obrien["given"], obrien["display"]) == (
        "O'Brien",
        "Mary Ann",
        "Mary Ann O'Brien",
    )
    dewi = lookup.get("/v1/accessions/MR.300").json()["patient_name"]
    assert dewi["display"] == "Dewi Anggraini, S.Kom."
    jose = lookup.get("/v1/accessions/CR.400").json()
    assert jose["patient_name"]["family"] == "Nuñez" and jose["reg_id"] is None


def test_unknown_accession_is_404(lookup: TestClient) -> None:
    r = lookup.get("/v1/accessions/NOPE.404")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_two_accessions_of_one_patient(lookup: TestClient) -> None:
    r = lookup.post("/v1/accessions:resolve", json={"accession_numbers": ["MR.001", "CT.002"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["same_patient"] is True
    assert [a["patient_id"] for a in body["accessions"]] == ["RM000001", "RM000001"]


def test_two_patients_are_told_apart(lookup: TestClient) -> None:
    body = lookup.post(
        "/v1/accessions:resolve", json={"accession_numbers": ["MR.001", "CT.100"]}
    ).json()
    assert body["same_patient"] is False
    assert [(a["accession_number"], a["patient_name"]["display"]) for a in body["accessions"]] == [
        ("MR.001", "Budi Santoso"),
        ("CT.100", "Siti Nurhaliza"),
    ]


def test_resolve_with_an_unknown_accession_is_404(lookup: TestClient) -> None:
    r = lookup.post("/v1/accessions:resolve", json={"accession_numbers": ["MR.001", "NOPE"]})
    assert r.status_code == 404


INJECTIONS = ["' OR 1=1 --", "%", "_", "\\", "A" * 17, "AB\x00C", "AB\nC", "MR.001'--"]


@pytest.fixture
def general_log() -> Any:
    """MariaDB's general query log, on for the test: what did the server really receive?"""
    root_sql("SET GLOBAL log_output = 'TABLE'")
    root_sql("TRUNCATE TABLE mysql.general_log")
    root_sql("SET GLOBAL general_log = 'ON'")

    def read() -> list[str]:
        root_sql("SET GLOBAL general_log = 'OFF'")
        rows = root_sql("SELECT CONVERT(argument USING utf8mb4) AS q FROM mysql.general_log")
        return [str(r["q"]) for r in rows]

    yield read
    root_sql("SET GLOBAL general_log = 'OFF'")


def test_injection_attempts_are_422_and_never_reach_the_database(
    lookup: TestClient, general_log: Any
) -> None:
    for value in INJECTIONS:
        one = lookup.get(
            "/v1/accessions/"
            + value.replace("%", "%25")
            .replace("\\", "%5C")
            .replace("\x00", "%00")
            .replace("\n", "%0A")
        )
        assert one.status_code == 422, (value, one.text)
        many = lookup.post("/v1/accessions:resolve", json={"accession_numbers": ["MR.001", value]})
        assert many.status_code == 422, (value, many.text)
    assert lookup.get("/v1/accessions/CT.100").status_code == 200  # the positive control

    queries = general_log()
    assert any("CT.100" in q for q in queries), "the general log did not record our query"
    for value in INJECTIONS:
        assert not any(value in q for q in queries if value not in ("%", "_", "\\")), value
    assert not any("OR 1=1" in q or "MR.001'" in q for q in queries)
    assert not any("MR.001" in q for q in queries), "a rejected batch must send nothing"


def test_database_down_is_503_then_recovers_by_itself(make_lookup: Any, his_db: HisDb) -> None:
    proxy = TcpProxy(MARIADB_PORT).start()
    client = make_lookup(
        his_url=SecretStr(his_db.url(proxy.port)),
        his_accession_db=his_db.accession_db,
        his_patient_db=his_db.patient_db,
        his_connect_timeout=1.0,
    )
    try:
        assert client.get("/v1/accessions/MR.001").status_code == 200
        proxy.stop()
        down = client.get("/v1/accessions/MR.001")
        assert down.status_code == 503
        assert down.headers["retry-after"] and "Traceback" not in down.text
        assert down.json()["title"] == "HIS database unavailable"
        assert client.get("/readyz").status_code == 503
        proxy.start()
        assert client.get("/v1/accessions/MR.001").status_code == 200
        assert client.get("/readyz").status_code == 200
    finally:
        proxy.stop()


def test_slow_query_hits_the_read_timeout_and_frees_the_worker(
    make_lookup: Any, his_db: HisDb
) -> None:
    slow = (
        "SELECT MEDRECID, RegID FROM `{accession_db}`.accessions "
        "WHERE AccessionNumber = %s AND SLEEP(5) = 0"
    )
    client = make_lookup(
        his_url=SecretStr(his_db.url()),
        his_accession_db=his_db.accession_db,
        his_patient_db=his_db.patient_db,
        his_read_timeout=1.0,
        his_pool_size=1,
        his_accession_query=slow,
    )
    started = time.monotonic()
    r = client.get("/v1/accessions/MR.001")
    assert r.status_code == 504 and r.headers["retry-after"]
    assert time.monotonic() - started < 4
    again = client.get("/v1/accessions/MR.001")  # the only pool slot came back
    assert again.status_code == 504


def test_no_patient_name_in_logs(lookup: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    lookup.get("/v1/accessions/MR.001")
    lookup.post("/v1/accessions:resolve", json={"accession_numbers": ["MR.001", "CT.100"]})
    lookup.get("/v1/accessions/NOPE.404")
    text = "\n".join(
        f"{r.getMessage()} {r.__dict__}"
        for r in caplog.records
        if r.levelno >= logging.INFO and not r.name.startswith("httpx")
    )
    assert "accessions resolved" in text
    for secret in ("Budi", "Santoso", "Siti", "RM000001", "MR.001", "NOPE.404"):
        assert secret not in text


def test_without_a_his_the_patient_comes_from_the_pacs(
    make_lookup: Any, any_pacs: Any, study_factory: Any
) -> None:
    """No DICOMISO_HIS_URL: one C-FIND by accession; source says pacs; the PN keeps its parts.

    At Orthanc and at dcmqrscp (which answers only the keys it indexes)."""
    from support.net import free_port

    study = study_factory(
        patient_name="Nuñez^José",
        patient_id="PACS-77",
        ct=1,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )
    any_pacs.upload(study.files)
    any_pacs.register_modality("CDRECORD", "127.0.0.1", free_port())
    client = make_lookup(pacs_aet=any_pacs.aet, pacs_port=any_pacs.dicom_port)
    any_pacs.mark()

    r = client.get(f"/v1/accessions/{study.accession}")

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["source"], body["patient_id"], body["medrec_id"]) == ("pacs", "PACS-77", None)
    assert body["patient_name"]["family"] == "Nuñez"
    assert body["patient_name"]["display"] == "José Nuñez"
    assert any_pacs.find_requests() == 1
    assert client.get("/v1/accessions/NOSUCH.1").status_code == 404
    any_pacs.mark()
    assert client.get("/v1/accessions/A%2A").status_code == 422
    assert any_pacs.find_requests() == 0


def test_a_real_server_logs_routes_not_accession_numbers(
    his_db: HisDb, caplog: pytest.LogCaptureFixture
) -> None:
    """Under uvicorn (as `dicomiso-lookup` runs), request lines name the route template."""
    import threading

    import httpx

    from dicomiso_common import serve
    from dicomiso_lookup.app import create_app
    from dicomiso_lookup.settings import LookupSettings
    from support.net import free_port

    caplog.set_level(logging.DEBUG)
    settings = LookupSettings(
        his_url=SecretStr(his_db.url()),
        http_port=free_port(),
        his_accession_db=his_db.accession_db,
        his_patient_db=his_db.patient_db,
    )
    server = serve.server(create_app(settings), settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        base = f"http://127.0.0.1:{settings.http_port}"
        assert httpx.get(f"{base}/v1/accessions/MR.001").status_code == 200
        assert httpx.get(f"{base}/v1/accessions/NOPE.404").status_code == 404
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    ours = [
        r for r in caplog.records if r.levelno >= logging.INFO and not r.name.startswith("httpx")
    ]
    assert any(getattr(r, "route", None) == "/v1/accessions/{accession}" for r in ours)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    for secret in ("MR.001", "NOPE.404", "Budi", "RM000001"):
        assert secret not in text


def _his_client(make_lookup: Any, his_db: HisDb, **overrides: Any) -> TestClient:
    client: TestClient = make_lookup(
        his_url=SecretStr(his_db.url()),
        his_accession_db=his_db.accession_db,
        his_patient_db=his_db.patient_db,
        **overrides,
    )
    return client


def test_misconfigured_query_is_500_without_retry_after(make_lookup: Any, his_db: HisDb) -> None:
    client = _his_client(
        make_lookup,
        his_db,
        his_accession_query=(
            "SELECT MEDRECID, RegID FROM `{accession_db}`.no_such_table WHERE AccessionNumber = %s"
        ),
    )
    r = client.get("/v1/accessions/MR.001")
    assert r.status_code == 500 and "retry-after" not in r.headers
    assert r.json()["title"] == "HIS lookup misconfigured"


def test_query_settings_are_checked_at_startup() -> None:
    from dicomiso_lookup.settings import LookupSettings

    for bad in ("SELECT 1", "SELECT %s, %s", "SELECT '%' WHERE a = %s", "SELECT {x} %s"):
        with pytest.raises(ValueError):
            LookupSettings(his_accession_query=bad)
    with pytest.raises(ValueError):
        LookupSettings(his_url=SecretStr("mysql://u:p@127.0.0.1:99999"))


def test_untrustworthy_his_rows_are_502(make_lookup: Any, his_db: HisDb) -> None:
    """An empty name, or an accession whose rows name two records, never becomes an answer."""
    root_sql(f"INSERT INTO `{his_db.patient_db}`.pasien VALUES ('RM000009', '  ')")
    root_sql(f"INSERT INTO `{his_db.accession_db}`.accessions VALUES ('XR.9', 'RM000009', NULL)")
    client = _his_client(make_lookup, his_db)
    assert client.get("/v1/accessions/XR.9").status_code == 502
    twofold = _his_client(
        make_lookup,
        his_db,
        his_accession_query=(
            "SELECT MEDRECID, RegID FROM `{accession_db}`.accessions "
            "WHERE AccessionNumber = %s OR AccessionNumber = 'CT.100'"
        ),
    )
    r = twofold.get("/v1/accessions/MR.001")
    assert r.status_code == 502 and "more than one patient" in r.json()["detail"]


def test_a_connection_killed_by_the_server_is_replaced_not_reported(
    make_lookup: Any, his_db: HisDb
) -> None:
    client = _his_client(make_lookup, his_db, his_pool_size=1)
    assert client.get("/v1/accessions/MR.001").status_code == 200
    for row in root_sql(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (his_db.user,)
    ):
        root_sql(f"KILL CONNECTION {int(row['ID'])}")
    assert client.get("/v1/accessions/MR.001").status_code == 200
