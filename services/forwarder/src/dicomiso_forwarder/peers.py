"""Configured peers: what may be named, and whether each answers a C-ECHO."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

# pynetdicom.sop_class generates its SOP class names at import: mypy cannot see them.
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomiso_common.errors import DicomError, InvalidInput
from dicomiso_common.pacs import PacsPeer, associate, make_ae

from .settings import DicomwebPeer, ForwarderSettings, Peer
from .stow import client_for

log = logging.getLogger(__name__)

VERIFICATION = Verification


def pacs_peer(settings: ForwarderSettings, peer: Peer) -> PacsPeer:
    return PacsPeer(
        aet=peer.aet,
        host=peer.host,
        port=peer.port,
        calling_aet=settings.calling_aet,
        acse_timeout=settings.dicom_acse_timeout,
        dimse_timeout=settings.dicom_dimse_timeout,
        network_timeout=settings.dicom_network_timeout,
    )


def resolve(settings: ForwarderSettings, name: object) -> Peer | DicomwebPeer:
    """The configured peer of that name, or InvalidInput (422) listing what may be named."""
    if not isinstance(name, str) or name not in settings.peers:
        known = ", ".join(sorted(settings.peers)) or "none configured"
        raise InvalidInput(f"destination must be a configured peer ({known})")
    return settings.peers[name]


def audit_fields(settings: ForwarderSettings, name: str) -> dict[str, Any]:
    """The nodes of a forward for its audit events (atna): our AE title and the peer's, or
    the DICOMweb peer's host; nothing for a name no longer configured."""
    peer = settings.peers.get(name)
    if isinstance(peer, Peer):
        return {"our_aet": settings.calling_aet, "peer_aet": peer.aet, "peer_host": peer.host}
    if peer is not None:
        return {"peer_host": urlsplit(peer.url).hostname}
    return {}


def echo(settings: ForwarderSettings, peer: Peer) -> str | None:
    """C-ECHO the peer; None when it answers, else the reason."""
    target = pacs_peer(settings, peer)
    ae = make_ae(target)
    ae.add_requested_context(VERIFICATION)
    try:
        with associate(target, ae) as assoc:
            status = assoc.send_c_echo()
            code = int(status.Status) if "Status" in status else None
            return None if code == 0 else f"C-ECHO status {code}"
    except DicomError as exc:
        return str(exc)


def probe(settings: ForwarderSettings, peer: DicomwebPeer) -> str | None:
    """A QIDO-RS `studies?limit=1` with the peer's credentials; None when it answers 2xx."""
    try:
        with client_for(peer, min(settings.http_timeout, 30.0)) as client:
            response = client.get(f"{peer.url}/studies", params={"limit": "1"})
    except (httpx.HTTPError, OSError) as exc:
        return f"DICOMweb peer unreachable: {type(exc).__name__}"
    if response.is_success:
        return None
    return f"DICOMweb peer answered HTTP {response.status_code}"
