"""The writer of received instances: checked instances appended to segment objects.

Every way an instance reaches us (the Storage SCP for C-MOVE and C-GET; a WADO-RS retrieval
later) hands it to one `SegmentWriter`:

    writer.add(study_uid, spool_path, description, stream=..., track=...)
        append the checked instance (a file on local disk, taken over: the writer removes
        it) to the open segment of (study, stream); `description` is its manifest entry
        whose key, offset and sha256 the writer fills in (it hashes the file as it appends it)
    writer.end_stream(stream)   the association (or HTTP response) ended: flush its segments
    writer.wait(study_uid, timeout) -> {index key: SegmentIndex}
        flush the study's open segments and wait until every tracked one is in the bucket

A segment is a spool file on local disk (never in memory) until it holds
`DICOMISO_SEGMENT_BYTES`, its stream ends, or it was idle for `DICOMISO_SEGMENT_IDLE`
seconds; then a worker puts it as one object (`segments/{StudyUID}/{id}.seg`, a single PUT
whose SHA-256 S3 verifies) and, after that landed, its index (`{id}.json`, `SegmentIndex`).
Only an index makes its instances count, so a replica that dies mid-segment leaves nothing
half-visible: its unflushed instances are not in the bucket, the study is short, and the
retry moves them again. A study is judged complete only after `wait()` saw each tracked
segment land, so an acknowledged instance that never reached the bucket fails its job.

One PUT rather than a multipart upload: 1 request per segment instead of 2 + parts, and the
same bounded memory (botocore streams the file). Measured: docs/benchmarks.md, "Lever 2".
The backlog is bounded: when `backlog` full segments wait for a worker, the next C-STORE
that fills one waits, holding local disk to about (backlog + open streams) x segment size.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dicomiso_common.dicom import segment_index_key, segment_key
from dicomiso_common.errors import StoreError
from dicomiso_common.models import InstanceDescription, SegmentIndex
from dicomiso_common.store import Store

log = logging.getLogger(__name__)

BACKLOG_WAIT = 8.0  # seconds a C-STORE may wait for a free flush slot
_CHUNK = 1024 * 1024


@dataclass
class _Open:
    """One segment being filled: a spool file and what it holds."""

    study_uid: str
    segment_id: str
    file: IO[bytes]
    track: bool
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    described: list[InstanceDescription] = field(default_factory=list)
    touched: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sealed: bool = False
    sop_uids: set[str] = field(default_factory=set)


class SegmentWriter:
    """Appends instances to per-(study, stream) segments and flushes them in the background."""

    def __init__(
        self,
        store: Store,
        *,
        segment_bytes: int,
        idle: float,
        workers: int,
        backlog: int,
        spool_dir: Path | None = None,
    ) -> None:
        self._store = store
        self._segment_bytes = segment_bytes
        self._idle = idle
        self._spool_dir = spool_dir
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="segment")
        self._slots = threading.BoundedSemaphore(backlog)
        self._open: dict[tuple[str, object], _Open] = {}
        self._pending: dict[str, list[Future[tuple[str, SegmentIndex]]]] = {}
        self._inflight: set[Future[tuple[str, SegmentIndex]]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._idler = threading.Thread(target=self._flush_idle, name="segment-idle", daemon=True)
        self._idler.start()

    def add(
        self,
        study_uid: str,
        spool: Path,
        description: InstanceDescription,
        *,
        stream: object,
        track: bool,
    ) -> None:
        """Append one checked instance (the spool file is taken over and removed).

        Raises:
            StoreError: the flush backlog stayed full for BACKLOG_WAIT seconds (S3 too slow):
                the SCP answers 0xA700 before the PACS's own C-STORE timeout (Orthanc: 10 s).
        """
        place = (study_uid, stream)
        sealed: list[tuple[_Open, Future[tuple[str, SegmentIndex]]]] = []
        try:
            while True:
                with self._lock:
                    seg = self._open.get(place)
                    if seg is None:
                        seg = self._open[place] = self._new(study_uid, track)
                with seg.lock:
                    if seg.sealed:  # flushed meanwhile (idle, stream end): take a new one
                        continue
                    self._append(seg, spool, description)
                    if seg.size >= self._segment_bytes:
                        with self._lock:
                            if self._open.get(place) is seg:
                                sealed.append(self._seal(place))
                break
        finally:
            spool.unlink(missing_ok=True)
        for seg, future in sealed:
            self._flush(seg, future)

    def end_stream(self, stream: object) -> None:
        """The association (or response) ended: flush every segment it was filling."""
        with self._lock:
            sealed = [self._seal(k) for k in list(self._open) if k[1] is stream]
        for seg, future in sealed:
            self._flush(seg, future, wait_for_slot=False)

    def wait(self, study_uid: str, timeout: float) -> dict[str, SegmentIndex]:
        """Flush the study's open segments, wait for its tracked ones; their indexes by key.

        Raises:
            StoreError: some did not reach the bucket (the study must not be called complete).
        """
        with self._lock:
            sealed = [self._seal(k) for k in list(self._open) if k[0] == study_uid]
        for seg, future in sealed:
            self._flush(seg, future, wait_for_slot=False)
        with self._lock:
            futures = self._pending.pop(study_uid, [])
        finished, late = futures_wait(futures, timeout=timeout)
        failed = [f for f in finished if f.exception() is not None]
        if late or failed:
            first = failed[0].exception() if failed else None
            reason = str(first) if first else "timed out"
            raise StoreError(
                f"study {study_uid}: {len(late) + len(failed)} of {len(futures)} segments "
                f"of received instances could not be written to the bucket ({reason})"
            )
        return dict(f.result() for f in finished)

    def flush_all(self, timeout: float) -> None:
        """Flush every open segment and wait for every segment in flight (tests, shutdown)."""
        with self._lock:
            sealed = [self._seal(k) for k in list(self._open)]
        for seg, future in sealed:
            self._flush(seg, future, wait_for_slot=False)
        with self._lock:
            inflight = list(self._inflight)
        futures_wait(inflight, timeout=timeout)

    def forget(self, study_uid: str) -> None:
        """Stop tracking the study (its segments still land on their own)."""
        with self._lock:
            self._pending.pop(study_uid, None)

    def close(self) -> None:
        """Flush everything open (instances already acknowledged to the PACS), then stop."""
        self._stop.set()
        with self._lock:
            sealed = [self._seal(k) for k in list(self._open)]
        for seg, future in sealed:
            self._flush(seg, future, wait_for_slot=False)
        self._pool.shutdown(wait=True)

    # -- inside ----------------------------------------------------------------------------

    def _new(self, study_uid: str, track: bool) -> _Open:
        spool = tempfile.TemporaryFile(prefix="segment-", dir=self._spool_dir)  # noqa: SIM115
        return _Open(study_uid, uuid.uuid4().hex, spool, track)

    @staticmethod
    def _append(seg: _Open, spool: Path, description: InstanceDescription) -> None:
        if description.entry.sop_uid in seg.sop_uids:
            return  # sent twice on one association (a PACS retrying): stored once
        seg.sop_uids.add(description.entry.sop_uid)
        offset = seg.size
        instance = hashlib.sha256()
        with spool.open("rb") as src:
            while chunk := src.read(_CHUNK):
                seg.file.write(chunk)
                seg.digest.update(chunk)
                instance.update(chunk)
                seg.size += len(chunk)
        entry = description.entry.model_copy(
            update={
                "key": segment_key(seg.study_uid, seg.segment_id),
                "offset": offset,
                "sha256": instance.hexdigest(),
            }
        )
        seg.described.append(description.model_copy(update={"entry": entry}))
        seg.touched = time.monotonic()

    def _seal(self, place: tuple[str, object]) -> tuple[_Open, Future[tuple[str, SegmentIndex]]]:
        """Take a segment out of the open ones (caller holds the lock); tracked at once, so
        a `wait` that starts now already waits for it."""
        seg = self._open.pop(place)
        future: Future[tuple[str, SegmentIndex]] = Future()
        self._inflight.add(future)
        future.add_done_callback(self._landed)
        if seg.track:
            self._pending.setdefault(seg.study_uid, []).append(future)
        return seg, future

    def _landed(self, future: Future[tuple[str, SegmentIndex]]) -> None:
        with self._lock:
            self._inflight.discard(future)

    def _flush(
        self,
        seg: _Open,
        future: Future[tuple[str, SegmentIndex]],
        *,
        wait_for_slot: bool = True,
    ) -> None:
        if not self._slots.acquire(timeout=BACKLOG_WAIT if wait_for_slot else None):
            seg.file.close()
            exc = StoreError("segment backlog full: the bucket is not keeping up")
            future.set_exception(exc)
            raise exc
        try:
            self._pool.submit(self._put, seg, future)
        except RuntimeError:  # shutting down
            self._slots.release()
            seg.file.close()
            exc = StoreError("retriever is shutting down")
            future.set_exception(exc)
            raise exc from None

    def _put(self, seg: _Open, future: Future[tuple[str, SegmentIndex]]) -> None:
        try:
            with seg.lock:  # an add that took the segment before it was sealed finishes first
                seg.sealed = True
                future.set_result(self._store_segment(seg))
        except Exception as exc:  # noqa: BLE001 - the worker's edge: the waiting job sees it
            future.set_exception(exc)
        finally:
            seg.file.close()
            self._slots.release()

    def _store_segment(self, seg: _Open) -> tuple[str, SegmentIndex]:
        key = segment_key(seg.study_uid, seg.segment_id)
        index_key = segment_index_key(seg.study_uid, seg.segment_id)
        index = SegmentIndex(
            study_uid=seg.study_uid,
            segment_key=key,
            size=seg.size,
            sha256=seg.digest.hexdigest(),
            instances=tuple(seg.described),
        )
        try:
            seg.file.flush()
            seg.file.seek(0)
            self._store.put_bytes(
                key, seg.file, content_type="application/octet-stream", sha256_hex=index.sha256
            )
            self._store.put_json(index_key, index.to_json())
        except StoreError:
            log.warning(
                "segment upload failed", extra={"key": key, "instances": len(seg.described)}
            )
            raise
        log.debug("segment stored", extra={"key": key, "instances": len(seg.described)})
        return index_key, index

    def _flush_idle(self) -> None:
        tick = min(max(self._idle / 4, 0.05), 1.0)
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                idle = [k for k, s in self._open.items() if now - s.touched >= self._idle]
                segs = [self._seal(k) for k in idle]
            for seg, future in segs:
                try:
                    self._flush(seg, future, wait_for_slot=False)
                except StoreError:
                    log.warning("idle segment not flushed", extra={"study_uid": seg.study_uid})
