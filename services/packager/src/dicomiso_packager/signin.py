"""The staff page's sign-in with the hospital's identity provider (docs/security.md).

OpenID Connect authorization code flow with PKCE (S256), as a confidential client
(DICOMISO_OIDC_CLIENT_ID / _SECRET): `GET /auth/login` sends the browser to the IdP's
authorization endpoint (from discovery) with a random state, nonce and code challenge, kept
in a short-lived signed cookie; `GET /auth/callback` checks the state, exchanges the code
server-side, verifies the access token with the APIs' own verifier (and the ID token's
nonce), and sets the session cookie; `GET /auth/logout` clears it and ends the IdP's session.

The session cookie holds the subject, name and roles and the sign-in time, signed with
DICOMISO_SESSION_SECRET (itsdangerous, with the time of signing): it is refused after
DICOMISO_SESSION_IDLE seconds without a request and DICOMISO_SESSION_MAX after sign-in, and
re-signed on every request it authenticates (the idle clock starts again). It is HttpOnly,
SameSite=Lax, Path=/ and Secure, except on plain-HTTP loopback (the tests). It authenticates
the page's `/v1` calls only when they carry `X-Requested-With: dicom-iso`, which a
cross-site form or link cannot send (CSRF); anything else needs the bearer token.

A forged, expired or replayed cookie and a wrong state are `security-alert` events; a
sign-in is `sign-in` (succeeded or failed), a sign-out `sign-out`. An IdP that cannot be
reached is a page saying so (503), never a 500. Reasons never hold a token or a claim.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomiso_common import audit
from dicomiso_common.auth import Authenticator, Principal
from dicomiso_common.errors import DicomisoError, Unauthorized
from dicomiso_common.oidc import IdpUnavailable, Verifier, looks_like_jwt
from dicomiso_common.store import Store

from .i18n import t
from .settings import PackagerSettings

log = logging.getLogger(__name__)

SESSION_COOKIE = "dicomiso-session"
FLOW_COOKIE = "dicomiso-signin"  # state, nonce and PKCE verifier between /login and /callback
FLOW_TTL = 600  # seconds a sign-in at the IdP may take
SESSION_SALT = "dicomiso-session"
FLOW_SALT = "dicomiso-signin-flow"
CSRF_HEADER = "x-requested-with"
CSRF_VALUE = "dicom-iso"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
DISCOVERY_MAX_AGE = 3600.0
SERVICE = "packager"


def enabled(settings: PackagerSettings) -> bool:
    return bool(settings.oidc_client_id and settings.oidc_issuer)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def challenge_of(verifier: str) -> str:
    """The PKCE S256 code challenge of a verifier (RFC 7636)."""
    return _b64(hashlib.sha256(verifier.encode()).digest())


def _cookies(headers: Mapping[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


def serializer(
    secret: str, salt: str, signer: type[TimestampSigner] = TimestampSigner
) -> URLSafeTimedSerializer:
    """Signed, timestamped, URL-safe JSON: HMAC-SHA256 with a key derived from the secret and
    the salt (one per purpose: a flow cookie is never a session)."""
    return URLSafeTimedSerializer(
        secret, salt=salt, signer=signer, signer_kwargs={"digest_method": hashlib.sha256}
    )


def plain_loopback(scheme: str, host: str | None) -> bool:
    """Plain HTTP to a loopback address: the only case a cookie goes without Secure."""
    return scheme == "http" and (host or "").strip("[]") in LOOPBACK


class Sessions:
    """Signs and checks the session cookie; `Authenticator.cookies` calls `principal`."""

    def __init__(self, settings: PackagerSettings, auth: Authenticator) -> None:
        assert settings.session_secret is not None  # the settings' validator
        secret = settings.session_secret.get_secret_value()
        self.session = serializer(secret, SESSION_SALT)
        self.flow = serializer(secret, FLOW_SALT)
        self.idle = settings.session_idle
        self.max = settings.session_max
        self.auth = auth

    def issue(self, subject: str, name: str, roles: frozenset[str]) -> str:
        data = {"sub": subject, "name": name, "roles": sorted(roles), "iat": int(time.time())}
        return self.session.dumps(data)

    def read(self, value: str) -> dict[str, Any]:
        """The session's contents; raises Unauthorized (forged, idle or too old)."""
        try:
            data = self.session.loads(value, max_age=self.idle)
        except SignatureExpired as exc:
            raise Unauthorized("the session has expired (idle); sign in again") from exc
        except BadSignature as exc:
            raise Unauthorized("the session cookie is not valid; sign in again") from exc
        if not isinstance(data, dict) or not isinstance(data.get("iat"), int):
            raise Unauthorized("the session cookie is not valid; sign in again")
        if time.time() - data["iat"] > self.max:
            raise Unauthorized("the session has expired; sign in again")
        return data

    def principal(self, headers: Mapping[str, str], client: str | None) -> Principal | None:
        """The signed-in staff member, re-signed; None without the cookie or the header."""
        value = _cookies(headers).get(SESSION_COOKIE)
        if not value or headers.get(CSRF_HEADER) != CSRF_VALUE:
            return None
        try:
            data = self.read(value)
        except Unauthorized as exc:
            self.auth.alert("unknown", str(exc), client, credential="session cookie")
            raise
        roles = frozenset(str(r) for r in data.get("roles", []))
        renewed = self.session.dumps(data)
        return Principal(str(data.get("name"))[:128], "user", roles, session=renewed)


def cookie_header(name: str, value: str, secure: bool, max_age: int | None = None) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class RenewSession:
    """ASGI middleware: a response to a request the session cookie authenticated carries the
    cookie re-signed, so the idle timeout counts from the last request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def renew(message: Message) -> None:
            if message["type"] == "http.response.start":
                principal = scope.get("state", {}).get("principal")
                value = getattr(principal, "session", None)
                if value is None and message["status"] == 401 and _page_call_with_cookie(scope):
                    value, max_age = "", 0  # refused: cleared, not sent (and alerted) again
                else:
                    max_age = None
                if value is not None:
                    host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
                    secure = not plain_loopback(scope["scheme"], urlsplit(f"//{host}").hostname)
                    header = cookie_header(SESSION_COOKIE, value, secure, max_age)
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"set-cookie", header.encode("latin-1")),
                    ]
            await send(message)

        await self.app(scope, receive, renew)


def _page_call_with_cookie(scope: Scope) -> bool:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    return headers.get(CSRF_HEADER) == CSRF_VALUE and SESSION_COOKIE in _cookies(headers)


class Discovery:
    """The IdP's discovery document, fetched on the first sign-in and kept an hour."""

    def __init__(self, issuer: str, timeout: float) -> None:
        self.issuer = issuer.rstrip("/")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._doc: dict[str, Any] | None = None
        self._at = 0.0

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._doc is not None and time.monotonic() - self._at < DISCOVERY_MAX_AGE:
                return self._doc
            try:
                with httpx.Client(timeout=self.timeout) as http:
                    answer = http.get(f"{self.issuer}/.well-known/openid-configuration")
                answer.raise_for_status()
                doc = answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                if self._doc is not None:  # an IdP down for a while: what we had
                    return self._doc
                raise IdpUnavailable("the identity provider cannot be reached") from exc
            if not isinstance(doc, dict) or str(doc.get("issuer", "")).rstrip("/") != self.issuer:
                raise IdpUnavailable("the identity provider's discovery document does not fit")
            for name in ("authorization_endpoint", "token_endpoint"):
                if not isinstance(doc.get(name), str):
                    raise IdpUnavailable(f"the identity provider names no {name}")
            self._doc, self._at = doc, time.monotonic()
            return doc


def message_page(
    request: Request, status: int, kind: str, reason: str | None = None
) -> HTMLResponse:
    """A plain page for the browser (sign-in refused, IdP down) in the page's language,
    linking back to the page; `reason` (for IT, English) below the text."""
    from .web import SECURITY_HEADERS, page_lang  # web imports this module

    lang = page_lang(request)
    title = t(lang, f"srv_signin_{kind}_title")
    why = f'<p id="reason">{html.escape(t(lang, "srv_signin_reason", reason=reason))}</p>'
    body = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="stylesheet" href="/static/app.css"></head><body><main>'
        f"<h1>{html.escape(title)}</h1><p>{html.escape(t(lang, f'srv_signin_{kind}'))}</p>"
        f"{why if reason else ''}"
        f'<p><a href="/">{html.escape(t(lang, "srv_signin_back"))}</a></p></main></body></html>'
    )
    headers = {**SECURITY_HEADERS, "Content-Language": lang}
    return HTMLResponse(body, status_code=status, headers=headers)


def signin_router(
    settings: PackagerSettings, store: Store, auth: Authenticator, sessions: Sessions
) -> APIRouter:
    """`/auth/login`, `/auth/callback`, `/auth/logout`: public, they are how one signs in."""
    assert auth.verifier is not None and settings.oidc_issuer and settings.oidc_client_id
    verifier: Verifier = auth.verifier
    # The ID token: the same keys and checks, its audience being our client id.
    id_verifier = Verifier(
        settings.oidc_issuer,
        settings.oidc_client_id,
        roles_claim=settings.oidc_roles_claim,
        clock_skew=settings.oidc_clock_skew,
        keys=verifier.keys,
    )
    discovery = Discovery(settings.oidc_issuer, settings.oidc_http_timeout)
    client_id = settings.oidc_client_id
    router = APIRouter(tags=["sign-in"], include_in_schema=False)

    def base_of(request: Request) -> str | None:
        if settings.public_url:
            return settings.public_url.rstrip("/")
        if (request.url.hostname or "") in LOOPBACK:
            return str(request.base_url).rstrip("/")
        return None

    def secure(request: Request) -> bool:
        return not plain_loopback(request.url.scheme, request.url.hostname)

    def client_of(request: Request) -> str | None:
        return request.client.host if request.client else None

    def unreachable(request: Request, exc: DicomisoError) -> HTMLResponse:
        log.warning("sign-in: identity provider unavailable", extra={"reason": str(exc)})
        return message_page(request, 503, "down", "the identity provider cannot be reached")

    def failed(request: Request, reason: str, user: str = "unknown") -> HTMLResponse:
        audit.write(
            store,
            SERVICE,
            "sign-in",
            user=user,
            outcome="failed",
            client=client_of(request),
            reason=reason,
        )
        return message_page(request, 401, "failed", reason)

    def forged(request: Request, reason: str) -> HTMLResponse:
        auth.alert("unknown", reason, client_of(request), route="/auth/callback")
        return message_page(request, 400, "failed", reason)

    @router.get("/auth/login")
    def login(request: Request) -> Response:
        base = base_of(request)
        if base is None:
            return message_page(request, 503, "unconfigured", "DICOMISO_PUBLIC_URL is not set")
        try:
            doc = discovery.get()
        except IdpUnavailable as exc:
            return unreachable(request, exc)
        state, nonce, code_verifier = (secrets.token_urlsafe(32) for _ in range(3))
        redirect_uri = f"{base}/auth/callback"
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge_of(code_verifier),
            "code_challenge_method": "S256",
        }
        endpoint = doc["authorization_endpoint"]
        sep = "&" if "?" in endpoint else "?"
        response = RedirectResponse(f"{endpoint}{sep}{urlencode(query)}", status_code=302)
        flow = sessions.flow.dumps(
            {"state": state, "nonce": nonce, "verifier": code_verifier, "redirect": redirect_uri}
        )
        response.headers.append(
            "set-cookie", cookie_header(FLOW_COOKIE, flow, secure(request), FLOW_TTL)
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.get("/auth/callback")
    def callback(request: Request) -> Response:
        q = request.query_params
        raw = request.cookies.get(FLOW_COOKIE)
        if not raw:
            return forged(request, "the sign-in was not started here (no sign-in cookie)")
        try:
            flow = sessions.flow.loads(raw, max_age=FLOW_TTL)
        except SignatureExpired:
            return failed(request, "the sign-in took too long")
        except BadSignature:
            return forged(request, "the sign-in cookie is not valid")
        state = q.get("state", "")
        if not hmac.compare_digest(state.encode(), str(flow.get("state", "")).encode()):
            return forged(request, "the sign-in state does not match")
        if q.get("error"):
            return failed(request, "the identity provider refused the sign-in")
        code = q.get("code", "")
        if not code or len(code) > 2048:
            return failed(request, "the identity provider sent no code")
        try:
            doc = discovery.get()
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": flow["redirect"],
                "code_verifier": flow["verifier"],
            }
            secret = settings.client_secret()
            basic = httpx.BasicAuth(client_id, secret) if secret is not None else None
            if basic is None:
                form["client_id"] = client_id
            with httpx.Client(timeout=settings.oidc_http_timeout) as http:
                answer = http.post(
                    doc["token_endpoint"], data=form, auth=basic or httpx.USE_CLIENT_DEFAULT
                )
        except IdpUnavailable as exc:
            return unreachable(request, exc)
        except httpx.HTTPError as exc:
            return unreachable(request, IdpUnavailable(type(exc).__name__))
        try:
            tokens = answer.json() if answer.status_code == 200 else None
        except ValueError:
            tokens = None
        if not isinstance(tokens, dict) or not isinstance(tokens.get("access_token"), str):
            return failed(
                request, f"the identity provider did not issue tokens (HTTP {answer.status_code})"
            )
        access, id_token = tokens["access_token"], tokens.get("id_token")
        try:
            if not looks_like_jwt(access):
                raise Unauthorized("the access token is not a JWT")
            claims = verifier.verify(access)
            if not isinstance(id_token, str) or not looks_like_jwt(id_token):
                raise Unauthorized("the identity provider sent no ID token")
            id_claims = id_verifier.verify(id_token)
            nonce = _payload(id_token).get("nonce")
            if id_claims.subject != claims.subject:
                raise Unauthorized("the ID token names another subject")
            if not isinstance(nonce, str) or not hmac.compare_digest(
                nonce.encode(), str(flow.get("nonce", "")).encode()
            ):
                raise Unauthorized("the ID token's nonce does not match")
        except IdpUnavailable as exc:
            return unreachable(request, exc)
        except Unauthorized as exc:
            return failed(request, str(exc))
        audit.write(
            store,
            SERVICE,
            "sign-in",
            user=claims.name,
            outcome="succeeded",
            client=client_of(request),
            roles=sorted(claims.roles),
        )
        response = RedirectResponse("/", status_code=303)
        value = sessions.issue(claims.subject, claims.name, claims.roles)
        response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, value, secure(request)))
        response.headers.append("set-cookie", cookie_header(FLOW_COOKIE, "", secure(request), 0))
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.get("/auth/logout")
    def logout(request: Request) -> Response:
        user = None
        raw = request.cookies.get(SESSION_COOKIE)
        if raw:
            try:
                user = str(sessions.read(raw).get("name"))
            except Unauthorized:
                user = None  # nothing to end; the cookie is cleared all the same
        if user is not None:
            audit.write(
                store,
                SERVICE,
                "sign-out",
                user=user,
                outcome="succeeded",
                client=client_of(request),
            )
        target = "/"
        base = base_of(request)
        try:
            end = discovery.get().get("end_session_endpoint")
        except IdpUnavailable:
            end = None  # signed out here; the IdP's session ends when it does
        if isinstance(end, str) and base is not None:
            back = {"client_id": client_id, "post_logout_redirect_uri": f"{base}/"}
            target = f"{end}{'&' if '?' in end else '?'}{urlencode(back)}"
        response = RedirectResponse(target, status_code=303)
        response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, "", secure(request), 0))
        response.headers["Cache-Control"] = "no-store"
        return response

    return router


def _payload(token: str) -> dict[str, Any]:
    """A verified JWT's claims (verified by `Verifier.verify` before this is called)."""
    segment = token.split(".")[1]
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value if isinstance(value, dict) else {}


def include(app: FastAPI, settings: PackagerSettings, store: Store, auth: Authenticator) -> None:
    """With DICOMISO_OIDC_CLIENT_ID: sessions on the guard, the routes, cookie renewal."""
    if not enabled(settings):
        return
    sessions = Sessions(settings, auth)
    auth.cookies = sessions.principal
    app.include_router(signin_router(settings, store, auth, sessions))
    app.add_middleware(RenewSession)
