"""The lab's Keycloak realm (deploy/k8s/overlays/lab/keycloak/dicom-iso-realm.json), offline.

The realm must give the services what `dicomiso_common.oidc` checks: our three roles in the
claim DICOMISO_OIDC_ROLES_CLAIM names, and the audience DICOMISO_OIDC_AUDIENCE in every access
token, as the lab overlay sets them. Its staff client may only use the authorization code flow
with PKCE S256, back to loopback addresses, and the file holds no usable password or secret.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from dicomiso_common.oidc import ROLES, roles_of
from dicomiso_common.settings import CommonSettings

from .conftest import DEPLOY

REALM_FILE = DEPLOY / "k8s" / "overlays" / "lab" / "keycloak" / "dicom-iso-realm.json"
CLIENT_ID = "dicom-iso-staff"
LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(REALM_FILE.read_text())
    return value


@pytest.fixture(scope="module")
def client(realm: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in realm["clients"] if c["clientId"] == CLIENT_ID]
    assert len(found) == 1, f"one client {CLIENT_ID} expected"
    return found[0]


@pytest.fixture(scope="module")
def lab_settings(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """The lab overlay's rendered ConfigMap of DICOMISO_* settings."""
    settings: dict[str, str] = next(
        c["data"]
        for c in rendered["lab"]
        if c["kind"] == "ConfigMap" and c["metadata"]["name"].startswith("dicomiso-settings")
    )
    return settings


def mappers(client: dict[str, Any], kind: str) -> list[dict[str, str]]:
    return [m["config"] for m in client.get("protocolMappers", []) if m["protocolMapper"] == kind]


def test_the_realm_defines_our_roles(realm: dict[str, Any]) -> None:
    """Realm `dicom-iso` with exactly the realm roles the guard knows."""
    assert realm["realm"] == "dicom-iso"
    assert realm["enabled"] is True
    assert {r["name"] for r in realm["roles"]["realm"]} == set(ROLES)


def test_the_staff_client_uses_the_code_flow_with_pkce_only(client: dict[str, Any]) -> None:
    """Confidential, authorization code flow only, PKCE S256 required; no secret in git."""
    assert client["publicClient"] is False
    assert client["clientAuthenticatorType"] == "client-secret"
    assert "secret" not in client, "a client secret in git: regenerate it after import instead"
    assert client["standardFlowEnabled"] is True
    assert client["implicitFlowEnabled"] is False
    assert client["directAccessGrantsEnabled"] is False
    assert client["serviceAccountsEnabled"] is False
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    assert client["attributes"].get("oauth2.device.authorization.grant.enabled") == "false"


def test_redirects_go_to_loopback_only(client: dict[str, Any]) -> None:
    """Redirect URIs (and the root URL) are exact loopback URLs: no real host, no wildcard."""
    urls = [*client["redirectUris"], client["rootUrl"]]
    logout = client["attributes"].get("post.logout.redirect.uris", "+")
    if logout != "+":  # "+": the redirect URIs above
        urls += logout.split("##")
    assert client["redirectUris"], "no redirect URI"
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme in ("http", "https"), url
        assert parts.hostname in LOOPBACK, url
        assert "*" not in url, f"{url}: a wildcard redirect"
    assert client["webOrigins"] == [], "the code flow needs no CORS origin"


def test_access_tokens_carry_the_overlays_audience(
    client: dict[str, Any], lab_settings: dict[str, str]
) -> None:
    """The audience mapper puts DICOMISO_OIDC_AUDIENCE of the lab overlay into access tokens."""
    (audience,) = mappers(client, "oidc-audience-mapper")
    assert audience["access.token.claim"] == "true"
    assert audience["included.custom.audience"] == lab_settings["DICOMISO_OIDC_AUDIENCE"]


def test_access_tokens_carry_the_roles_where_the_overlay_reads_them(
    realm: dict[str, Any], client: dict[str, Any], lab_settings: dict[str, str]
) -> None:
    """Realm roles land in DICOMISO_OIDC_ROLES_CLAIM, and the guard reads them from there."""
    claim = lab_settings["DICOMISO_OIDC_ROLES_CLAIM"]
    (roles,) = mappers(client, "oidc-usermodel-realm-role-mapper")
    assert roles["claim.name"] == claim
    assert roles["access.token.claim"] == "true"
    assert roles["multivalued"] == "true"
    # With fullScopeAllowed off only the client's scope mappings reach the token: all of ours.
    if client["fullScopeAllowed"] is False:
        scoped = {
            role
            for m in realm.get("scopeMappings", [])
            if m.get("client") == CLIENT_ID
            for role in m["roles"]
        }
        assert scoped == set(ROLES)
    # What such a token holds, as the guard reads it (Keycloak nests `realm_access.roles`).
    token: dict[str, Any] = {}
    *parents, leaf = claim.split(".")
    node = token
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = ["clerk", "auditor", "offline_access"]
    assert roles_of(token, claim) == {"clerk", "auditor"}


def test_the_overlays_oidc_settings_are_accepted(lab_settings: dict[str, str]) -> None:
    """With the https:// issuer the overlay's comment suggests, the settings validate."""
    settings = CommonSettings(
        oidc_issuer="https://keycloak.lab.example.org/realms/dicom-iso",
        oidc_audience=lab_settings["DICOMISO_OIDC_AUDIENCE"],
        oidc_roles_claim=lab_settings["DICOMISO_OIDC_ROLES_CLAIM"],
    )
    assert settings.oidc_roles_claim == "realm_access.roles"
    assert "DICOMISO_OIDC_ISSUER" not in lab_settings, "the lab runs no Keycloak to point at"


def test_no_usable_password_in_the_realm(realm: dict[str, Any]) -> None:
    """At most synthetic users with temporary passwords; no client secret; no admin user."""
    for user in realm.get("users", []):
        assert user["username"] != "admin"
        for credential in user.get("credentials", []):
            assert credential.get("temporary") is True, user["username"]
    assert not any("secret" in c for c in realm["clients"])
