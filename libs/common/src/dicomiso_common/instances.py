"""Read stored instances through the study manifest: the one read path of every consumer.

An entry is either a byte range of a segment object (`offset` set: the retriever's layout,
docs/architecture.md "Bucket layout") or a whole object (manifests written before segments).
Consumers never build keys: they hand entries to `InstanceSource.open` (a stream of exactly
the instance's bytes) or `open_instances` (one after another), and `read_head` for a header.

Fewer, larger reads: an `InstanceSource` told the order its entries will be read in joins
entries that lie back to back in one segment into one ranged GET (a run, at most
`max_run` bytes); each instance's stream then reads its part of the run's body. When the
order jumps about within a segment (the PACS sent the instances in another order than the
disc lists them), the span of the segment those entries need is fetched with one GET into
a spool file on local disk, never into memory, and deleted once its last instance was
read. A stream opened out of the planned order (or after a run moved past it) gets its own
ranged GET: a miss, never an error. Every stream checks the instance's SHA-256 as its last
byte is read, so a damaged segment fails the reader (`DamagedInstance`) instead of reaching
a disc or a peer.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

from .errors import DicomisoError
from .models import InstanceEntry
from .store import Store

MAX_RUN = 64 * 1024 * 1024  # bytes one ranged GET may span
_SKIP_CHUNK = 1024 * 1024


class DamagedInstance(DicomisoError):
    """An instance's bytes in the bucket are not those its manifest entry describes."""

    status = 500
    title = "Damaged instance in the bucket"


def byte_range(entry: InstanceEntry) -> tuple[int, int] | None:
    """The entry's inclusive byte range within its object (None: the whole object)."""
    if entry.offset is None:
        return None
    return entry.offset, entry.offset + entry.size - 1


def read_head(store: Store, entry: InstanceEntry, probe: int) -> bytes:
    """The first `probe` bytes of the instance (fewer when it is shorter): one ranged GET."""
    start = entry.offset or 0
    end = start + (min(probe, entry.size) if entry.offset is not None else probe) - 1
    data, _ = store.get_bytes(entry.key, byte_range=(start, end))
    return data


class _Run:
    """Entries back to back in one segment, read by one ranged GET opened on first use."""

    def __init__(self, store: Store, entries: list[InstanceEntry]) -> None:
        self.store = store
        self.key = entries[0].key
        self.start = int(entries[0].offset or 0)
        self.end = int(entries[-1].offset or 0) + entries[-1].size  # exclusive
        self.lock = threading.Lock()
        self.pos = self.start
        self.body: IO[bytes] | None = None
        self.users = len(entries)

    def ensure_open(self) -> None:
        with self.lock:
            if self.body is None and self.pos == self.start:
                self.body = self.store.open(self.key, byte_range=(self.start, self.end - 1))

    def claim(self, offset: int) -> bool:
        """Position the run at `offset` for a reader (forward only); False: it is past it."""
        if self.pos > offset or offset >= self.end:
            return False
        if self.body is None:
            self.body = self.store.open(self.key, byte_range=(self.pos, self.end - 1))
        while self.pos < offset:  # an entry skipped by its reader: discard its bytes
            chunk = self.body.read(min(_SKIP_CHUNK, offset - self.pos))
            if not chunk:
                return False
            self.pos += len(chunk)
        return True

    def read(self, n: int) -> bytes:
        assert self.body is not None  # noqa: S101 - claim() opened it
        data = self.body.read(n)
        self.pos += len(data)
        return data

    def done_with(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users <= 0 and self.body is not None:
                self.body.close()
                self.body = None


class _Spooled:
    """A span of one segment whose entries are read out of order: one GET to a spool file."""

    def __init__(self, store: Store, entries: list[InstanceEntry]) -> None:
        self.store = store
        self.key = entries[0].key
        self.start = min(int(e.offset or 0) for e in entries)
        self.end = max(int(e.offset or 0) + e.size for e in entries)  # exclusive
        self.lock = threading.Lock()
        self.file: IO[bytes] | None = None
        self.users = len(entries)

    def pread(self, offset: int, n: int) -> bytes:
        with self.lock:
            if self.file is None:
                spool = tempfile.TemporaryFile(prefix="segment-")  # noqa: SIM115 - kept open
                with self.store.open(self.key, byte_range=(self.start, self.end - 1)) as body:
                    shutil.copyfileobj(body, spool, _SKIP_CHUNK)
                spool.flush()  # os.pread reads the file, not the buffer's last bytes
                self.file = spool
            return os.pread(self.file.fileno(), n, offset - self.start)

    def done_with(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users <= 0 and self.file is not None:
                self.file.close()
                self.file = None


class _Checked(io.RawIOBase):
    """Exactly one instance's bytes, checked against its SHA-256 when the last is read."""

    def __init__(self, store: Store, entry: InstanceEntry, run: _Run | _Spooled | None) -> None:
        super().__init__()
        self._store, self._entry, self._run = store, entry, run
        self._own: IO[bytes] | None = None
        self._left = entry.size
        self._digest = hashlib.sha256() if entry.sha256 else None
        self._shared = False  # reading from the run's body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        want = min(len(buffer), self._left)
        data = self._read(want)
        if not data:
            raise DamagedInstance(
                f"{self._entry.key}: instance {self._entry.sop_uid} ends {self._left} bytes early"
            )
        self._left -= len(data)
        if self._digest is not None:
            self._digest.update(data)
            if self._left == 0 and self._digest.hexdigest() != self._entry.sha256:
                raise DamagedInstance(
                    f"{self._entry.key}: instance {self._entry.sop_uid} does not match its SHA-256"
                )
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _read(self, want: int) -> bytes:
        run = self._run
        if isinstance(run, _Spooled):
            return run.pread(int(self._entry.offset or 0) + self._entry.size - self._left, want)
        if run is not None and self._own is None:
            with run.lock:
                offset = int(self._entry.offset or 0) + self._entry.size - self._left
                if self._shared or run.claim(offset):
                    self._shared = True
                    if run.pos == offset:
                        return run.read(want)
                self._shared = False
            self._release_run()
        if self._own is None:
            done = self._entry.size - self._left
            rng = byte_range(self._entry)
            if rng is not None:
                rng = (rng[0] + done, rng[1])
            elif done:
                rng = (done, self._entry.size - 1)
            self._own = self._store.open(self._entry.key, byte_range=rng)
        return self._own.read(want)

    def _release_run(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            run.done_with()

    def close(self) -> None:
        if not self.closed:
            self._release_run()
            if self._own is not None:
                self._own.close()
        super().close()


def _runs(entries: Sequence[InstanceEntry], max_run: int) -> list[list[InstanceEntry]]:
    runs: list[list[InstanceEntry]] = []
    for e in entries:
        if e.offset is None:
            continue
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and last.key == e.key
            and int(last.offset or 0) + last.size == e.offset
            and e.offset + e.size - int(runs[-1][0].offset or 0) <= max_run
        ):
            runs[-1].append(e)
        else:
            runs.append([e])
    return runs


def _ascending(entries: list[InstanceEntry]) -> bool:
    """Read in the order they lie in the segment (gaps allowed)?"""
    return all(
        int(a.offset or 0) < int(b.offset or 0) for a, b in zip(entries, entries[1:], strict=False)
    )


def _spans(entries: list[InstanceEntry], max_run: int) -> list[list[InstanceEntry]]:
    """The entries of one segment by offset, cut into spans of at most `max_run` bytes."""
    spans: list[list[InstanceEntry]] = []
    for e in sorted(entries, key=lambda e: int(e.offset or 0)):
        if spans and int(e.offset or 0) + e.size - int(spans[-1][0].offset or 0) <= max_run:
            spans[-1].append(e)
        else:
            spans.append([e])
    return spans


class InstanceSource:
    """Opens manifest entries; entries in `order` that lie back to back share a ranged GET.

    Thread-safe: streams may be opened ahead from other threads (the image writer's
    prefetch); only reading a run's streams out of order costs extra requests.
    """

    def __init__(
        self, store: Store, order: Iterable[InstanceEntry] = (), *, max_run: int = MAX_RUN
    ) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._run_of: dict[tuple[str, int], _Run | _Spooled] = {}
        self._first: set[tuple[str, int]] = set()
        planned = [e for e in order if e.offset is not None]
        by_key: dict[str, list[InstanceEntry]] = {}
        for e in planned:
            by_key.setdefault(e.key, []).append(e)
        in_order = [e for e in planned if _ascending(by_key[e.key])]
        for run in _runs(in_order, max_run):
            if len(run) < 2:
                continue
            shared = _Run(store, run)
            self._first.add((run[0].key, int(run[0].offset or 0)))
            for e in run:
                self._run_of[(e.key, int(e.offset or 0))] = shared
        for entries in by_key.values():
            if len(entries) > 1 and not _ascending(entries):
                for part in _spans(entries, max_run):
                    spooled = _Spooled(store, part)
                    for e in part:
                        self._run_of[(e.key, int(e.offset or 0))] = spooled

    def open(self, entry: InstanceEntry) -> IO[bytes]:
        """A stream of exactly the instance's bytes (DamagedInstance if they are not its)."""
        place = (entry.key, int(entry.offset or 0))
        with self._lock:
            run = self._run_of.pop(place, None) if entry.offset is not None else None
        if isinstance(run, _Run) and place in self._first:
            run.ensure_open()  # the request goes out now (prefetch), the body is read later
        return io.BufferedReader(_Checked(self._store, entry, run), 1024 * 1024)


def open_instances(
    store: Store, entries: Sequence[InstanceEntry]
) -> Iterator[tuple[InstanceEntry, IO[bytes]]]:
    """Yield each entry with its stream, in order; read each before taking the next (each
    stream is closed when the next is taken)."""
    source = InstanceSource(store, entries)
    for entry in entries:
        with source.open(entry) as stream:
            yield entry, stream
