"""STOW-RS of bucket instances to one DICOMweb peer (PS3.18 10.5): batched, streamed, per instance.

Each batch is one `POST {url}/studies/{StudyInstanceUID}` whose body is
`multipart/related; type="application/dicom"`, one part per instance as stored (no
transcoding: STOW-RS carries the Part 10 file with its own transfer syntax). The body is a
generator reading each instance from the bucket in 1 MiB chunks, so memory stays flat
whatever the batch or study size; a batch holds at most `batch_instances` instances and,
unless one instance alone is larger, `batch_bytes` bytes.

The answer is read per instance (PS3.18 10.5.3, the Store Instances Response Module): an
instance in the Referenced SOP Sequence is delivered (`warning` when it carries a Warning
Reason), one in the Failed SOP Sequence failed with its Failure Reason, and one in neither
(Orthanc 1.10's plugin silently drops a part it cannot parse) counts as failed: only what the
peer names as stored counts as delivered. The HTTP status is not trusted for that (Orthanc
answers 200 where PS3.18 says 202 for a partial success).

Transient failures (no connection, a timeout, HTTP 408/429/5xx, Failure Reason 0xA7xx "out
of resources") raise `Transient`: the forward job tries the batch again with backoff, and a
re-run sends only what the peer has not acknowledged (forwards/{id}/results.json). Credentials
are never logged and never part of an error.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from dicomiso_common.store import Store

from .send import Item, Missing, Outcome, Transient, read_chunks
from .settings import DicomwebPeer

log = logging.getLogger(__name__)

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}

# PS3.18 Table I.2-1 / PS3.4 B.2.3 failure reasons worth naming to a person.
FAILURE_TEXT = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA900: "data set does not match the SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}


def client_for(peer: DicomwebPeer, timeout: float) -> httpx.Client:
    """An HTTP client for the peer: TLS verified unless the peer says otherwise, its CA file,
    its credentials, no proxy or netrc from the environment."""
    verify: ssl.SSLContext | bool = peer.verify_tls
    if peer.verify_tls and peer.ca_file is not None:
        verify = ssl.create_default_context(cafile=str(peer.ca_file))
    auth: httpx.Auth | None = None
    headers = {"Accept": "application/dicom+json"}
    if peer.auth == "basic":
        auth = httpx.BasicAuth(peer.username, peer.secret())
    elif peer.auth == "bearer":
        headers["Authorization"] = f"Bearer {peer.secret()}"
    return httpx.Client(
        verify=verify,
        auth=auth,
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=30.0),
        trust_env=False,
        follow_redirects=False,
    )


def plan_stow(items: list[Item], max_instances: int, max_bytes: int) -> list[list[Item]]:
    """Batches of one study each, at most `max_instances` instances and `max_bytes` bytes
    (an instance larger than `max_bytes` goes alone)."""
    by_study: dict[str, list[Item]] = {}
    for item in items:
        by_study.setdefault(item.study_uid, []).append(item)
    batches: list[list[Item]] = []
    for group in by_study.values():
        current: list[Item] = []
        size = 0
        for item in group:
            if current and (len(current) >= max_instances or size + item.size > max_bytes):
                batches.append(current)
                current, size = [], 0
            current.append(item)
            size += item.size
        if current:
            batches.append(current)
    return batches


def _values(body: dict[str, Any], tag: str) -> list[Any]:
    element = body.get(tag)
    if not isinstance(element, dict):
        return []
    values = element.get("Value", [])
    return values if isinstance(values, list) else []


def _first(item: Any, tag: str) -> Any:
    values = _values(item, tag) if isinstance(item, dict) else []
    return values[0] if values else None


def _reason(code: int | None) -> str:
    if code is None:
        return "peer listed the instance as failed without a reason"
    text = FAILURE_TEXT.get(code, "failure")
    return f"peer answered 0x{code:04X} ({text})"


def read_response(body: Any, sent: list[Item]) -> tuple[dict[str, Outcome], list[Item]]:
    """Each sent instance's outcome from a Store Instances Response (DICOM JSON), and the
    instances the peer could not store now (0xA7xx, to be tried again)."""
    outcomes: dict[str, Outcome] = {}
    again: list[Item] = []
    wanted = {i.sop_uid: i for i in sent}
    body = body if isinstance(body, dict) else {}
    for entry in _values(body, FAILED_SOP_SEQUENCE):
        uid, code = _first(entry, REFERENCED_SOP_INSTANCE_UID), _first(entry, FAILURE_REASON)
        if uid not in wanted:
            continue
        code = int(code) if isinstance(code, int) else None
        if code is not None and 0xA700 <= code <= 0xA7FF:
            again.append(wanted[uid])
            continue
        outcomes[uid] = Outcome(status="failed", code=code, reason=_reason(code))
    for entry in _values(body, REFERENCED_SOP_SEQUENCE):
        uid = _first(entry, REFERENCED_SOP_INSTANCE_UID)
        if uid not in wanted or uid in outcomes:
            continue
        warning = _first(entry, WARNING_REASON)
        if isinstance(warning, int):
            outcomes[uid] = Outcome(status="warning", code=warning)
        else:
            outcomes[uid] = Outcome(status="acknowledged")
    retried = {i.sop_uid for i in again}
    for uid in wanted:
        if uid not in outcomes and uid not in retried:
            outcomes[uid] = Outcome(status="failed", reason="not in the peer's STOW-RS response")
    return outcomes, again


class StowSender:
    """Posts batches to one DICOMweb peer; `on_result` is called after each instance."""

    def __init__(
        self,
        store: Store,
        peer: DicomwebPeer,
        timeout: float,
        on_result: Callable[[Item, Outcome], None],
    ) -> None:
        self.store = store
        self.peer = peer
        self.timeout = timeout
        self.on_result = on_result

    def describe(self) -> str:
        """Name the peer for errors: its URL (which holds no credentials)."""
        return f"DICOMweb peer {self.peer.url}"

    def plan(self, items: list[Item]) -> list[list[Item]]:
        return plan_stow(items, self.peer.batch_instances, self.peer.batch_bytes)

    def send_batch(self, batch: list[Item]) -> None:
        """One STOW-RS request for the batch (one study); raises Transient to be retried."""
        boundary = uuid.uuid4().hex
        missing: list[Item] = []
        url = f"{self.peer.url}/studies/{batch[0].study_uid}"
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        try:
            with client_for(self.peer, self.timeout) as client:
                response = client.post(
                    url,
                    content=self._body(batch, boundary.encode(), missing),
                    headers={"Content-Type": content_type},
                )
        except httpx.HTTPError as exc:  # the message may hold the URL, never a credential
            raise Transient(f"STOW-RS request failed: {type(exc).__name__}") from None
        for item in missing:
            self.on_result(
                item, Outcome(status="failed", reason="instance missing from the bucket")
            )
        sent = [i for i in batch if i not in missing]
        if not sent:
            return
        status = response.status_code
        if status in TRANSIENT_HTTP:
            raise Transient(f"peer answered HTTP {status}")
        if status not in (200, 202, 409):
            reason = {401: "credentials refused", 403: "not allowed"}.get(status, "refused")
            for item in sent:
                self.on_result(
                    item, Outcome(status="failed", code=status, reason=f"HTTP {status} ({reason})")
                )
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        outcomes, again = read_response(body, sent)
        for item in sent:
            if item.sop_uid in outcomes:
                self.on_result(item, outcomes[item.sop_uid])
        if again:
            raise Transient(f"peer out of resources for {len(again)} instance(s)")

    def _body(self, batch: list[Item], boundary: bytes, missing: list[Item]) -> Iterator[bytes]:
        """The multipart body, streamed; an instance gone from the bucket is left out."""
        for item in batch:
            chunks = read_chunks(self.store, item)
            try:
                first = next(chunks, b"")
            except Missing:
                missing.append(item)
                continue
            yield b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n"
            yield first
            yield from chunks
            yield b"\r\n"
        yield b"--" + boundary + b"--\r\n"
