"""Write a DICOM file-set as an ISO 9660 image or a ZIP file, streaming file by file.

Most files come from the bucket, so each one is described by a `DiscFile` whose
opener starts one streaming GET; the writers open a file only when they reach it and
close it right after its last byte, so at most one source is open at a time and memory
does not grow with the study. Every file must yield exactly its declared size: a short
(or long) source raises `ImageError` and the output is truncated, so a failed build can
never look like a complete disc.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, BinaryIO, ClassVar, cast

import pycdlib
from pycdlib.pycdlibexception import PyCdlibInvalidInput

from dicomiso_common.errors import DicomisoError

log = logging.getLogger(__name__)

COPY_BUFFER = 1 << 20  # bytes per read/write; large blocks keep Python overhead negligible
MAX_DEPTH = 8  # PS3.10 8.2 / PS3.12 F.1.2.1: at most 8 components / directory levels
MAX_VOLUME_ID = 16  # File-set ID is CS (PS3.5 6.2: 16 chars); also the Joliet UCS-2 limit
MAX_FILE_SIZE = 0xFFFFF800  # Level 1 allows one extent per file (ECMA-119 10.1)
MAX_JOLIET_NAME = 64  # Joliet: 64 UCS-2 characters per name
BLOCK = 2048  # ECMA-119 logical block size, pycdlib's for new images

_DIR_NAME = re.compile(r"[A-Z0-9_]{1,8}")
# A DICOM File ID component has no extension (PS3.12 F.1.2.1); generated files such as
# README.TXT and INDEX.HTM (IHE RAD TF-3 PDI) use one "." and an extension of <= 3.
_FILE_NAME = re.compile(r"[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?")
_VOLUME_ID = re.compile(r"[A-Z0-9_]*")
_JOLIET_BAD = re.compile(r'[\x00-\x1f*/:;?\\"<>|]')  # Joliet and Windows forbid these


class ImageError(DicomisoError):
    """A source did not deliver the bytes its manifest declared; the image is void.

    502: the object store (upstream) sent a short or long body, e.g. a truncated GET or
    an object replaced mid-build. Retrying the package build is the remedy.
    """

    status: ClassVar[int] = 502
    title: ClassVar[str] = "Image source incomplete"


@dataclass(frozen=True)
class DiscFile:
    """One file of the disc, opened lazily.

    Attributes:
        path: ISO 9660 Level 1 path components, e.g. ``("DICOM", "PAT00001", "IMG00001")``
            or ``("README.TXT",)``.
        size: Exact number of bytes the opener yields.
        opener: Returns a fresh binary stream; called once, when the writer reaches
            this file, and closed right after its last byte.
        long_path: Optional long, mixed-case path for files outside the DICOM
            File-set (a viewer bundle); used for the Joliet tree and the ZIP.
    """

    path: tuple[str, ...]
    size: int
    opener: Callable[[], IO[bytes]]
    long_path: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        """The path joined with "/", for messages (generated ids, never patient data)."""
        return "/".join(self.path)


class _Prefetch:
    """Open the next `depth` sources while the writer copies the current one.

    Opening an S3 object is a round trip (request, response headers) before the first byte;
    done ahead, it overlaps with copying. Only the opened streams wait, not their bodies, so
    memory stays at a few socket buffers. `order` is the order the writer will read in; a
    reader opened out of that order simply opens its own source (a miss, never an error).
    """

    def __init__(self, order: Sequence[_LazyReader], depth: int) -> None:
        self.order = list(order)
        self.depth = depth
        self.index = {id(r): i for i, r in enumerate(self.order)}
        self.pool = ThreadPoolExecutor(depth, thread_name_prefix="prefetch")
        self.futures: dict[int, Future[IO[bytes]]] = {}
        self.scheduled = 0

    def open(self, reader: _LazyReader) -> IO[bytes]:
        i = self.index.get(id(reader), -1)
        if i < 0:
            return reader.file.opener()
        for j in range(max(self.scheduled, i + 1), min(i + 1 + self.depth, len(self.order))):
            self.futures[j] = self.pool.submit(self.order[j].file.opener)
        self.scheduled = max(self.scheduled, i + 1 + self.depth)
        future = self.futures.pop(i, None)
        return future.result() if future is not None else reader.file.opener()

    def close(self) -> None:
        """Stop prefetching and close every stream opened ahead but never used."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for future in self.futures.values():
            if not future.cancelled() and future.exception() is None:
                future.result().close()
        self.futures.clear()


class _LazyReader(io.RawIOBase):
    """A forward-only stream over one DiscFile that checks its length.

    pycdlib keeps the object given to ``add_fp`` until ``write_fp``, then calls
    ``seek(0)`` and ``read(blocksize)`` until it has ``size`` bytes (its copy loop
    silently zero-fills a short source, hence the check here). The source is opened on
    the first read, verified to end exactly at ``size`` and closed at once. ``fileno()``
    is left unsupported so nothing tries ``sendfile`` on it.
    """

    def __init__(self, file: DiscFile) -> None:
        super().__init__()
        self._file = file
        self._fp: IO[bytes] | None = None
        self._pos = 0
        self._done = False
        self.opened = 0
        self.prefetch: _Prefetch | None = None

    @property
    def file(self) -> DiscFile:
        return self._file

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self._pos + offset}.get(whence)
        if target != self._pos:
            raise io.UnsupportedOperation(f"{self._file.label}: stream is forward-only")
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._file.size - self._pos
        want = remaining if size is None or size < 0 else min(size, remaining)
        if want == 0:
            self.finish()
            return b""
        fp = self._source()
        data = fp.read(want)
        if len(data) < want:  # a stream may return less than asked before its end
            parts = [data]
            got = len(data)
            while got < want and (more := fp.read(want - got)):
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self._pos += len(data)
        if len(data) < want:
            self._release()
            raise ImageError(
                f"{self._file.label}: source ended after {self._pos} of {self._file.size} bytes"
            )
        if self._pos == self._file.size:
            self.finish()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        """Check that the source ends exactly at ``size``, then close it."""
        if self._done:
            return
        if self._pos != self._file.size:
            raise ImageError(
                f"{self._file.label}: only {self._pos} of {self._file.size} bytes were written"
            )
        extra = self._source().read(1)
        self._release()
        self._done = True
        if extra:
            raise ImageError(f"{self._file.label}: source is longer than {self._file.size} bytes")

    def close(self) -> None:
        self._release()
        super().close()

    def _source(self) -> IO[bytes]:
        if self._fp is None:
            if self.opened:
                raise ImageError(f"{self._file.label}: source would be opened twice")
            self.opened += 1
            self._fp = (
                self.prefetch.open(self) if self.prefetch is not None else self._file.opener()
            )
        return self._fp

    def _release(self) -> None:
        if self._fp is not None:
            fp, self._fp = self._fp, None
            fp.close()


def check_volume_id(volume_id: str) -> None:
    """Reject a Volume Identifier that is not a valid File-set ID.

    PS3.12 F.1.1 puts the File-set ID into the PVD Volume Identifier (32 d-characters,
    ECMA-119 8.4.11, space padded, all spaces when empty). The File-set ID is CS, at
    most 16 characters (PS3.5 6.2), which is also what a Joliet SVD can hold.
    """
    if len(volume_id) > MAX_VOLUME_ID or not _VOLUME_ID.fullmatch(volume_id):
        raise ValueError(
            f"volume id {volume_id!r}: use at most {MAX_VOLUME_ID} characters from A-Z 0-9 _"
        )


def check_files(files: Sequence[DiscFile]) -> None:
    """Reject a tree that is not a valid Level 1 DICOM file-set layout.

    Raises:
        ValueError: a bad component, depth, size, duplicate or missing DICOMDIR.
    """
    dirs: set[tuple[str, ...]] = set()
    paths: set[tuple[str, ...]] = set()
    long_paths: set[tuple[str, ...]] = set()
    for f in files:
        _check_path(f)
        if f.long_path is not None:
            _check_long_path(f)
            key = tuple(c.casefold() for c in f.long_path)  # Windows folds case
            if key in long_paths:
                raise ValueError(f"{f.label}: long path {'/'.join(f.long_path)!r} repeats")
            long_paths.add(key)
        if f.path in paths:
            raise ValueError(f"{f.label}: path appears twice")
        paths.add(f.path)
        dirs.update(f.path[:i] for i in range(1, len(f.path)))
    if clash := paths & dirs:
        raise ValueError(f"{'/'.join(min(clash))}: used both as a file and a directory")
    if ("DICOMDIR",) not in paths:
        raise ValueError("the file-set needs a DICOMDIR at the root (PS3.10 8.6)")


def _check_path(f: DiscFile) -> None:
    if not 1 <= len(f.path) <= MAX_DEPTH:
        raise ValueError(f"{f.label!r}: a path has 1 to {MAX_DEPTH} components")
    for comp in f.path[:-1]:
        if not _DIR_NAME.fullmatch(comp):
            raise ValueError(f"{f.label!r}: directory {comp!r} must be 1-8 of A-Z 0-9 _")
    if not _FILE_NAME.fullmatch(f.path[-1]):
        raise ValueError(
            f"{f.label!r}: file name {f.path[-1]!r} must be 1-8 of A-Z 0-9 _, "
            "optionally '.' and 1-3 more"
        )
    if not 0 <= f.size <= MAX_FILE_SIZE:
        raise ValueError(f"{f.label}: size {f.size} is outside 0..{MAX_FILE_SIZE}")


def _check_long_path(f: DiscFile) -> None:
    assert f.long_path is not None
    if not 1 <= len(f.long_path) <= MAX_DEPTH:
        raise ValueError(f"{f.label}: a long path has 1 to {MAX_DEPTH} components")
    for comp in f.long_path:
        if (
            not comp
            or len(comp) > MAX_JOLIET_NAME
            or comp in (".", "..")
            or _JOLIET_BAD.search(comp)
            or not comp.isprintable()
        ):
            raise ValueError(
                f"{f.label}: long name {comp!r} needs 1-{MAX_JOLIET_NAME} "
                'printable characters without * / : ; ? \\ " < > |'
            )


def write_iso(
    files: Sequence[DiscFile],
    out: BinaryIO,
    volume_id: str,
    *,
    joliet: bool = False,
    prefetch: int = 0,
    settle: Callable[[int], None] | None = None,
) -> None:
    """Write an ISO 9660 Level 1 image of ``files`` to ``out`` (seekable).

    PS3.12 F.2.2 (CD-R) and P (DVD, ISO 9660 side) ask for Level 1: each File ID
    component becomes ``COMP.;1`` (no extension, version 1, F.1.2.1), exactly what
    genisoimage writes. With ``joliet`` a Joliet supplementary tree (ECMA-119 SVD)
    is added: the same files under their ``long_path`` if given, else their 8.3 name.
    The primary volume stays Level 1, so DICOM readers see the same file-set. With
    ``prefetch`` > 0 that many sources are opened ahead, in the order of their extents
    (the order pycdlib writes them). ``settle`` is told, before the first byte, the offset
    of the first file's data: pycdlib goes back only below it, and only before it gets
    there (`stream.ImageSink` relies on it; pinned in tests/packager/test_stream.py).

    Raises:
        ValueError: a name, size, depth or volume id breaks the rules above.
        ImageError: a source yielded fewer or more bytes than declared; ``out`` is
            truncated to zero bytes before this is raised.
    """
    check_volume_id(volume_id)
    check_files(files)
    started = time.monotonic()
    readers = [_LazyReader(f) for f in files]
    iso = pycdlib.PyCdlib()
    ahead: _Prefetch | None = None
    try:
        iso.new(
            interchange_level=1,
            vol_ident=volume_id,
            app_ident_str="DICOMISO",
            joliet=3 if joliet else None,
        )
        for d in _directories(f.path for f in files):
            iso.add_directory(iso_path=_iso_dir(d))
        if joliet:
            for d in _directories(f.long_path or f.path for f in files):
                iso.add_directory(joliet_path=_joliet(d))
        for f, reader in zip(files, readers, strict=True):
            # pycdlib only calls seek() and read() on it (inode.InodeOpenData).
            iso.add_fp(
                cast(BinaryIO, reader),
                f.size,
                iso_path=_iso_file(f.path),
                joliet_path=_joliet(f.long_path or f.path) if joliet else None,
            )
        extent = {  # get_record lays the image out first (pycdlib's reshuffle)
            id(r): iso.get_record(iso_path=_iso_file(f.path)).extent_location()
            for f, r in zip(files, readers, strict=True)
        }
        # pycdlib writes the files' data in the order they were added (`inodes`), but lays
        # them out walking the directory tree: the PDI pages and the viewer, added before or
        # after DICOM/, lie elsewhere. In extent order the data is written front to back.
        # (An empty file has no data and no extent of its own.)
        iso.inodes.sort(key=lambda ino: ino.extent_location() if ino.get_data_length() else -1)
        if settle is not None:
            data = [extent[id(r)] for f, r in zip(files, readers, strict=True) if f.size]
            settle(min(data, default=0) * BLOCK)
        if prefetch > 0:
            ahead = _Prefetch(sorted(readers, key=lambda r: extent[id(r)]), prefetch)
            for reader in readers:
                reader.prefetch = ahead
        iso.write_fp(out, blocksize=COPY_BUFFER)
        for reader in readers:  # empty files are never read by pycdlib; check them too
            reader.finish()
        out.flush()
    except PyCdlibInvalidInput as exc:
        _discard(out)
        raise ValueError(f"pycdlib refused the tree: {exc}") from exc
    except BaseException:
        _discard(out)
        raise
    finally:
        if ahead is not None:
            ahead.close()
        for reader in readers:
            reader.close()
        iso.close()
    log.info(
        "iso image written",
        extra={
            "files": len(files),
            "joliet": joliet,
            "bytes": sum(f.size for f in files),
            "seconds": round(time.monotonic() - started, 3),
        },
    )


def write_zip(files: Sequence[DiscFile], out: BinaryIO, *, prefetch: int = 0) -> None:
    """Write the same file-set as a ZIP file (PS3.12 Annex V) to ``out``.

    Entries are named by their components joined with "/" (V.1.2: the hierarchy is
    kept, File IDs have no extension, DICOMDIR at the root); a viewer file with a
    ``long_path`` uses it, since files outside the DICOM File-set may be present (V.1.1).

    Raises:
        ValueError: see `check_files`.
        ImageError: a source yielded fewer or more bytes than declared; ``out`` is
            truncated (when it can be) and no central directory is written.
    """
    check_files(files)
    started = time.monotonic()
    stamp = time.localtime()[:6]
    readers = [_LazyReader(f) for f in files]
    ahead = _Prefetch(readers, prefetch) if prefetch > 0 else None
    for reader in readers:
        reader.prefetch = ahead
    # Stored, never deflated: Annex V takes the ZIP profile of ISO/IEC 21320-1, which
    # allows only methods 0 (stored) and 8 (deflate) and no encryption (quoted in
    # PS3.3 Annex P.3). Deflate runs at tens of MB/s and gains little on pixel data
    # that is already JPEG/J2K-compressed, so a 500 MB study would take many times as
    # long as a copy; stored entries stream at disk speed with a CRC-32 per file.
    zf = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
    dst: IO[bytes] | None = None
    try:
        for f, reader in zip(files, readers, strict=True):
            info = zipfile.ZipInfo("/".join(f.long_path or f.path), date_time=stamp)
            info.file_size = f.size
            info.external_attr = 0o444 << 16
            dst = zf.open(info, "w", force_zip64=f.size > zipfile.ZIP64_LIMIT)
            shutil.copyfileobj(reader, dst, COPY_BUFFER)
            reader.finish()
            dst.close()
        zf.close()  # only now is the central directory written
    except BaseException:
        # Close the failed entry first (its close, or later its __del__, writes a
        # header), detach the ZipFile (its __del__ would write a central directory
        # listing the short entry), then empty the output.
        if dst is not None:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                dst.close()
        zf.fp = None
        _discard(out)
        raise
    finally:
        if ahead is not None:
            ahead.close()
        for reader in readers:
            reader.close()
    log.info(
        "zip written",
        extra={
            "files": len(files),
            "bytes": sum(f.size for f in files),
            "seconds": round(time.monotonic() - started, 3),
        },
    )


def _directories(paths: Iterable[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Every directory on the way to ``paths``, parents first."""
    dirs = {p[:i] for p in paths for i in range(1, len(p))}
    return sorted(dirs, key=lambda d: (len(d), d))


def _iso_dir(components: tuple[str, ...]) -> str:
    return "/" + "/".join(components)


def _iso_file(components: tuple[str, ...]) -> str:
    """``/DICOM/.../IMG00001.;1`` or ``/README.TXT;1`` (PS3.12 F.1.2.1, ECMA-119 7.5)."""
    name = components[-1] if "." in components[-1] else components[-1] + "."
    return "/" + "/".join((*components[:-1], name + ";1"))


def _joliet(components: tuple[str, ...]) -> str:
    return "/" + "/".join(components)


def _discard(out: BinaryIO) -> None:
    """Empty a failed output so a partial image cannot pass for a complete one."""
    try:
        out.seek(0)
        out.truncate(0)
    except (OSError, ValueError):
        log.warning("could not truncate a failed image; the caller must delete it")
