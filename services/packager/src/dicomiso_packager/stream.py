"""An image streamed into the bucket while pycdlib writes it (no local copy of the image).

pycdlib writes through a seekable file: the volume descriptors, then the path tables and
directory records (going back to patch the path tables while it writes the records), then
the files' data in extent order, then one padding byte at the end. Measured and pinned in
`tests/packager/test_stream.py`: every write before the first file's extent lies below it,
and from the first write at or above it on, no write starts below the high-water mark. So
the sink keeps everything until the writer settles (reaches the first file's extent, a few
hundred KiB into the image), and from then on every byte below the high-water mark is final:
each full part is sent while the writer goes on, and the rest is the last part. A write that
breaks the rule fails the image (`ImageError`), so a change in pycdlib can never upload a
stale part.

Memory: the unsent bytes (one part, plus the image's head until it settles) and at most
`in_flight` parts being sent.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dicomiso_common.store import MultipartUpload, Store

from .iso import ImageError

log = logging.getLogger(__name__)

MIN_PART = 5 * 1024 * 1024  # S3: every part but the last holds at least 5 MiB


@dataclass(frozen=True)
class Streamed:
    """What was uploaded: the object's size and the SHA-256 of its bytes (hex)."""

    size: int
    sha256: str


class ImageSink(io.RawIOBase):
    """A write-only, seekable file whose bytes go to `key` as parts, while it is written.

    `settle(offset)` says where the writer's back-and-forth ends (the first file's extent);
    before it is called, or before a write reaches it, nothing is sent. `finish()` sends the
    rest and completes the upload (an image smaller than one part is one PUT); `abort()`,
    or a failed write, leaves nothing under the key. Writes come from one thread.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        *,
        part_size: int,
        content_type: str,
        content_disposition: str | None = None,
        in_flight: int = 1,
        check: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        if part_size < MIN_PART:
            raise ValueError(f"part size {part_size} is below S3's minimum of {MIN_PART}")
        self._store, self._key, self._part_size = store, key, part_size
        self._args: dict[str, Any] = {
            "content_type": content_type,
            "content_disposition": content_disposition,
        }
        self._check = check
        self._buf = bytearray()  # its first `_fill` bytes are the bytes [base, high) not yet sent
        self._fill = 0
        self._spare: list[bytearray] = []  # part buffers back from their upload, reused
        self._base = 0
        self._pos = 0
        self._settle_at: int | None = None
        self._settled = False
        self._digest = hashlib.sha256()
        self._upload: MultipartUpload | None = None
        self._parts = 0
        self._pool = ThreadPoolExecutor(in_flight, thread_name_prefix="image-part")
        self._slots = threading.BoundedSemaphore(in_flight)
        self._sent: list[Future[None]] = []
        self._failed: BaseException | None = None
        self._done = False

    # -- the file interface pycdlib uses -----------------------------------------------------

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._high}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = len(view)
        start, end = self._pos, self._pos + written
        if self._settle_at is not None and not self._settled and start >= self._settle_at:
            self._settled = True
        if start < self._base or (self._settled and start < self._high):
            raise ImageError(
                f"{self._key}: the writer went back to offset {start} below {self._high} "
                "after the image's head was settled; nothing of it is kept"
            )
        while view:
            off = start - self._base
            if self._settled and off >= self._part_size:
                self._send_part()  # a full part, and bytes follow it: it is final
                continue
            n = min(len(view), self._part_size - off) if self._settled else len(view)
            self._put(off, view[:n])
            view, start = view[n:], start + n
        self._pos = end
        return written

    def truncate(self, size: int | None = None) -> int:
        """Only `truncate(0)`, the writers' way of voiding a failed image: abort."""
        if size != 0:
            raise io.UnsupportedOperation("an image sink can only be emptied")
        self.abort()
        return 0

    def settle(self, offset: int) -> None:
        """From the first write at or above `offset` on, the writer only moves forward."""
        self._settle_at = offset

    # -- the upload --------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The image's size so far (its end, once the writer is done)."""
        return self._high

    @property
    def _high(self) -> int:
        return self._base + self._fill

    def _put(self, off: int, data: memoryview) -> None:
        """Copy `data` to `off` in the buffer (which grows only while the head is unsettled,
        or for the first part)."""
        end = off + len(data)
        if not self._buf:
            self._buf = bytearray(max(end, self._part_size))
        elif end > len(self._buf):
            self._buf += bytes(end - len(self._buf))
        if off > self._fill:
            self._buf[self._fill : off] = bytes(off - self._fill)  # a forward seek: zeros
        self._buf[off:end] = data
        self._fill = max(self._fill, end)

    def _send_part(self) -> None:
        """Send the buffer's first part; the writer goes on in a spare buffer.

        A part goes only when bytes follow it: what is left at the end is the last part.
        The buffer itself is sent, never a copy of it, and comes back (`_part_done`) as the
        spare: the sink holds at most `in_flight` + 1 part buffers whatever the image's size.
        """
        self._slots.acquire()  # at most `in_flight` parts in memory on their way
        size = self._part_size
        part, fill = self._buf, self._fill
        if fill < size:
            part[fill:size] = bytes(size - fill)  # the writer seeked past the part's end
        rest = bytes(memoryview(part)[size:fill]) if fill > size else b""  # a long head
        del part[size:]
        self._buf = self._spare.pop() if self._spare else bytearray(size)
        self._fill = 0
        self._base += size
        if rest:
            self._put(0, memoryview(rest))
        self._send(part)

    def _send(self, part: bytearray) -> None:
        """Send `part` as the next part; the caller holds a slot for it."""
        try:
            self._raise_failure()
            if self._check is not None:
                self._check()  # a job that is no longer ours stops sending
            if self._upload is None:
                self._store.abort_uploads(self._key)  # a lost run's upload of this key
                self._upload = self._store.start_multipart(self._key, **self._args)
        except BaseException:
            self._slots.release()
            raise
        self._digest.update(part)
        self._parts += 1
        future = self._pool.submit(self._upload.upload_part, self._parts, part)
        future.add_done_callback(lambda f: self._part_done(f, part))
        self._sent.append(future)

    def _part_done(self, future: Future[None], part: bytearray) -> None:
        if len(part) == self._part_size and not self._done:
            self._spare.append(part)  # before the slot: the writer waiting for it takes it
        self._slots.release()
        if future.cancelled():  # by abort(): nothing to report
            return
        exc = future.exception()
        if exc is not None and self._failed is None:
            self._failed = exc

    def _raise_failure(self) -> None:
        if self._failed is not None:
            raise self._failed

    def finish(self) -> Streamed:
        """Send the rest, wait for every part and complete the upload; abort on failure."""
        try:
            size = self._high
            last, self._buf = self._buf, bytearray()
            del last[self._fill :]
            self._spare.clear()
            if self._upload is None:
                self._store.abort_uploads(self._key)
                self._digest.update(last)
                self._store.put_bytes(
                    self._key,
                    last,
                    metadata={"sha256": self._digest.hexdigest()},
                    sha256_hex=self._digest.hexdigest(),
                    action="uploading",
                    **self._args,
                )
            else:
                self._slots.acquire()
                self._send(last)
                self._wait()
                self._upload.complete()
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._pool.shutdown()
        return Streamed(size, self._digest.hexdigest())

    def _wait(self) -> None:
        for future in self._sent:
            future.exception()  # waits; the first failure is kept by _part_done
        self._raise_failure()

    def abort(self) -> None:
        """Stop, wait for the parts on their way and discard the upload (idempotent)."""
        if self._done:
            return
        self._done = True
        self._buf, self._fill = bytearray(), 0
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._spare.clear()
        if self._upload is not None:
            self._upload.abort()
            log.info("image upload aborted", extra={"key": self._key, "parts": self._parts})

    def close(self) -> None:
        """Closing without `finish()` is a failure: the upload is aborted."""
        if not self.closed:
            self.abort()
        super().close()
