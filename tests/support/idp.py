"""A small OpenID Connect provider over HTTP on loopback, for the tests.

Why not a package: `oidc-provider-mock` (the version our pins resolve, 0.3.4) issues opaque
access tokens, where the APIs check JWT access tokens offline as Keycloak and Entra ID issue
them, and it cannot rotate its keys. This one signs with joserfc, as an IdP would:

- `/.well-known/openid-configuration`, `/jwks` (every published key; `fetches` counts reads),
- `/authorize`: a login form (user name, password) for a registered client and redirect URI,
  `response_type=code` and a `code_challenge` with `S256` only,
- `/token`: the code once, the client's secret (HTTP Basic or form), the PKCE verifier,
  answering an access token (`aud` = the audience, roles at `roles_claim`) and an ID token,
- `/logout`: the end-session endpoint, back to a registered `post_logout_redirect_uri`.

`mint(...)` signs an access token directly, with any claim or header overridden, for the
API tests. `rotate()` makes a new signing key (published with the old one unless `drop`).
`stop()` closes the port (the IdP is down); nothing else is started.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from support.net import LOOPBACK

AUDIENCE = "dicom-iso"
CLIENT_ID = "dicom-iso-staff"
CLIENT_SECRET = "test-client-secret"


@dataclass
class User:
    username: str
    password: str
    roles: list[str]
    email: str | None = None
    sub: str = field(default_factory=lambda: str(uuid.uuid4()))


def nested(path: str, value: Any) -> dict[str, Any]:
    """{"realm_access": {"roles": value}} for "realm_access.roles"."""
    out: Any = value
    for part in reversed(path.split(".")):
        out = {part: out}
    assert isinstance(out, dict)
    return out


class Idp:
    """The provider's state; `handler()` serves it."""

    def __init__(self, roles_claim: str = "roles", token_ttl: int = 300) -> None:
        self.roles_claim = roles_claim
        self.token_ttl = token_ttl
        self.keys: dict[str, RSAKey | ECKey] = {}
        self.signing = self.rotate()
        self.users: dict[str, User] = {}
        self.redirect_uris: set[str] = set()
        self.logout_uris: set[str] = set()
        self.codes: dict[str, dict[str, Any]] = {}
        self.fetches = 0
        self.logouts = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    @property
    def issuer(self) -> str:
        return self.url

    def rotate(self, kind: str = "RSA", drop: bool = False) -> str:
        """A new signing key, published; with `drop` the old ones are no longer published."""
        kid = uuid.uuid4().hex[:12]
        key: RSAKey | ECKey = (
            RSAKey.generate_key(2048, parameters={"kid": kid})
            if kind == "RSA"
            else ECKey.generate_key("P-256", parameters={"kid": kid})
        )
        if drop:
            self.keys.clear()
        self.keys[kid] = key
        self.signing = kid
        return kid

    def add_user(self, username: str, password: str, roles: list[str]) -> User:
        user = User(username, password, roles, email=f"{username}@hospital.test")
        self.users[username] = user
        return user

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            data = key.as_dict(private=False)
            data.update({"kid": kid, "use": "sig", "alg": _alg(key)})
            keys.append(data)
        return {"keys": keys}

    def claims_for(self, user: User, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": user.sub,
            "azp": CLIENT_ID,
            "preferred_username": user.username,
            "email": user.email,
            "iat": now,
            "nbf": now,
            "exp": now + self.token_ttl,
            "jti": uuid.uuid4().hex,
            **nested(self.roles_claim, user.roles),
            **extra,
        }

    def mint(
        self,
        user: User | None = None,
        *,
        kid: str | None = None,
        key: RSAKey | ECKey | OctKey | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An access token for `user` (a clerk if None), claims and header overridable."""
        user = user or User("tester", "-", ["clerk"])
        kid = kid or self.signing
        key = key or self.keys[kid]
        alg = "HS256" if isinstance(key, OctKey) else _alg(key)
        head = {"alg": alg, "kid": kid, "typ": "at+jwt", **(header or {})}
        body = {k: v for k, v in self.claims_for(user, **claims).items() if v is not None}
        return jwt.encode(head, body, key)

    def start(self) -> Idp:
        server = ThreadingHTTPServer((LOOPBACK, 0), handler(self))
        server.daemon_threads = True
        self.server = server
        self.url = f"http://{LOOPBACK}:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, name="test-idp", daemon=True).start()
        return self

    def stop(self) -> None:
        """The IdP is down: the port is closed (connections refused)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "end_session_endpoint": f"{self.url}/logout",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "subject_types_supported": ["public"],
        }

    # -- the authorization code flow ------------------------------------------------------------

    def authorize_problem(self, q: dict[str, str]) -> str | None:
        if q.get("client_id") != CLIENT_ID:
            return "unknown client"
        if q.get("redirect_uri") not in self.redirect_uris:
            return "redirect_uri not registered"
        if q.get("response_type") != "code":
            return "response_type must be code"
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return "PKCE with S256 is required"
        return None

    def issue_code(self, q: dict[str, str], user: User) -> str:
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.codes[code] = {"q": q, "user": user, "at": time.time()}
        return code

    def exchange(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        client = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if client != (CLIENT_ID, CLIENT_SECRET):
            raise _Refused(401, "invalid_client")
        if form.get("grant_type") != "authorization_code":
            raise _Refused(400, "unsupported_grant_type")
        with self.lock:
            given = self.codes.pop(form.get("code", ""), None)
        if given is None or time.time() - given["at"] > 60:
            raise _Refused(400, "invalid_grant")
        q, user = given["q"], given["user"]
        if form.get("redirect_uri") != q["redirect_uri"]:
            raise _Refused(400, "invalid_grant")
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != q["code_challenge"]:
            raise _Refused(400, "invalid_grant")
        key = self.keys[self.signing]
        head = {"alg": _alg(key), "kid": self.signing}
        id_claims = {**self.claims_for(user), "aud": CLIENT_ID, "nonce": q.get("nonce")}
        return {
            "access_token": self.mint(user),
            "id_token": jwt.encode(head, {k: v for k, v in id_claims.items() if v}, key),
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
            "scope": q.get("scope", "openid"),
        }


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def _alg(key: RSAKey | ECKey) -> str:
    return "RS256" if isinstance(key, RSAKey) else "ES256"


LOGIN = """<!doctype html><html><head><title>Test IdP sign-in</title></head><body>
<h1>Hospital sign-in (test IdP)</h1><p>{error}</p>
<form method="post" action="/authorize">{hidden}
<label>User name <input id="username" name="username" autocomplete="username"></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="kc-login" type="submit">Sign in</button></form></body></html>"""


def handler(idp: Idp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
            pass

        def do_GET(self) -> None:  # noqa: N802 (stdlib's name)
            url = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/.well-known/openid-configuration":
                self.json(200, idp.discovery())
            elif url.path == "/jwks":
                idp.fetches += 1
                self.json(200, idp.jwks())
            elif url.path == "/authorize":
                problem = idp.authorize_problem(q)
                if problem:
                    self.send_text(400, problem)
                else:
                    self.login_form(q, "")
            elif url.path == "/logout":
                idp.logouts += 1
                back = q.get("post_logout_redirect_uri")
                if back in idp.logout_uris:
                    self.redirect(
                        back + ("?" + urlencode({"state": q["state"]}) if "state" in q else "")
                    )
                else:
                    self.send_text(200, "signed out")
            else:
                self.send_text(404, "not found")

        def do_POST(self) -> None:  # noqa: N802 (stdlib's name)
            length = int(self.headers.get("content-length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self.path == "/authorize":
                q = {k[2:]: v for k, v in form.items() if k.startswith("q_")}
                problem = idp.authorize_problem(q)
                user = idp.users.get(form.get("username", ""))
                if problem:
                    self.send_text(400, problem)
                elif user is None or not secrets.compare_digest(
                    user.password, form.get("password", "")
                ):
                    self.login_form(q, "Invalid user name or password.")
                else:
                    code = idp.issue_code(q, user)
                    back = {"code": code, **({"state": q["state"]} if "state" in q else {})}
                    self.redirect(f"{q['redirect_uri']}?{urlencode(back)}")
            elif self.path == "/token":
                try:
                    self.json(200, idp.exchange(form, self.basic()))
                except _Refused as exc:
                    self.json(exc.status, {"error": exc.error})
            else:
                self.send_text(404, "not found")

        def basic(self) -> tuple[str, str] | None:
            scheme, _, value = self.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "basic":
                return None
            user, _, password = base64.b64decode(value).decode().partition(":")
            return user, password

        def login_form(self, q: dict[str, str], error: str) -> None:
            hidden = "".join(
                f'<input type="hidden" name="q_{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in q.items()
            )
            self.send_text(200, LOGIN.format(error=html.escape(error), hidden=hidden), "text/html")

        def redirect(self, to: str) -> None:
            self.send_response(302)
            self.send_header("Location", to)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def json(self, status: int, body: dict[str, Any]) -> None:
            self.send_text(status, json.dumps(body), "application/json")

        def send_text(self, status: int, text: str, kind: str = "text/plain") -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def running_idp(roles_claim: str = "roles") -> Iterator[Idp]:
    """A started IdP with three users: clerk, sender, auditor (password = name + "-pw")."""
    idp = Idp(roles_claim).start()
    for role in ("clerk", "sender", "auditor"):
        idp.add_user(role, f"{role}-pw", [role])
    try:
        yield idp
    finally:
        idp.stop()
