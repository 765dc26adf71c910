"""C-STORE of bucket instances to one peer: contexts from what is there, split, retried.

Presentation contexts are built from the SOP classes and transfer syntaxes actually present
(one context per pair, plus Explicit VR Little Endian per SOP class as the fallback), packed
into associations of at most 128 contexts (PS3.8 9.3.2.2). Each instance is spooled from S3
to a temporary file and sent from disk, so memory does not grow with instance or study size.
When the peer accepted only the fallback for an instance's SOP class, the instance is
decompressed to Explicit VR Little Endian and the result says so.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import pydicom
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)
from pynetdicom.association import Association

from dicomiso_common.errors import ObjectMissing, StoreError
from dicomiso_common.models import SendResult
from dicomiso_common.pacs import PacsPeer, associate, make_ae
from dicomiso_common.store import Store

log = logging.getLogger(__name__)

EXPLICIT_LE = str(ExplicitVRLittleEndian)
MAX_CONTEXTS = 128
LOSSY = {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000}
_CHUNK = 1024 * 1024


class Transient(Exception):
    """Worth another try later: association lost, peer out of resources (0xA7xx)."""


@dataclass(frozen=True)
class Item:
    """One instance to send, from the study manifest."""

    key: str
    sop_uid: str
    sop_class: str
    transfer_syntax: str
    study_uid: str = ""
    size: int = 0  # bytes, from the manifest (0: unknown)


class Missing(Exception):
    """The instance is not in the bucket: it fails, the study goes on."""


def open_instance(store: Store, item: Item) -> IO[bytes]:
    """The instance's Part 10 bytes as a stream: the one place the forwarder reads them.

    Raises:
        Missing: The object is gone (a failure of this instance, not worth a retry).
        Transient: S3 could not be read now (the batch is tried again).
    """
    try:
        return store.open(item.key)
    except ObjectMissing:
        raise Missing("instance missing from the bucket") from None
    except (StoreError, OSError) as exc:
        raise Transient(f"reading the instance from S3 failed: {type(exc).__name__}") from exc


def read_chunks(store: Store, item: Item) -> Iterator[bytes]:
    """The instance in chunks of at most 1 MiB (bounded memory); errors as `open_instance`."""
    with open_instance(store, item) as body:
        while True:
            try:
                chunk = body.read(_CHUNK)
            except (StoreError, OSError) as exc:
                raise Transient(
                    f"reading the instance from S3 failed: {type(exc).__name__}"
                ) from exc
            if not chunk:
                return
            yield chunk


Outcome = SendResult  # what became of one instance (stored in forwards/{id}/results.json)


def contexts_for(items: list[Item]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs to propose, fallbacks included, in a stable order."""
    pairs: dict[tuple[str, str], None] = {}
    for item in items:
        pairs[(item.sop_class, item.transfer_syntax)] = None
        pairs[(item.sop_class, EXPLICIT_LE)] = None
    return list(pairs)


def plan(items: list[Item], limit: int = MAX_CONTEXTS) -> list[list[Item]]:
    """Split items into batches whose contexts fit one association, keeping SOP classes whole."""
    by_class: dict[str, list[Item]] = {}
    for item in items:
        by_class.setdefault(item.sop_class, []).append(item)
    batches: list[list[Item]] = []
    current: list[Item] = []
    for group in by_class.values():
        if current and len(contexts_for(current + group)) > limit:
            batches.append(current)
            current = []
        current = current + group
    if current:
        batches.append(current)
    return batches


WARNINGS = {0x0001, 0x0107, 0x0116}  # PS3.7 C.4 general warnings; 0xBxxx: PS3.4 B.2.3


def _classify(code: int) -> Outcome | None:
    """Map a C-STORE status (PS3.4 B.2.3); None means transient (retry the instance).

    A warning means the peer stored the instance (perhaps coerced): it counts as delivered.
    """
    if code == 0x0000:
        return Outcome(status="acknowledged", code=code)
    if code in WARNINGS or 0xB000 <= code <= 0xBFFF:
        return Outcome(status="warning", code=code)
    if 0xA700 <= code <= 0xA7FF:
        return None
    return Outcome(status="failed", code=code, reason=f"peer answered 0x{code:04X}")


class Sender:
    """Sends batches to one peer; `on_result` is called after each instance."""

    def __init__(
        self, store: Store, peer: PacsPeer, on_result: Callable[[Item, Outcome], None]
    ) -> None:
        self.store = store
        self.peer = peer
        self.on_result = on_result

    def describe(self) -> str:
        """Name the peer for errors: AE title and address."""
        return f"peer {self.peer.aet}"

    def plan(self, items: list[Item]) -> list[list[Item]]:
        return plan(items)

    def send_batch(self, batch: list[Item]) -> None:
        """One association for the batch; raises Transient (or DicomError) to be retried."""
        ae = make_ae(self.peer)
        for sop_class, ts in contexts_for(batch):
            ae.add_requested_context(sop_class, [ts])
        with associate(self.peer, ae) as assoc:
            accepted = {
                (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in assoc.accepted_contexts
            }
            for item in batch:
                self.on_result(item, self._send_one(assoc, accepted, item))

    def _send_one(self, assoc: Association, accepted: set[tuple[str, str]], item: Item) -> Outcome:
        with tempfile.NamedTemporaryFile(suffix=".dcm") as spool:
            try:
                for chunk in read_chunks(self.store, item):
                    spool.write(chunk)
            except Missing as exc:
                return Outcome(status="failed", reason=str(exc))
            spool.flush()
            transcoded = False
            if (item.sop_class, item.transfer_syntax) in accepted:
                payload: Any = spool.name
            elif (item.sop_class, EXPLICIT_LE) in accepted:
                payload = self._as_explicit_le(spool.name)
                if payload is None:
                    return Outcome(status="failed", reason="cannot re-encode for the peer")
                transcoded = True
            else:
                return Outcome(
                    status="failed", reason="peer accepted no transfer syntax for the SOP class"
                )
            if not assoc.is_established:
                raise Transient("association lost")
            status = assoc.send_c_store(payload)
        if "Status" not in status:
            raise Transient("no C-STORE response (association aborted or timed out)")
        outcome = _classify(int(status.Status))
        if outcome is None:
            raise Transient(f"peer out of resources (0x{int(status.Status):04X})")
        return outcome.model_copy(update={"transcoded": transcoded})

    @staticmethod
    def _as_explicit_le(path: str) -> pydicom.Dataset | None:
        """Re-encode as Explicit VR Little Endian (decompressing with pydicom + pylibjpeg).

        The SOP Instance UID stays: decoding adds no loss, and only a lossy step calls for a
        new instance (PS3.3 C.7.6.1.1.5). A lossy source keeps saying so in Lossy Image
        Compression, which decompression would otherwise lose. None when it cannot be done.
        """
        try:
            ds = pydicom.dcmread(path)
            source = UID(ds.file_meta.TransferSyntaxUID)
            if source.is_compressed:
                ds.decompress(generate_instance_uid=False)
                if source in LOSSY:
                    ds.LossyImageCompression = "01"
            ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)
        except Exception:  # any decoder failure: this instance fails, the study goes on
            log.warning("re-encoding failed", exc_info=True)
            return None
        return ds
