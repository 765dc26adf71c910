"""Who may call the APIs: the service token (DICOMISO_API_TOKEN) and, with DICOMISO_OIDC_ISSUER,
the identity provider's JWT access tokens; roles per route (docs/security.md).

The service token is what the services send each other (and scripts): it holds every role.
A JWT names a staff member and the roles of DICOMISO_OIDC_ROLES_CLAIM: `clerk` (check a
patient, make a disc, e-mail, new link), `sender` (send to a PACS), `auditor` (read the audit
trail). With neither configured every call passes (local use only, logged once).

A token that was presented and refused, and a role that is missing, are `security-alert`
events in the audit trail (never with the token), at most `ALERT_BUDGET` a minute: a flood of
bad tokens costs the bucket that much, and the next event written counts those left out.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from . import audit
from .errors import DicomisoError, Forbidden, Unauthorized
from .oidc import ROLES, IdpUnavailable, JwksCache, Verifier, looks_like_jwt
from .settings import CommonSettings
from .store import Store

log = logging.getLogger(__name__)

ALERT_BUDGET = 60  # security-alert events written per minute; the rest are counted


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a name for the audit trail, a kind and the roles held."""

    name: str
    kind: str  # "service" (the service token), "user" (a JWT or session), "anonymous"
    roles: frozenset[str]
    # A session cookie's renewed value (the idle timeout starts again), to be set on the
    # response; None for bearer tokens.
    session: str | None = field(default=None, compare=False, repr=False)


# The staff page's session cookie (the packager's `signin.Sessions`): the request's headers
# and client in, the caller out, or None when the request carries no cookie to check.
CookieAuth = Callable[[Mapping[str, str], str | None], "Principal | None"]


ALL_ROLES = frozenset(ROLES)


def verifier_of(settings: CommonSettings) -> Verifier | None:
    """The JWT verifier of the configured issuer, or None (service tokens only)."""
    if not settings.oidc_issuer or not settings.oidc_audience:
        return None
    keys = JwksCache(
        settings.oidc_issuer,
        timeout=settings.oidc_http_timeout,
        min_refresh=settings.oidc_jwks_min_refresh,
        max_age=settings.oidc_jwks_max_age,
    )
    return Verifier(
        settings.oidc_issuer,
        settings.oidc_audience,
        roles_claim=settings.oidc_roles_claim,
        clock_skew=settings.oidc_clock_skew,
        keys=keys,
    )


class Authenticator:
    """Turns a request's headers into a Principal, or refuses them (and audits the refusal)."""

    def __init__(
        self,
        token: bytes,
        verifier: Verifier | None = None,
        store: Store | None = None,
        service: str = "service",
        cookies: CookieAuth | None = None,
    ) -> None:
        self.token = token
        self.cookies = cookies
        self.verifier = verifier
        self.store = store
        self.service = service
        self._budget_lock = threading.Lock()
        self._window = 0.0
        self._written = 0
        self._suppressed = 0

    @classmethod
    def from_settings(
        cls, settings: CommonSettings, store: Store | None = None, service: str = "service"
    ) -> Authenticator:
        return cls(
            settings.api_token.get_secret_value().encode(), verifier_of(settings), store, service
        )

    @property
    def required(self) -> bool:
        return bool(self.token) or self.verifier is not None

    def authenticate(self, headers: Mapping[str, str], client: str | None = None) -> Principal:
        """The caller named by `Authorization: Bearer` (else by the session cookie, when
        `cookies` is set); raises Unauthorized, or IdpUnavailable (503) when a JWT's key
        cannot be had from an IdP that is down."""
        if not self.required:
            return Principal("anonymous (auth off)", "anonymous", ALL_ROLES)
        authorization = headers.get("authorization", "")
        if not authorization and self.cookies is not None:
            principal = self.cookies(headers, client)
            if principal is not None:
                return principal
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token")
        if self.token and hmac.compare_digest(token.encode(), self.token):
            return Principal("api-token", "service", ALL_ROLES)
        if self.verifier is None or not looks_like_jwt(token):
            self.alert("unknown", "invalid bearer token", client)
            raise Unauthorized("invalid bearer token")
        try:
            claims = self.verifier.verify(token)
        except IdpUnavailable:
            raise
        except Unauthorized as exc:
            self.alert("unknown", str(exc), client)
            raise
        return Principal(claims.name, "user", claims.roles)

    def alert(self, user: str, reason: str, client: str | None, **fields: Any) -> None:
        """A `security-alert` event (best effort: a refusal never waits on the bucket's fate)."""
        log.warning("security alert", extra={"reason": reason, "service": self.service})
        if self.store is None:
            return
        with self._budget_lock:
            now = time.monotonic()
            if now - self._window >= 60:
                self._window, self._written = now, 0
            if self._written >= ALERT_BUDGET:
                self._suppressed += 1
                return
            self._written += 1
            suppressed, self._suppressed = self._suppressed, 0
        try:
            audit.write(
                self.store,
                self.service,
                "security-alert",
                user=user,
                outcome="refused",
                client=client,
                reason=reason,
                suppressed=suppressed or None,
                **fields,
            )
        except DicomisoError:
            log.warning("security alert not written to the audit trail")


class Guard:
    """The FastAPI dependency of every /v1 route: `Depends(guard)` authenticates,
    `Depends(guard.role("clerk"))` also requires a role (any one of those named)."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        if not auth.required:
            log.warning("DICOMISO_API_TOKEN is empty: API authentication is off (local use only)")

    def __call__(self, request: Request) -> Principal:
        known = getattr(request.state, "principal", None)  # BodyGate checked it already
        if isinstance(known, Principal):
            return known
        client = request.client.host if request.client else None
        principal = self.auth.authenticate(request.headers, client)
        request.state.principal = principal
        return principal

    def role(self, *roles: str) -> Callable[[Request], Principal]:
        """A dependency that lets through only a caller holding one of `roles`."""
        unknown = set(roles) - ALL_ROLES
        if not roles or unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}")
        wanted = frozenset(roles)

        def check(request: Request) -> Principal:
            principal = self(request)
            if principal.roles & wanted:
                return principal
            route = getattr(request.scope.get("route"), "path", None)
            client = request.client.host if request.client else None
            needed = " or ".join(sorted(wanted))
            self.auth.alert(
                principal.name, f"missing role {needed}", client, route=route, method=request.method
            )
            raise Forbidden(f"this needs the role {needed}, which your account does not have")

        return check


def bearer_guard(
    settings: CommonSettings, store: Store | None = None, service: str = "service"
) -> Guard:
    """The guard of a service's routes; `store` receives the security-alert events."""
    return Guard(Authenticator.from_settings(settings, store, service))
