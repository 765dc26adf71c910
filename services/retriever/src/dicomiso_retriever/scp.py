"""The Storage SCP (AE CDRECORD): receives C-STOREs and streams each instance into the bucket.

pynetdicom is told to spool each received data set to a temporary file
(STORE_RECV_CHUNKED_DATASET), so memory stays bounded whatever an instance's size; the file
is parsed with deferred reads (pixel data is never loaded), checked, and handed to the
segment writer (`segments.SegmentWriter`), which appends it to the association's segment.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE

# pynetdicom.sop_class generates its SOP class names at import: mypy cannot see them.
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomiso_common.dicom import CONNECTION_HANDLERS, is_valid_uid
from dicomiso_common.errors import DicomisoError, Unavailable
from dicomiso_common.models import SegmentIndex
from dicomiso_common.store import Store

from . import fastdimse, reactor
from .leases import LeaseBook
from .manifest import describe
from .segments import SegmentWriter
from .settings import RetrieverSettings
from .workers import WorkerPool

log = logging.getLogger(__name__)

VERIFICATION = Verification
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: Refused, out of resources
NOT_MATCHING = 0xA900  # PS3.4 B.2.3: Error, data set does not match SOP class
CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3: Error, cannot understand
# pynetdicom accepts, per proposed context, the first of *our* syntaxes the PACS offers. An
# archive that offers its stored compressed syntax and the uncompressed ones in one context
# (dcmqrscp -xs) may be unable to decompress, so lossless compressed syntaxes come first,
# then the uncompressed ones, then everything else (lossy: only when nothing else is offered).
_LOSSLESS = [
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
]
_UNCOMPRESSED = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
]
SCP_SYNTAXES = [UID(t) for t in _LOSSLESS + _UNCOMPRESSED] + [
    t for t in ALL_TRANSFER_SYNTAXES if t not in _LOSSLESS + _UNCOMPRESSED
]


def _status(code: int, comment: str) -> Dataset:
    """A C-STORE status with an ErrorComment (PS3.7 C.4.2.1.4; 64 chars, no patient data)."""
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def native_pixel_problem(ds: Dataset, transfer_syntax: UID, file_size: int) -> str | None:
    """Say what is wrong if native Pixel Data is shorter than its attributes promise.

    pydicom reads a truncated file without complaint, so the check is ours (PS3.5 8.1.1).
    The value is not read: a deferred element's header gives its length and where it starts,
    and `file_size` tells whether that many bytes follow (a value that runs past the end of
    the data set is truncated, whatever its header says).
    """
    if transfer_syntax.is_compressed:
        return None
    # A deflated data set is parsed from its inflated copy: positions there are not the
    # file's, so its value is read (rare; every other syntax keeps it unread).
    elem = ds.get_item(0x7FE00010, keep_deferred=not transfer_syntax.is_deflated)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        length = int(elem.length)
        if length != 0xFFFFFFFF and elem.value is None and elem.value_tell + length > file_size:
            return "pixel data runs past the end of the data set"
    else:
        length = len(elem.value or b"")
    if length == 0xFFFFFFFF:
        return "native pixel data has undefined length"
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits, spp = int(ds.BitsAllocated), int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return "pixel data without usable image attributes"
    pixels = rows * cols * spp * frames
    expected = (pixels + 7) // 8 if bits == 1 else pixels * ((bits + 7) // 8)
    if length < expected:
        return f"pixel data {length} bytes, attributes promise {expected}"
    return None


class _AdoptedServer(ThreadedAssociationServer):
    """A receiver worker's server: it runs handed-over connections and listens on nothing
    (the address is the service's, for the association's own address information)."""

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.close()

    def server_activate(self) -> None:
        pass


class StorageSCP:
    """Receive instances for studies a live job asked for; refuse everything else."""

    def __init__(self, settings: RetrieverSettings, store: Store, leases: LeaseBook) -> None:
        self.settings = settings
        self.store = store
        self.leases = leases
        self.writer = SegmentWriter(
            store,
            segment_bytes=settings.segment_bytes,
            idle=settings.segment_idle,
            workers=settings.scp_upload_workers,
            backlog=settings.scp_upload_backlog,
        )
        self._server: ThreadedAssociationServer | None = None
        self._pool: WorkerPool | None = None
        self.on_closed: Callable[[], None] | None = None  # a receiver worker tells the service
        self._lock = threading.Lock()
        self.stored = 0
        self.refused = 0

    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.scp_aet)
        reactor.use(ae)  # event-driven association reactors (reactor.py)
        ae.maximum_pdu_size = s.scp_max_pdu
        ae.network_timeout = s.dicom_network_timeout
        ae.dimse_timeout = s.dicom_dimse_timeout
        ae.maximum_associations = 32
        allowed = s.allowed_calling_aets
        if allowed is not None:
            ae.require_calling_aet = allowed  # others: A-ASSOCIATE-RJ, calling AE not recognised
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, SCP_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        return ae

    def _handlers(self) -> list[evt.EventHandlerType]:
        return [
            *CONNECTION_HANDLERS,
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_CONN_CLOSE, self._association_ended),
        ]

    def start(self) -> None:
        """Listen on DICOMISO_SCP_HOST:DICOMISO_SCP_PORT as DICOMISO_SCP_AET; with
        DICOMISO_SCP_WORKERS, start the receiver workers that take the associations."""
        s = self.settings
        fastdimse.install(s.scp_fast_dimse)
        server = cast(
            ThreadedAssociationServer,
            self._make_ae().start_server(
                (s.scp_host, s.scp_port), block=False, evt_handlers=self._handlers()
            ),
        )
        self._server = server
        if s.scp_workers:
            bound = (str(server.server_address[0]), int(server.server_address[1]))
            pool = self._pool = WorkerPool(s, s.scp_workers, bound)
            self.leases.listeners.append(pool.mirror)
            pool.start()

            def dispatch(
                request: socket.socket | tuple[bytes, socket.socket], address: Any
            ) -> None:
                if isinstance(request, socket.socket) and pool.hand_over(request, address):
                    return
                # no worker ready (starting, restarting): this process runs it
                ThreadedAssociationServer.process_request(server, request, address)

            server.process_request = dispatch  # type: ignore[method-assign,assignment]
        log.info(
            "storage SCP listening",
            extra={"aet": s.scp_aet, "port": self.port, "workers": s.scp_workers},
        )

    def adopt(self, address: tuple[str, int]) -> None:
        """In a receiver worker: be the SCP for connections the service process accepted on
        `address` and hands over (`take_connection`); listen on nothing."""
        fastdimse.install(self.settings.scp_fast_dimse)
        self._server = self._make_ae().make_server(
            address, evt_handlers=self._handlers(), server_class=_AdoptedServer
        )

    def take_connection(self, conn: socket.socket, address: Any) -> None:
        """Run one handed-over connection's association, as the listening SCP would."""
        if self._server is None:
            conn.close()
            return
        self._server.process_request(conn, tuple(address))

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else self.settings.scp_port

    def check_listening(self) -> None:
        """Readiness: raise Unavailable unless the SCP is started and its socket is open.

        (`port` falls back to the configured port, so it cannot tell a stopped SCP.)
        """
        sock = self._server.socket if self._server is not None else None
        if sock is None or sock.fileno() < 0:
            raise Unavailable(f"storage SCP {self.settings.scp_aet} is not listening")
        if self._pool is not None and not self._pool.started.is_set():
            raise Unavailable("the storage SCP's receiver workers are starting")

    def stop(self) -> None:
        if self._server is not None:
            if isinstance(self._server, _AdoptedServer):
                self._server.server_close()
            else:
                self._server.shutdown()
            self._server = None
        if self._pool is not None:
            self._pool.stop(timeout=self.settings.dicom_network_timeout)
            self._pool = None
        self.writer.close()

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the receiver workers (DICOMISO_SCP_WORKERS), none without them."""
        return self._pool.pids if self._pool is not None else []

    def _association_ended(self, event: evt.Event) -> None:
        self.writer.end_stream(event.assoc)
        if self.on_closed is not None:
            self.on_closed()

    def take_descriptions(self, study_uid: str) -> dict[str, SegmentIndex]:
        """Flush this process's segments of the study and wait until they are in the
        bucket; their indexes, so that the manifest need not read them back.

        Raises:
            StoreError: an acknowledged instance did not reach the bucket.
        """
        timeout = self.settings.dicom_dimse_timeout
        ours = self.writer.wait(study_uid, timeout=timeout)
        if self._pool is not None:
            ours.update(self._pool.wait(study_uid, timeout=timeout))
        return ours

    def forget(self, study_uid: str) -> None:
        """Drop what a failed transfer left behind (its segments still land on their own)."""
        self.writer.forget(study_uid)
        if self._pool is not None:
            self._pool.drop(study_uid)

    def handle_store(self, event: evt.Event) -> Dataset | int:
        """EVT_C_STORE handler: check, spool, acknowledge, upload; a failure status otherwise."""
        try:
            return self._store_one(event)
        except DicomisoError as exc:
            log.warning("instance not stored", extra={"reason": str(exc)})
            return _status(OUT_OF_RESOURCES, "storage unavailable, retry later")
        except Exception:  # the SCP handler's edge: answer the peer, never die
            log.exception("C-STORE handler crashed")
            return _status(CANNOT_UNDERSTAND, "internal error while storing")
        finally:
            # A refused instance's spool file: pynetdicom removes it after a server-side
            # C-STORE but not after one received during our own C-GET.
            Path(event.dataset_path).unlink(missing_ok=True)

    def _store_one(self, event: evt.Event) -> Dataset | int:
        req = cast(C_STORE, event.request)
        return self.accept_file(
            Path(event.dataset_path),
            UID(event.context.transfer_syntax),
            claimed_classes=(str(req.AffectedSOPClassUID), str(event.context.abstract_syntax)),
            claimed_uid=str(req.AffectedSOPInstanceUID),
            stream=event.assoc,
        )

    def accept_file(
        self,
        path: Path,
        transfer_syntax: UID | None,
        *,
        claimed_classes: tuple[str, ...] = (),
        claimed_uid: str | None = None,
        study_uid: str | None = None,
        stream: object = None,
    ) -> Dataset | int:
        """Check one received Part 10 file and hand it to the segment writer: SUCCESS, or a refusal
        status whose ErrorComment says why. The C-STORE handler and the DICOMweb retrieval
        both come through here, so an instance passes the same checks whichever way it came.

        Args:
            path: The spool file; on SUCCESS the writer owns it, otherwise the caller.
            transfer_syntax: As negotiated; None: the file's own meta header says.
            claimed_classes: SOP classes the request named (the file must match each).
            claimed_uid: The SOP instance UID the request named.
            study_uid: The study this file must belong to (None: any a live job asked for).
            stream: What it arrived on (the association, the HTTP response): instances of one
                stream and study share a segment, flushed when the stream ends.
        """
        size = path.stat().st_size
        if size > self.settings.scp_max_instance_bytes:
            return self._refuse(OUT_OF_RESOURCES, "instance larger than the configured limit")
        with path.open("rb") as fh:
            try:
                ds = pydicom.dcmread(fh, defer_size=1024)
                sop_class = str(ds.SOPClassUID)
                sop_uid = str(ds.SOPInstanceUID)
                found_study = str(ds.StudyInstanceUID)
                series_uid = str(ds.SeriesInstanceUID)
                if transfer_syntax is None:
                    transfer_syntax = UID(str(ds.file_meta.TransferSyntaxUID))
            except (
                AttributeError,
                ValueError,
                EOFError,
                OSError,
                pydicom.errors.InvalidDicomError,
            ):
                return self._refuse(CANNOT_UNDERSTAND, "data set unreadable or missing UIDs")
            if any(sop_class != c for c in claimed_classes):
                return self._refuse(NOT_MATCHING, "SOP class differs from the request")
            if claimed_uid is not None and sop_uid != claimed_uid:
                return self._refuse(NOT_MATCHING, "SOP instance UID differs from the request")
            if not all(is_valid_uid(u) for u in (sop_uid, found_study, series_uid)):
                return self._refuse(NOT_MATCHING, "illegal UID in the data set")
            if study_uid is not None and found_study != study_uid:
                return self._refuse(NOT_MATCHING, "instance of another study")
            study_uid = found_study
            if not self.leases.wanted(study_uid):
                return self._refuse(NOT_MATCHING, "study not requested by any live job")
            problem = native_pixel_problem(ds, transfer_syntax, size)
            if problem:
                return self._refuse(NOT_MATCHING, problem)
            # The SHA-256 is left to the writer, which hashes the file as it appends it
            # (one read of the instance, not two).
            entry = describe(ds, str(transfer_syntax), size, "", "")
        # Take the spool file from pynetdicom (it tolerates the file being gone when it
        # cleans up); the writer appends it to this association's segment.
        spool = path.with_name(path.name + ".up")
        path.rename(spool)
        self.writer.add(
            study_uid, spool, entry, stream=stream, track=self.leases.is_local(study_uid)
        )
        with self._lock:
            self.stored += 1
        log.debug(
            "instance accepted", extra={"study_uid": study_uid, "sop_uid": sop_uid, "bytes": size}
        )
        return SUCCESS

    def _refuse(self, code: int, reason: str) -> Dataset:
        with self._lock:
            self.refused += 1
        log.warning("instance refused", extra={"status": f"0x{code:04X}", "reason": reason})
        return _status(code, reason)
