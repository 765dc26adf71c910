"""JWT access tokens of the hospital's identity provider (OpenID Connect), checked offline.

The issuer's discovery document (`{DICOMISO_OIDC_ISSUER}/.well-known/openid-configuration`)
names its JWKS; the keys are fetched once and kept. A token signed with a key id we do not
hold makes us fetch the JWKS again (the IdP rotated its keys), at most once per
DICOMISO_OIDC_JWKS_MIN_REFRESH seconds, so a flood of forged key ids cannot flood the IdP.
Keys are also refreshed after DICOMISO_OIDC_JWKS_MAX_AGE; a refresh that fails keeps the
keys we have, so an IdP that is down does not stop tokens signed with known keys.

Only RS256 and ES256 are accepted, each with a key of its own type (never `none`, never an
HMAC keyed with a public key). Issuer, audience, expiry, not-before and issued-at are checked
with DICOMISO_OIDC_CLOCK_SKEW seconds of leeway. Reasons name the check that failed, never a
claim's value or the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from .errors import Unauthorized, Unavailable

log = logging.getLogger(__name__)

ALGORITHMS = {"RS256": "RSA", "ES256": "EC"}  # alg -> the only key type it may use
ROLES = ("clerk", "sender", "auditor")
_TOKEN_CHARS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


class IdpUnavailable(Unavailable):
    """The identity provider cannot be asked for its keys, and we hold none that fit."""

    title = "Identity provider unavailable"


@dataclass(frozen=True)
class Claims:
    """What a verified token says of its holder: a name for the audit trail and roles."""

    subject: str
    name: str
    roles: frozenset[str]


def _b64json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments: worth checking as a JWT (a service token never is)."""
    return token.count(".") == 2 and set(token.encode()) <= _TOKEN_CHARS


def header_of(token: str) -> dict[str, Any]:
    """The token's protected header, unverified; raises Unauthorized if it is not one."""
    try:
        return _b64json(token.split(".", 1)[0])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("the bearer token is not a well-formed JWT") from exc


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (`realm_access.roles`), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def roles_of(claims: dict[str, Any], path: str) -> frozenset[str]:
    """Our roles among the claim's values: a list of strings, or one space-separated string."""
    value = claim_at(claims, path)
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str) and v in ROLES)


class JwksCache:
    """The issuer's signing keys, fetched on first use, on an unknown key id, and when old."""

    def __init__(
        self,
        issuer: str,
        *,
        timeout: float = 5.0,
        min_refresh: float = 30.0,
        max_age: float = 3600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.timeout = timeout
        self.min_refresh = min_refresh
        self.max_age = max_age
        self._transport = transport
        self._lock = threading.Lock()
        self._keys: dict[str, RSAKey | ECKey] = {}
        self._fetched = float("-inf")  # monotonic time of the last good fetch
        self._tried = float("-inf")  # ... of the last attempt, good or not
        self._problem: str | None = None
        self.jwks_uri: str | None = None
        self.fetches = 0  # JWKS requests made (tests count them)

    def key(self, kid: str) -> RSAKey | ECKey:
        """The public key with this id; fetches the JWKS if needed and allowed.

        Raises IdpUnavailable when the IdP cannot be reached and no key is held, Unauthorized
        when the IdP answered and has no such key.
        """
        with self._lock:
            now = time.monotonic()
            stale = now - self._fetched > self.max_age
            unknown = kid not in self._keys
            if (stale or unknown) and now - self._tried >= self.min_refresh:
                self._refresh(now)
            if kid in self._keys:
                return self._keys[kid]
            if self._problem:  # perhaps a rotated key we cannot fetch: retry later
                raise IdpUnavailable(f"the identity provider cannot be reached: {self._problem}")
            raise Unauthorized("the token is signed by a key the identity provider does not list")

    def _refresh(self, now: float) -> None:
        self._tried = now
        self.fetches += 1
        try:
            keys = self._fetch()
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            self._problem = _why(exc)
            log.warning(
                "identity provider keys not refreshed; keeping the keys held",
                extra={"reason": self._problem, "keys": len(self._keys)},
            )
            return
        self._keys, self._fetched, self._problem = keys, now, None
        log.info("identity provider keys fetched", extra={"keys": len(keys)})

    def _fetch(self) -> dict[str, RSAKey | ECKey]:
        with httpx.Client(timeout=self.timeout, transport=self._transport) as http:
            if self.jwks_uri is None:
                found = _json(http.get(f"{self.issuer}/.well-known/openid-configuration"))
                if str(found.get("issuer", "")).rstrip("/") != self.issuer:
                    raise ValueError("the discovery document names another issuer")
                if not isinstance(found.get("jwks_uri"), str):
                    raise ValueError("the discovery document has no jwks_uri")
                self.jwks_uri = found["jwks_uri"]
            jwks = _json(http.get(self.jwks_uri))
        keys: dict[str, RSAKey | ECKey] = {}
        for data in jwks.get("keys", []):
            if not isinstance(data, dict) or data.get("use", "sig") != "sig":
                continue
            if data.get("kty") not in ("RSA", "EC") or not isinstance(data.get("kid"), str):
                continue
            key = KeySet.import_key_set({"keys": [data]}).keys[0]
            if isinstance(key, RSAKey | ECKey) and not key.is_private:
                keys[data["kid"]] = key
            elif isinstance(key, RSAKey | ECKey):  # a JWKS that publishes a private key
                keys[data["kid"]] = type(key).import_key(key.as_dict(private=False))
        if not keys:
            raise ValueError("the JWKS holds no RSA or EC signing key")
        return keys


def _json(response: httpx.Response) -> dict[str, Any]:
    response.raise_for_status()
    value = response.json()
    if not isinstance(value, dict):
        raise ValueError("the answer is not a JSON object")
    return value


def _why(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.HTTPError):
        return "connection failed"
    return str(exc)[:200] or type(exc).__name__


class Verifier:
    """Checks an access token: signature, algorithm, issuer, audience and times."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        roles_claim: str = "roles",
        clock_skew: int = 60,
        keys: JwksCache | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.roles_claim = roles_claim
        self.clock_skew = clock_skew
        self.keys = keys or JwksCache(issuer)

    def verify(self, token: str) -> Claims:
        """The token's holder, or Unauthorized (IdpUnavailable if no key can be had)."""
        header = header_of(token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise Unauthorized("the token's algorithm is not accepted (RS256 or ES256 only)")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("the token names no signing key (kid)")
        key = self.keys.key(kid)
        if key.key_type != ALGORITHMS[alg] or (alg == "ES256" and key.get("crv") != "P-256"):
            raise Unauthorized("the token's algorithm does not fit its signing key")
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
        except JoseError as exc:
            raise Unauthorized("the token's signature is not valid") from exc
        claims = decoded.claims
        self._check_claims(claims)
        subject = str(claims.get("sub") or "")
        name = claims.get("preferred_username") or claims.get("email") or subject
        return Claims(subject, str(name)[:128], roles_of(claims, self.roles_claim))

    def _check_claims(self, claims: dict[str, Any]) -> None:
        if str(claims.get("iss", "")).rstrip("/") != self.issuer:
            raise Unauthorized("the token was issued by another identity provider")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences:
            raise Unauthorized("the token is meant for another audience")
        if not claims.get("sub"):
            raise Unauthorized("the token names no subject")
        now = time.time()
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is not None and (not isinstance(value, int | float) or value is True):
                raise Unauthorized(f"the token's {name} is not a number")
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if exp is None:
            raise Unauthorized("the token has no expiry")
        if exp <= now - self.clock_skew:
            raise Unauthorized("the token has expired")
        if nbf is not None and nbf > now + self.clock_skew:
            raise Unauthorized("the token is not valid yet")
        if iat is not None and iat > now + self.clock_skew:
            raise Unauthorized("the token was issued in the future")
