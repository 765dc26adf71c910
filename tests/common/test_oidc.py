"""JWT access tokens from a real OpenID Connect provider (tests/support/idp.py, over HTTP on
loopback), checked by the same guard every service's routes use, and roles per route.

Each refused token is a 401 problem+json and a `security-alert` event in the audit trail
without the token in it; a missing role is a 403 and an alert naming the user. An IdP that
is down costs nothing while its keys are held, and is a 503 with a reason when they are not.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from joserfc.jwk import OctKey, RSAKey
from pydantic import SecretStr

from dicomiso_common import audit, serve
from dicomiso_common.auth import bearer_guard
from dicomiso_common.problems import add_problem_handlers
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from support.idp import AUDIENCE, Idp, User, running_idp
from support.net import LOOPBACK, free_port

SERVICE_TOKEN = "service-s3cret"


@pytest.fixture
def idp() -> Iterator[Idp]:
    with running_idp("realm_access.roles") as idp:
        yield idp


def settings_for(idp: Idp, **more: Any) -> CommonSettings:
    values: dict[str, Any] = {
        "api_token": SecretStr(SERVICE_TOKEN),
        "oidc_issuer": idp.issuer,
        "oidc_audience": AUDIENCE,
        "oidc_roles_claim": "realm_access.roles",
        "oidc_clock_skew": 30,
        "oidc_jwks_min_refresh": 1,
        "max_body_bytes": 4096,
        **more,
    }
    return CommonSettings(**values)


def make_app(settings: CommonSettings, store: Store | None) -> FastAPI:
    guard = bearer_guard(settings, store, "test")
    app = FastAPI()
    app.state.auth = guard.auth
    add_problem_handlers(app)

    @app.get("/v1/whoami", dependencies=[Depends(guard)])
    def whoami(request: Request) -> dict[str, Any]:
        return {"user": audit.requester(request, settings)}

    @app.post("/v1/packages", dependencies=[Depends(guard.role("clerk"))])
    def package(body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "keys": sorted(body)}

    @app.get("/v1/audit", dependencies=[Depends(guard.role("auditor"))])
    def trail() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.fixture
def client(idp: Idp, store: Store) -> Iterator[TestClient]:
    with TestClient(make_app(settings_for(idp), store)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def alerts(store: Store) -> list[dict[str, Any]]:
    since = datetime.now(UTC) - timedelta(minutes=5)
    events, _ = audit.events_since(store, since)
    return [e for e in events if e["action"] == "security-alert"]


def refused(client: TestClient, token: str, reason: str) -> None:
    r = client.get("/v1/whoami", headers=bearer(token))
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert reason in r.json()["detail"]
    assert token not in r.text


def test_a_valid_token_names_its_user_in_the_audit_trail(client: TestClient, idp: Idp) -> None:
    """preferred_username is who asked; the route with the user's role answers."""
    clerk = idp.users["clerk"]
    r = client.get("/v1/whoami", headers=bearer(idp.mint(clerk)))
    assert r.status_code == 200 and r.json() == {"user": "clerk"}
    r = client.post("/v1/packages", json={"a": 1}, headers=bearer(idp.mint(clerk)))
    assert r.status_code == 200, r.text


def test_an_es256_key_signs_too(client: TestClient, idp: Idp) -> None:
    idp.rotate("EC")
    r = client.get("/v1/whoami", headers=bearer(idp.mint(idp.users["auditor"])))
    assert r.status_code == 200, r.text


def test_the_service_token_holds_every_role(client: TestClient) -> None:
    for path in ("/v1/whoami", "/v1/audit"):
        r = client.get(path, headers=bearer(SERVICE_TOKEN))
        assert r.status_code == 200, r.text
    assert client.get("/v1/whoami", headers=bearer(SERVICE_TOKEN)).json() == {"user": "api-token"}


def test_another_key_under_a_known_kid_is_refused_and_alerted(
    client: TestClient, idp: Idp, store: Store
) -> None:
    """A forger who copies the kid but signs with a key of their own."""
    forged = idp.mint(key=RSAKey.generate_key(2048))
    refused(client, forged, "signature is not valid")
    [alert] = alerts(store)
    assert alert["outcome"] == "refused" and alert["user"] == "unknown"
    assert "signature" in alert["reason"]
    assert forged not in json.dumps(alert) and forged.split(".")[1] not in json.dumps(alert)


def test_alg_none_is_refused(client: TestClient, idp: Idp) -> None:
    """An unsigned token: the header says `none` and the signature is empty."""
    claims = idp.mint().split(".")[1]
    none_head = _b64({"alg": "none", "kid": idp.signing})
    refused(client, f"{none_head}.{claims}.", "algorithm is not accepted")


def test_hs256_keyed_with_the_public_key_is_refused(client: TestClient, idp: Idp) -> None:
    """The classic confusion: the RSA public key (as published) used as an HMAC secret."""
    public = json.dumps(idp.jwks()["keys"][0]).encode()
    token = idp.mint(key=OctKey.import_key(public), header={"alg": "HS256"})
    refused(client, token, "algorithm is not accepted")


def test_expired_not_yet_valid_and_future_tokens_are_refused(client: TestClient, idp: Idp) -> None:
    now = int(time.time())
    refused(client, idp.mint(exp=now - 120), "expired")
    refused(client, idp.mint(nbf=now + 600), "not valid yet")
    refused(client, idp.mint(iat=now + 600), "issued in the future")
    refused(client, idp.mint(exp=None), "no expiry")


def test_the_clock_skew_is_allowed(client: TestClient, idp: Idp) -> None:
    """Expired 10 s ago with 30 s of skew: the IdP's clock and ours differ a little."""
    token = idp.mint(exp=int(time.time()) - 10, nbf=int(time.time()) + 10)
    assert client.get("/v1/whoami", headers=bearer(token)).status_code == 200


def test_wrong_audience_and_issuer_are_refused(client: TestClient, idp: Idp) -> None:
    refused(client, idp.mint(aud="another-app"), "another audience")
    refused(client, idp.mint(aud=["account", "another-app"]), "another audience")
    refused(client, idp.mint(iss="http://127.0.0.1:1/realms/evil"), "another identity provider")
    ok = idp.mint(aud=["account", AUDIENCE])
    assert client.get("/v1/whoami", headers=bearer(ok)).status_code == 200


def test_garbage_and_unknown_tokens_are_401_not_500(client: TestClient, idp: Idp) -> None:
    refused(client, "abc.def.ghi", "not a well-formed JWT")
    refused(client, "not-a-jwt-nor-the-service-token", "invalid bearer token")
    refused(client, idp.mint(header={"kid": "no-such-key"}), "does not list")
    refused(client, idp.mint(sub=None), "no subject")
    r = client.get("/v1/whoami")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_a_missing_role_is_403_and_alerted_with_the_user(
    client: TestClient, idp: Idp, store: Store
) -> None:
    clerk = idp.users["clerk"]
    r = client.get("/v1/audit", headers=bearer(idp.mint(clerk)))
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "auditor" in r.json()["detail"]
    nobody = User("visitor", "-", ["viewer", "admin"])  # roles not ours count for nothing
    assert client.get("/v1/audit", headers=bearer(idp.mint(nobody))).status_code == 403
    found = alerts(store)
    assert [a["user"] for a in found] == ["clerk", "visitor"]
    assert found[0]["reason"] == "missing role auditor" and found[0]["route"] == "/v1/audit"


def test_a_rotated_key_is_fetched_once(client: TestClient, idp: Idp) -> None:
    """The IdP rotates and drops the old key: the new kid makes us fetch the JWKS again."""
    assert client.get("/v1/whoami", headers=bearer(idp.mint())).status_code == 200
    assert idp.fetches == 1
    old = idp.mint()
    idp.rotate(drop=True)
    new = idp.mint()
    # within the minimum refresh interval (1 s here) the new kid waits; then it is fetched
    wait_for(lambda: client.get("/v1/whoami", headers=bearer(new)).status_code == 200)
    assert idp.fetches == 2
    for _ in range(3):
        assert client.get("/v1/whoami", headers=bearer(idp.mint())).status_code == 200
    assert idp.fetches == 2
    refused(client, old, "does not list")  # the IdP no longer publishes it: revoked


def test_forged_key_ids_do_not_flood_the_idp(idp: Idp, store: Store) -> None:
    """Unknown kids fetch the JWKS at most once per DICOMISO_OIDC_JWKS_MIN_REFRESH."""
    app = make_app(settings_for(idp, oidc_jwks_min_refresh=3600), store)
    with TestClient(app) as client:
        assert client.get("/v1/whoami", headers=bearer(idp.mint())).status_code == 200
        for n in range(20):
            refused(client, idp.mint(header={"kid": f"forged-{n}"}), "does not list")
    assert idp.fetches == 1


def test_an_idp_that_is_down_costs_nothing_while_keys_are_held(
    client: TestClient, idp: Idp
) -> None:
    assert client.get("/v1/whoami", headers=bearer(idp.mint())).status_code == 200
    token = idp.mint()
    idp.stop()
    assert client.get("/v1/whoami", headers=bearer(token)).status_code == 200
    # an unknown kid asks the IdP again once the minimum refresh interval (1 s) is past
    rotated = bearer(idp.mint(header={"kid": "rotated"}))
    wait_for(lambda: client.get("/v1/whoami", headers=rotated).status_code == 503)
    r = client.get("/v1/whoami", headers=rotated)
    assert "cannot be reached" in r.json()["detail"]
    assert client.get("/v1/whoami", headers=bearer(token)).status_code == 200


def test_an_idp_down_from_the_start_is_503_with_a_reason(idp: Idp, store: Store) -> None:
    token = idp.mint()
    idp.stop()
    with TestClient(make_app(settings_for(idp), store)) as client:
        r = client.get("/v1/whoami", headers=bearer(token))
        assert r.status_code == 503, r.text
        assert r.json()["detail"] == ("the identity provider cannot be reached: connection failed")
        assert client.get("/v1/whoami", headers=bearer(SERVICE_TOKEN)).status_code == 200


def test_without_oidc_settings_a_jwt_is_just_a_wrong_token(idp: Idp, store: Store) -> None:
    settings = CommonSettings(api_token=SecretStr(SERVICE_TOKEN))
    with TestClient(make_app(settings, store)) as client:
        refused(client, idp.mint(), "invalid bearer token")
        assert client.get("/v1/audit", headers=bearer(SERVICE_TOKEN)).status_code == 200
    assert idp.fetches == 0


def test_settings_refuse_an_issuer_without_audience_or_tls() -> None:
    with pytest.raises(ValueError, match="AUDIENCE is required"):
        CommonSettings(oidc_issuer="https://idp.example/realms/h")
    with pytest.raises(ValueError, match="must be an https"):
        CommonSettings(oidc_issuer="http://idp.example/realms/h", oidc_audience="x")


# -- before the body: a real socket to a served app ----------------------------------------------


@pytest.fixture
def served(idp: Idp, store: Store) -> Iterator[int]:
    """The app behind serve.server (BodyGate, the slow-client protocol) in a thread."""
    port = free_port()
    settings = settings_for(idp, http_host=LOOPBACK, http_port=port)
    server = serve.server(make_app(settings, store), settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(20)


def post_head(port: int, token: str, declared: int, body: bytes = b"") -> tuple[int, bytes]:
    """Send a POST's headers (and `body`), then read the whole answer."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/packages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {declared}\r\n\r\n".encode()
            + body
        )
        got = b""
        while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    head, _, rest = got.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), rest


def test_a_bad_jwt_is_refused_before_its_body(served: int, idp: Idp, store: Store) -> None:
    """400 MB announced, not one body byte sent: the answer comes anyway, 401."""
    status, body = post_head(served, idp.mint(aud="other"), 400_000_000)
    assert status == 401 and b"another audience" in body
    assert [a["reason"] for a in alerts(store)] == ["the token is meant for another audience"]


def test_a_valid_jwt_with_its_body_is_served(served: int, idp: Idp) -> None:
    payload = b'{"accession_numbers": ["A1"]}'
    status, body = post_head(served, idp.mint(idp.users["clerk"]), len(payload), payload)
    assert status == 200 and json.loads(body) == {"ok": True, "keys": ["accession_numbers"]}
    status, body = post_head(served, idp.mint(idp.users["auditor"]), len(payload), payload)
    assert status == 403 and b"clerk" in body


def wait_for(condition: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
