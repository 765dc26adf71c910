"""The staff page's sign-in (signin.py) against the test IdP over HTTP (tests/support/idp.py),
the packager served as in production (serve.server: BodyGate in front), the moto server as S3.

Authorization code with PKCE S256, the state and nonce checked, the code exchanged with the
client secret; the session cookie authenticates the page's calls only with the CSRF header;
forged, idle and too old cookies and a wrong state are refused and are security alerts.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from pydantic import SecretStr, ValidationError

from dicomiso_common import atna, audit, serve
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from dicomiso_packager import signin
from dicomiso_packager.app import create_app
from dicomiso_packager.settings import PackagerSettings
from support.atna import valid
from support.idp import AUDIENCE, CLIENT_ID, CLIENT_SECRET, Idp, running_idp
from support.net import LOOPBACK, free_port
from support.syslogd import Rsyslog

SESSION_SECRET = "a-session-signing-key-of-forty-characters!"
PAGE = {"X-Requested-With": "dicom-iso", "Accept": "application/json"}


@dataclass
class Served:
    base: str
    idp: Idp
    store: Store


@pytest.fixture
def store(s3_bucket: Any) -> Store:
    return Store.from_settings(
        CommonSettings(s3_endpoint_url=s3_bucket.endpoint_url, s3_bucket=s3_bucket.name)
    )


def packager_settings(idp: Idp, s3_bucket: Any, port: int, **more: Any) -> PackagerSettings:
    values: dict[str, Any] = {
        "api_token": SecretStr("service-s3cret"),
        "oidc_issuer": idp.issuer,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_min_refresh": 1,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": SecretStr(CLIENT_SECRET),
        "session_secret": SecretStr(SESSION_SECRET),
        "s3_endpoint_url": s3_bucket.endpoint_url,
        "s3_bucket": s3_bucket.name,
        "lookup_url": "http://127.0.0.1:9",
        "retriever_url": "http://127.0.0.1:9",
        "http_host": LOOPBACK,
        "http_port": port,
        **more,
    }
    return PackagerSettings(**values)


@contextmanager
def serving(s3_bucket: Any, store: Store, **more: Any) -> Iterator[Served]:
    """The packager on a free port behind serve.server, signing in at the test IdP."""
    with running_idp() as idp:
        port = free_port()
        base = f"http://{LOOPBACK}:{port}"
        idp.redirect_uris.add(f"{base}/auth/callback")
        idp.logout_uris.add(f"{base}/")
        settings = packager_settings(idp, s3_bucket, port, **more)
        server = serve.server(create_app(settings, store), settings)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "packager did not start"
            time.sleep(0.05)
        try:
            yield Served(base, idp, store)
        finally:
            server.should_exit = True
            thread.join(20)


@pytest.fixture
def served(s3_bucket: Any, store: Store) -> Iterator[Served]:
    with serving(s3_bucket, store) as served:
        yield served


def events(store: Store, action: str) -> list[dict[str, Any]]:
    found, _ = audit.events_since(store, datetime.now(UTC) - timedelta(minutes=10))
    return [e for e in found if e["action"] == action]


def start_login(http: httpx.Client) -> dict[str, str]:
    """GET /login; the IdP's authorization request it redirects to, as a dict."""
    answer = http.get("/auth/login")
    assert answer.status_code == 302, answer.text
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}


def sign_in(served: Served, http: httpx.Client, user: str) -> httpx.Response:
    """The whole flow as a browser does it: /login, the IdP's form, back to /callback."""
    q = start_login(http)
    form = {f"q_{k}": v for k, v in q.items()} | {"username": user, "password": f"{user}-pw"}
    at_idp = httpx.post(f"{served.idp.url}/authorize", data=form)
    assert at_idp.status_code == 302, at_idp.text
    return http.get(at_idp.headers["location"])


def session_cookie(served: Served, **data: Any) -> str:
    body = {"sub": "s-1", "name": "clerk", "roles": ["clerk"], "iat": int(time.time()), **data}
    return signin.serializer(SESSION_SECRET, signin.SESSION_SALT).dumps(body)


def test_login_redirects_with_pkce_state_and_nonce(served: Served) -> None:
    """The authorization request: code flow, S256 challenge, random state and nonce, our
    redirect URI; the verifier stays in a signed, HttpOnly cookie (never in the URL)."""
    with httpx.Client(base_url=served.base) as http:
        first, second = start_login(http), start_login(http)
        cookie = http.get("/auth/login").headers["set-cookie"]
    assert first["response_type"] == "code" and first["client_id"] == CLIENT_ID
    assert first["code_challenge_method"] == "S256" and len(first["code_challenge"]) == 43
    assert first["redirect_uri"] == f"{served.base}/auth/callback"
    assert len(first["state"]) >= 32 and len(first["nonce"]) >= 32
    assert first["state"] != second["state"] and first["nonce"] != second["nonce"]
    assert first["code_challenge"] != second["code_challenge"]
    assert "code_verifier" not in first
    assert cookie.startswith(f"{signin.FLOW_COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie and "Secure" not in cookie  # plain HTTP on loopback only


def test_a_clerk_signs_in_and_the_cookie_needs_the_page_header(served: Served) -> None:
    """Signed in, the cookie authenticates the page's calls (a POST through BodyGate too) with
    `X-Requested-With: dicom-iso` only; roles decide (a clerk cannot read the trail)."""
    with httpx.Client(base_url=served.base) as http:
        back = sign_in(served, http, "clerk")
        assert back.status_code == 303 and back.headers["location"] == "/"
        set_cookie = ";".join(back.headers.get_list("set-cookie"))
        assert f"{signin.SESSION_COOKIE}=" in set_cookie and "HttpOnly" in set_cookie
        me = http.get("/v1/session", headers=PAGE)
        assert me.status_code == 200, me.text
        assert me.json()["user"] == "clerk" and me.json()["roles"] == ["clerk"]
        assert signin.SESSION_COOKIE in me.headers.get("set-cookie", "")  # idle clock renewed
        # A POST with a body: BodyGate lets it in on the cookie, the route validates it.
        posted = http.post("/v1/previews", json={"accession_numbers": []}, headers=PAGE)
        assert posted.status_code == 422, posted.text
        # Without the header the cookie counts for nothing (what a cross-site form sends).
        bare = http.post("/v1/previews", json={"accession_numbers": ["A1"]})
        assert bare.status_code == 401, bare.text
        assert http.get("/v1/session").status_code == 401
        assert http.get("/v1/audit?since=1h", headers=PAGE).status_code == 403
    signed_in = events(served.store, "sign-in")
    assert [(e["user"], e["outcome"]) for e in signed_in] == [("clerk", "succeeded")]
    alerts = events(served.store, "security-alert")
    assert any(e["user"] == "clerk" and "auditor" in e["reason"] for e in alerts)


def test_an_auditor_session_cannot_make_discs(served: Served) -> None:
    with httpx.Client(base_url=served.base) as http:
        assert sign_in(served, http, "auditor").status_code == 303
        assert http.get("/v1/audit?since=1h", headers=PAGE).status_code == 200
        posted = http.post("/v1/previews", json={"accession_numbers": ["A1"]}, headers=PAGE)
        assert posted.status_code == 403, posted.text


def test_a_wrong_state_is_refused_and_alerted(served: Served) -> None:
    """A callback whose state is not the one we sent (login CSRF) is refused, and so is one
    without our sign-in cookie; both are security alerts; no session is set."""
    with httpx.Client(base_url=served.base) as http:
        q = start_login(http)
        form = {f"q_{k}": v for k, v in q.items()} | {"username": "clerk", "password": "clerk-pw"}
        at_idp = httpx.post(f"{served.idp.url}/authorize", data=form)
        code = parse_qs(urlsplit(at_idp.headers["location"]).query)["code"][0]
        wrong = http.get("/auth/callback", params={"code": code, "state": "not-the-state"})
        assert wrong.status_code == 400 and "state does not match" in wrong.text
        assert signin.SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    with httpx.Client(base_url=served.base) as other:  # no sign-in cookie at all
        assert (
            other.get("/auth/callback", params={"code": code, "state": q["state"]}).status_code
            == 400
        )
    reasons = [e["reason"] for e in events(served.store, "security-alert")]
    assert any("state does not match" in r for r in reasons)
    assert any("no sign-in cookie" in r for r in reasons)
    assert events(served.store, "sign-in") == []


def test_a_bad_password_never_reaches_a_session(served: Served) -> None:
    with httpx.Client(base_url=served.base) as http:
        q = start_login(http)
        form = {f"q_{k}": v for k, v in q.items()} | {"username": "clerk", "password": "guess"}
        at_idp = httpx.post(f"{served.idp.url}/authorize", data=form)
        assert at_idp.status_code == 200 and "Invalid user name" in at_idp.text
        # A code the IdP never issued: the exchange fails, a failed sign-in is audited.
        back = http.get("/auth/callback", params={"code": "made-up", "state": q["state"]})
        assert back.status_code == 401 and "did not issue tokens" in back.text
    assert [e["outcome"] for e in events(served.store, "sign-in")] == ["failed"]


def test_an_id_token_with_another_nonce_is_refused(served: Served) -> None:
    """A code whose ID token carries a nonce other than ours (a replayed or injected code) is
    a failed sign-in, not a session."""
    with httpx.Client(base_url=served.base) as http:
        q = start_login(http) | {"nonce": "someone-elses-nonce"}
        form = {f"q_{k}": v for k, v in q.items()} | {"username": "clerk", "password": "clerk-pw"}
        at_idp = httpx.post(f"{served.idp.url}/authorize", data=form)
        back = http.get(at_idp.headers["location"])
        assert back.status_code == 401 and "nonce does not match" in back.text
        assert signin.SESSION_COOKIE not in back.headers.get("set-cookie", "")
    assert [e["outcome"] for e in events(served.store, "sign-in")] == ["failed"]


@pytest.mark.parametrize(
    ("cookie", "reason"),
    [
        ("forged", "not valid"),
        ("other-key", "not valid"),
        ("sha1", "not valid"),
        ("flow-cookie", "not valid"),
        ("idle", "expired (idle)"),
        ("too-old", "has expired"),
    ],
)
def test_bad_session_cookies_are_refused_and_alerted(
    served: Served, cookie: str, reason: str
) -> None:
    """A forged cookie, one signed with another key, another digest (SHA-1, itsdangerous's
    default) or for another purpose (the sign-in flow's), one idle past DICOMISO_SESSION_IDLE
    and one signed in longer ago than DICOMISO_SESSION_MAX: 401 with a reason, and an alert."""

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 901  # the default idle limit is 900 s

    values = {
        "forged": session_cookie(served)[:-4] + "AAAA",
        "other-key": signin.serializer("x" * 40, signin.SESSION_SALT).dumps(
            {"sub": "s", "name": "clerk", "roles": ["auditor"], "iat": int(time.time())}
        ),
        "sha1": URLSafeTimedSerializer(SESSION_SECRET, salt=signin.SESSION_SALT).dumps(
            {"sub": "s", "name": "clerk", "roles": ["auditor"], "iat": int(time.time())}
        ),
        "flow-cookie": signin.serializer(SESSION_SECRET, signin.FLOW_SALT).dumps(
            {"sub": "s", "name": "clerk", "roles": ["auditor"], "iat": int(time.time())}
        ),
        "idle": signin.serializer(SESSION_SECRET, signin.SESSION_SALT, Earlier).dumps(
            {"sub": "s", "name": "clerk", "roles": ["clerk"], "iat": int(time.time())}
        ),
        "too-old": session_cookie(served, iat=int(time.time()) - 8 * 3600 - 60),
    }
    headers = {**PAGE, "Cookie": f"{signin.SESSION_COOKIE}={values[cookie]}"}
    answer = httpx.get(f"{served.base}/v1/session", headers=headers)
    assert answer.status_code == 401 and reason in answer.json()["detail"]
    posted = httpx.post(
        f"{served.base}/v1/previews", json={"accession_numbers": []}, headers=headers
    )
    assert posted.status_code == 401  # BodyGate refuses it before the body
    cleared = answer.headers["set-cookie"]  # the browser stops sending it
    assert cleared.startswith(f"{signin.SESSION_COOKIE}=;") and "Max-Age=0" in cleared
    alerts = events(served.store, "security-alert")
    assert any(reason in e["reason"] and e.get("credential") == "session cookie" for e in alerts)
    assert values[cookie] not in str(alerts)
    # The same contents, signed now with our key, are let in (the test can fail).
    fresh = {**PAGE, "Cookie": f"{signin.SESSION_COOKIE}={session_cookie(served)}"}
    assert httpx.get(f"{served.base}/v1/session", headers=fresh).status_code == 200


def test_logout_clears_the_cookie_and_ends_the_idp_session(served: Served) -> None:
    with httpx.Client(base_url=served.base) as http:
        assert sign_in(served, http, "clerk").status_code == 303
        out = http.get("/auth/logout")
        assert out.status_code == 303
        target = urlsplit(out.headers["location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == f"{served.idp.url}/logout"
        assert parse_qs(target.query)["post_logout_redirect_uri"] == [f"{served.base}/"]
        assert f"{signin.SESSION_COOKIE}=;" in out.headers["set-cookie"]
        assert "Max-Age=0" in out.headers["set-cookie"]
        assert http.get("/v1/session", headers=PAGE).status_code == 401
        assert http.get(out.headers["location"]).status_code == 302  # the IdP sends us back
    assert served.idp.logouts == 1
    assert [e["user"] for e in events(served.store, "sign-out")] == ["clerk"]


def test_an_idp_that_is_down_is_a_page_not_a_500(served: Served) -> None:
    served.idp.stop()
    answer = httpx.get(f"{served.base}/auth/login", headers={"Accept": "text/html"})
    assert answer.status_code == 503
    assert "identity provider" in answer.text and "cannot be reached" in answer.text
    assert answer.headers["content-type"].startswith("text/html")
    in_id = httpx.get(f"{served.base}/auth/login", headers={"Accept-Language": "id"})
    assert in_id.status_code == 503 and "tidak dapat dihubungi" in in_id.text
    assert in_id.headers["content-language"] == "id"


def test_an_idp_that_goes_down_during_sign_in_is_a_page_too(served: Served) -> None:
    """The IdP answered /authorize and then went down: the code exchange cannot be done, the
    callback says so (503), and no session is set."""
    with httpx.Client(base_url=served.base) as http:
        q = start_login(http)
        form = {f"q_{k}": v for k, v in q.items()} | {"username": "clerk", "password": "clerk-pw"}
        at_idp = httpx.post(f"{served.idp.url}/authorize", data=form)
        served.idp.stop()
        back = http.get(at_idp.headers["location"])
    assert back.status_code == 503 and "cannot be reached" in back.text
    assert signin.SESSION_COOKIE not in back.headers.get("set-cookie", "")


def test_the_redirect_uri_is_never_taken_from_a_remote_host_header(served: Served) -> None:
    """Without DICOMISO_PUBLIC_URL only a loopback request gets a redirect URI: a Host header
    naming another host (a proxy in front) is refused with a page, not trusted."""
    answer = httpx.get(f"{served.base}/auth/login", headers={"Host": "staff.example"})
    assert answer.status_code == 503 and "DICOMISO_PUBLIC_URL" in answer.text


def test_cookies_are_secure_except_on_plain_http_loopback() -> None:
    assert signin.plain_loopback("http", "127.0.0.1") and signin.plain_loopback("http", "[::1]")
    assert not signin.plain_loopback("https", "127.0.0.1")
    assert not signin.plain_loopback("http", "staff.example")
    header = signin.cookie_header(signin.SESSION_COOKIE, "v", secure=True)
    assert header == "dicomiso-session=v; Path=/; HttpOnly; SameSite=Lax; Secure"


def test_sign_in_settings_are_checked(s3_bucket: Any) -> None:
    """A client id needs the issuer and a session secret of 32+ characters."""
    with running_idp() as idp:
        with pytest.raises(ValidationError, match="DICOMISO_SESSION_SECRET"):
            packager_settings(idp, s3_bucket, 1, session_secret=SecretStr("short"))
        with pytest.raises(ValidationError, match="DICOMISO_SESSION_IDLE"):
            packager_settings(idp, s3_bucket, 1, session_idle=7200, session_max=3600)
        with pytest.raises(ValidationError, match="DICOMISO_PUBLIC_URL"):
            packager_settings(idp, s3_bucket, 1, public_url="staff.example")
    with pytest.raises(ValidationError, match="DICOMISO_OIDC_ISSUER"):
        PackagerSettings(oidc_client_id=CLIENT_ID, session_secret=SecretStr(SESSION_SECRET))


def test_the_client_secret_may_be_a_mounted_file(s3_bucket: Any, tmp_path: Any) -> None:
    """DICOMISO_OIDC_CLIENT_SECRET_FILE is read at each sign-in (a rotated secret applies)."""
    secret = tmp_path / "client-secret"
    secret.write_text("first\n")
    with running_idp() as idp:
        settings = packager_settings(
            idp, s3_bucket, 1, oidc_client_secret=None, oidc_client_secret_file=secret
        )
    assert settings.client_secret() == "first"
    secret.write_text("rotated")
    assert settings.client_secret() == "rotated"


def test_without_a_client_id_the_page_stays_in_token_mode(s3_bucket: Any) -> None:
    """No DICOMISO_OIDC_CLIENT_ID: no sign-in routes, the page asks for the token as before;
    with it, the page is told to offer "Sign in"."""
    plain = PackagerSettings(s3_endpoint_url="http://127.0.0.1:9", api_token=SecretStr("t"))
    client = TestClient(create_app(plain))  # no lifespan: nothing reaches the bucket
    assert 'data-signin="token"' in client.get("/").text
    assert client.get("/auth/login", follow_redirects=False).status_code == 404
    with running_idp() as idp:
        oidc = packager_settings(idp, s3_bucket, 1, s3_endpoint_url="http://127.0.0.1:9")
        client = TestClient(create_app(oidc), base_url="http://127.0.0.1")
        assert 'data-signin="oidc"' in client.get("/").text
        assert client.get("/auth/login", follow_redirects=False).status_code == 302


def test_sign_in_events_reach_the_audit_record_repository(
    s3_bucket: Any, store: Store, syslog_receiver: Rsyslog
) -> None:
    """A clerk's sign-in and sign-out and a refused cookie, as DICOM audit messages, go from
    the packager's outbox through its shipper to a real rsyslogd over TLS: each once, in the
    order of the events, valid against the schema, Login / Logout / Security Alert."""
    syslog = {
        "audit_syslog_url": syslog_receiver.url,
        "audit_syslog_ca_file": syslog_receiver.pki.ca,
        "audit_syslog_interval": 0.2,
        "audit_syslog_timeout": 3.0,
    }
    with serving(s3_bucket, store, **syslog) as served:
        with httpx.Client(base_url=served.base) as http:
            assert sign_in(served, http, "clerk").status_code == 303
            assert http.get("/auth/logout").status_code == 303
        forged = {**PAGE, "Cookie": f"{signin.SESSION_COOKIE}={session_cookie(served)[:-4]}AAAA"}
        assert httpx.get(f"{served.base}/v1/session", headers=forged).status_code == 401
        deadline = time.monotonic() + 30
        while list(store.list(audit.OUTBOX)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(store.list(audit.OUTBOX)) == [], "the shipper did not empty the outbox"
    found, _ = audit.events_since(store, datetime.now(UTC) - timedelta(minutes=10))
    expected = [e for e in found if atna.render(e) is not None]
    assert [e["action"] for e in expected] == ["sign-in", "sign-out", "security-alert"]
    syslog_receiver.wait_for(len(expected), timeout=30)
    time.sleep(0.5)  # a duplicate would come now
    got = syslog_receiver.messages()
    ids = [re.search(r'eventId="(\w+)"', m["sd"]).group(1) for m in got]  # type: ignore[union-attr]
    assert ids == [e["id"] for e in expected]
    documents = []
    for message in got:
        assert message["msgid"] == "IHE+RFC-3881" and message["msg"].startswith("\ufeff")
        documents.append(valid(message["msg"].removeprefix("\ufeff").encode()))
    codes = [[c.get("csd-code") for c in doc.iter("EventID", "EventTypeCode")] for doc in documents]
    assert codes == [["110114", "110122"], ["110114", "110123"], ["110113", "110132"]]
    users = [[p.get("UserID") for p in doc.iter("ActiveParticipant")] for doc in documents]
    assert all("clerk" in found for found in users[:2]), users
