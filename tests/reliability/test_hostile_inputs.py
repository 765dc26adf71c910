"""The domain's bad inputs, table-driven, against the four services wired to real fixtures.

Every row is refused (422 problem+json, or 404 where the router cannot match the path) with a
reason that does not repeat the value, and nothing reaches the HIS or the PACS, and no job
record is written (issue 10, "Hostile input").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from reliability.hostile_support import Wired

# Accession numbers the validator must refuse: (id, value).
BAD_ACCESSIONS: list[tuple[str, Any]] = [
    ("star", "*"),
    ("star-suffix", "MR.0*"),
    ("question", "MR.00?"),
    ("percent", "MR%01"),
    ("underscore", "MR_001"),
    ("dotdot", ".."),
    ("dotdot-path", "../MR.001"),
    ("slash", "MR/001"),
    ("backslash", "MR.001\\CT.002"),
    ("17-chars", "A1234567890123456"),
    ("nul", "MR.0\x0001"),
    ("lf", "MR.001\nCT"),
    ("cr", "MR.001\r"),
    ("esc", "MR\x1b[2J"),
    ("del", "MR\x7f001"),
    ("empty", ""),
    ("space", "MR 001"),
    ("leading-space", " MR.001"),
    ("trailing-space", "MR.001 "),
    ("tab", "MR\t001"),
    ("fullwidth", "\uff2d\uff32.001"),
    ("cyrillic-M", "\u041cR.001"),
    ("zero-width", "MR.0\u200b01"),
    ("rtl-override", "MR\u202e001"),
    ("quote", "MR'--"),
    ("sql", "x' OR '1'='1"),
    ("shell", "$(id)"),
    ("backtick", "`id`"),
    ("semicolon", "MR;001"),
    ("leading-dash", "-rf"),
    ("leading-dot", ".MR001"),
    ("caret", "MR^001"),
    ("megabyte", "A" * 1_000_000),
    ("int", 12345),
    ("float", 1.5),
    ("bool", True),
    ("null", None),
    ("list", ["MR.001"]),
    ("object", {"$ne": ""}),
]
# Study Instance UIDs the validator must refuse.
BAD_UIDS: list[tuple[str, Any]] = [
    ("dotdot", "1.2..3"),
    ("slash", "1.2/3"),
    ("traversal", "../../1.2"),
    ("65-chars", "1." + "2" * 63),
    ("leading-dot", ".1.2"),
    ("trailing-dot", "1.2."),
    ("letters", "1.2.abc"),
    ("empty", ""),
    ("nul", "1.2\x003"),
    ("lf", "1.2\n3"),
    ("star", "1.2.*"),
    ("space", "1.2 3"),
    ("arabic-digits", "1.\u0662.3"),
    ("int", 123),
    ("null", None),
]
LONG_LIST = [f"A{i:04d}" for i in range(51)]


@dataclass(frozen=True)
class Row:
    id: str
    service: str
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    expected: int = 422
    echo: Any = None  # a value the reason must not repeat


def _echo(value: Any) -> Any:
    return value if isinstance(value, str) and len(value) >= 4 else None


def _rows() -> list[Row]:
    rows: list[Row] = []
    for name, value in BAD_ACCESSIONS:
        e = _echo(value)
        one = {"accession_numbers": [value]}
        rows += [
            Row(f"lookup-resolve-{name}", "lookup", "POST", "/v1/accessions:resolve", one, echo=e),
            Row(f"retriever-acc-{name}", "retriever", "POST", "/v1/retrievals", one, echo=e),
            Row(f"packager-acc-{name}", "packager", "POST", "/v1/packages", one, echo=e),
            Row(f"previews-{name}", "packager", "POST", "/v1/previews", one, echo=e),
            Row(
                f"forwarder-acc-{name}",
                "forwarder",
                "POST",
                "/v1/forwards",
                {"accession_numbers": [value], "destination": "archive"},
                echo=e,
            ),
            # A valid first number does not let a bad second one through.
            Row(
                f"packager-second-{name}",
                "packager",
                "POST",
                "/v1/packages",
                {"accession_numbers": ["MR.001", value]},
                echo=e,
            ),
        ]
        if isinstance(value, str) and len(value) < 10_000:
            # Path form: "/" cannot reach the route (404); "" is the collection (404/405).
            expected = 404 if ("/" in value or value in ("", "..")) else 422
            rows.append(
                Row(
                    f"lookup-get-{name}",
                    "lookup",
                    "GET",
                    f"/v1/accessions/{quote(value, safe='')}",
                    expected=expected,
                    echo=e,
                )
            )
            # The legacy URL trims around its commas (test below); only values that stay bad.
            if "," not in value and value.strip() and value.strip() == value:
                rows.append(
                    Row(
                        f"mkiso-{name}",
                        "packager",
                        "GET",
                        f"/mkiso?accession_number={quote(value, safe='')}",
                        echo=e,
                    )
                )
    for name, value in BAD_UIDS:
        e = _echo(value)
        rows += [
            Row(
                f"retriever-uid-{name}",
                "retriever",
                "POST",
                "/v1/retrievals",
                {"study_uids": [value]},
                echo=e,
            ),
            Row(
                f"forwarder-uid-{name}",
                "forwarder",
                "POST",
                "/v1/forwards",
                {"study_uids": [value], "destination": "archive"},
                echo=e,
            ),
        ]
    good = {"accession_numbers": ["MR.001"]}
    rows += [
        # Sizes and shapes of the lists.
        Row(
            "lookup-51",
            "lookup",
            "POST",
            "/v1/accessions:resolve",
            {"accession_numbers": LONG_LIST},
        ),
        Row("lookup-none", "lookup", "POST", "/v1/accessions:resolve", {"accession_numbers": []}),
        Row(
            "lookup-not-a-list",
            "lookup",
            "POST",
            "/v1/accessions:resolve",
            {"accession_numbers": "MR.001"},
        ),
        Row(
            "retriever-51", "retriever", "POST", "/v1/retrievals", {"accession_numbers": LONG_LIST}
        ),
        Row(
            "retriever-51-uids",
            "retriever",
            "POST",
            "/v1/retrievals",
            {"study_uids": [f"1.2.{i}" for i in range(51)]},
        ),
        Row("retriever-neither", "retriever", "POST", "/v1/retrievals", {}),
        Row(
            "retriever-both",
            "retriever",
            "POST",
            "/v1/retrievals",
            {"accession_numbers": ["MR.001"], "study_uids": ["1.2.3"]},
        ),
        Row("retriever-method", "retriever", "POST", "/v1/retrievals", {**good, "method": "MOVE"}),
        Row(
            "retriever-extra-host",
            "retriever",
            "POST",
            "/v1/retrievals",
            {**good, "pacs_host": "127.0.0.1", "pacs_port": 1},
        ),
        Row("packager-51", "packager", "POST", "/v1/packages", {"accession_numbers": LONG_LIST}),
        Row("packager-none", "packager", "POST", "/v1/packages", {"accession_numbers": []}),
        Row("packager-format", "packager", "POST", "/v1/packages", {**good, "format": "rar"}),
        Row("packager-profile", "packager", "POST", "/v1/packages", {**good, "profile": "../x"}),
        Row(
            "packager-expiry-long",
            "packager",
            "POST",
            "/v1/packages",
            {**good, "expires_in": 604_801},
        ),
        Row("packager-expiry-short", "packager", "POST", "/v1/packages", {**good, "expires_in": 1}),
        Row(
            "packager-email-header",
            "packager",
            "POST",
            "/v1/packages",
            {**good, "email": "a@example.org\r\nBcc: all@example.org"},
            echo="all@example.org",
        ),
        Row(
            "packager-email-long",
            "packager",
            "POST",
            "/v1/packages",
            {**good, "email": "a" * 250 + "@x.org"},
        ),
        Row(
            "packager-email-type", "packager", "POST", "/v1/packages", {**good, "email": ["a@b.c"]}
        ),
        Row("packager-key", "packager", "POST", "/v1/packages", {**good, "key": "packages/x"}),
        Row("mkiso-empty", "packager", "GET", "/mkiso?accession_number=,,"),
        Row("mkiso-one-bad", "packager", "GET", "/mkiso?accession_number=MR.001,MR*"),
        Row("mkiso-too-long", "packager", "GET", "/mkiso?accession_number=" + "A" * 900),
        Row("previews-51", "packager", "POST", "/v1/previews", {"accession_numbers": LONG_LIST}),
        # The forwarder names configured peers only, never a host.
        Row(
            "forwarder-dest-object",
            "forwarder",
            "POST",
            "/v1/forwards",
            {**good, "destination": {"aet": "EVIL", "host": "127.0.0.1", "port": 104}},
        ),
        Row(
            "forwarder-dest-hostport",
            "forwarder",
            "POST",
            "/v1/forwards",
            {**good, "destination": "127.0.0.1:104"},
            echo="127.0.0.1:104",
        ),
        Row(
            "forwarder-dest-case",
            "forwarder",
            "POST",
            "/v1/forwards",
            {**good, "destination": "ARCHIVE"},
        ),
        Row(
            "forwarder-dest-list",
            "forwarder",
            "POST",
            "/v1/forwards",
            {**good, "destination": ["archive"]},
        ),
        Row("forwarder-dest-missing", "forwarder", "POST", "/v1/forwards", good),
        Row(
            "forwarder-extra-host",
            "forwarder",
            "POST",
            "/v1/forwards",
            {**good, "destination": "archive", "host": "127.0.0.1", "port": 104},
        ),
        Row(
            "forwarder-51",
            "forwarder",
            "POST",
            "/v1/forwards",
            {"accession_numbers": LONG_LIST, "destination": "archive"},
        ),
        Row(
            "web-forward-dest-hostport",
            "packager",
            "POST",
            "/v1/forwards",
            {"accession_numbers": ["MR.00*"], "destination": "127.0.0.1:104"},
        ),
    ]
    # Bodies that are not the JSON object asked for, or are very large.
    huge = json.dumps({"accession_numbers": ["MR.001"] * 200_000}).encode()  # ~2 MB
    for service, path in (
        ("lookup", "/v1/accessions:resolve"),
        ("retriever", "/v1/retrievals"),
        ("packager", "/v1/packages"),
        ("packager", "/v1/previews"),
        ("forwarder", "/v1/forwards"),
    ):
        rows += [
            Row(f"{service}{path}-not-json", service, "POST", path, raw=b"accession_numbers=*"),
            Row(
                f"{service}{path}-truncated",
                service,
                "POST",
                path,
                raw=b'{"accession_numbers": ["MR.0',
            ),
            Row(f"{service}{path}-array", service, "POST", path, raw=b'["MR.001"]'),
            Row(f"{service}{path}-null", service, "POST", path, raw=b"null"),
            Row(f"{service}{path}-nan", service, "POST", path, raw=b'{"accession_numbers": [NaN]}'),
            Row(
                f"{service}{path}-deep",
                service,
                "POST",
                path,
                raw=b'{"accession_numbers": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                expected=400,
            ),  # FastAPI: "There was an error parsing the body" (4xx, not 5xx)
            Row(f"{service}{path}-huge", service, "POST", path, raw=huge),
        ]
    return rows


ROWS = _rows()


def _send(wired: Wired, row: Row) -> Any:
    with wired.client(row.service) as client:
        if row.raw is not None:
            return client.request(
                row.method, row.path, content=row.raw, headers={"content-type": "application/json"}
            )
        if row.method == "GET":
            return client.get(row.path)
        return client.request(row.method, row.path, json=row.body)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_refused_before_anything_starts(wired: Wired, row: Row) -> None:
    """422 (or 404 for an unroutable path) as problem+json, a reason that does not repeat the
    value, no HIS query, no C-FIND/C-MOVE, no job record, no audit event."""
    jobs, audits, finds = wired.job_keys(), wired.audit_keys(), len(wired.his_finds)
    wired.orthanc.mark()

    response = _send(wired, row)

    expected = row.expected
    sent = row.raw if row.raw is not None else json.dumps(row.body).encode()
    if len(sent) > 64 * 1024:
        expected = 413  # over DICOMISO_MAX_BODY_BYTES: refused before it is read (limits.py)
    assert response.status_code == expected, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == expected and problem["detail"]
    if row.echo is not None:
        assert row.echo not in response.text
        assert json.dumps(row.echo)[1:-1] not in response.text
    assert len(wired.his_finds) == finds, "the HIS was queried"
    assert wired.job_keys() == jobs, "a job record was written"
    assert wired.audit_keys() == audits, "an audit event was written for a refused request"
    assert wired.orthanc.find_requests(settle=0.05) == 0
    assert wired.orthanc.move_requests(settle=0.0) == 0


def test_legacy_url_refuses_control_characters_around_a_number(wired: Wired) -> None:
    """`?accession_number=NOSUCH1%0D` must be a 422 like the JSON API, not trimmed and looked up.

    (An unknown number, so that the current behaviour stops at lookup's 404: no job starts.)
    """
    finds = len(wired.his_finds)
    with wired.client("packager") as client:
        response = client.get("/mkiso?accession_number=NOSUCH1%0D")
    assert response.status_code == 422, response.text
    assert len(wired.his_finds) == finds


def test_the_catalogue_is_large_enough() -> None:
    """The numbers docs/reliability-input.md quotes."""
    assert len(ROWS) >= 300
