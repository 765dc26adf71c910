"""A streaming reader of `multipart/related` bodies (RFC 2387, framing by RFC 2046 5.1.1).

WADO-RS answers a study retrieval with one part per instance (PS3.18 8.7.4). The body is read
in chunks and each part's content goes straight to its own spool file, so memory stays at a
chunk plus the delimiter whatever the study's size; disk holds the part being read. A body
that does not frame its parts exactly as its Content-Type announces (another boundary, a part
cut short, no close delimiter) raises `MultipartError`: a study is never judged from half a body.
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_HEADER_BYTES = 16 * 1024  # one part's header block; WADO-RS parts carry a few lines
_CRLF = b"\r\n"


class MultipartError(ValueError):
    """The body is not a well-framed multipart body for the announced boundary."""


@dataclass(frozen=True)
class Part:
    """One part, its content on disk; the consumer owns (and deletes) `path`."""

    index: int  # 1-based position in the body
    headers: dict[str, str]  # names lower-cased
    path: Path
    size: int


def media_type_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into its lower-cased media type and its parameters (RFC 9110 8.3)."""
    media, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        name, sep, val = item.partition("=")
        if sep:
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            params[name.strip().lower()] = val
    return media.strip().lower(), params


def _headers(block: bytes, index: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(_CRLF):
        if not line:
            continue
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise MultipartError(f"part {index}: malformed header line")
        headers[name.strip().lower()] = value.strip()
    return headers


@dataclass
class _Open:
    headers: dict[str, str]
    path: Path
    fh: BinaryIO
    size: int = 0


class _Reader:
    """The parser's state between chunks (one instance per body)."""

    def __init__(self, boundary: str, max_part_bytes: int, spool_dir: Path | None) -> None:
        if not boundary or len(boundary) > 70:  # RFC 2046 5.1.1: 1 to 70 characters
            raise MultipartError("the Content-Type names no usable boundary")
        self.delimiter = _CRLF + b"--" + boundary.encode("latin-1")
        self.max_part_bytes = max_part_bytes
        self.spool_dir = spool_dir
        # A body may start with its first delimiter line (no preamble): give it the CRLF.
        self.buf = bytearray(_CRLF)
        self.state = "preamble"
        self.index = 0
        self.part: _Open | None = None

    def feed(self, chunk: bytes) -> Iterator[Part]:
        self.buf += chunk
        while True:
            if self.state == "preamble":
                at = self.buf.find(self.delimiter)
                if at < 0:  # discard, but keep what may be the start of a delimiter
                    del self.buf[: max(0, len(self.buf) - len(self.delimiter) + 1)]
                    return
                del self.buf[: at + len(self.delimiter)]
                self.state = "delimiter"
            elif self.state == "delimiter":
                if not self._after_delimiter():
                    return
            elif self.state == "headers":
                if not self._headers_block():
                    return
            elif self.state == "body":
                done = self._body()
                if done is None:
                    return
                yield done
            else:  # "end": the epilogue is ignored (RFC 2046 5.1.1)
                self.buf.clear()
                return

    def _after_delimiter(self) -> bool:
        """After `--boundary`: either `--` (the close delimiter) or padding and CRLF."""
        if len(self.buf) < 2:
            return False
        if self.buf[:2] == b"--":
            self.state = "end"
            return True
        eol = self.buf.find(_CRLF)
        if eol < 0:
            if len(self.buf) > 1024:
                raise MultipartError("a delimiter line does not end")
            return False
        if self.buf[:eol].strip(b" \t"):  # only transport padding may follow the boundary
            raise MultipartError("a delimiter is followed by text: another boundary?")
        del self.buf[:eol]  # keep the CRLF: an empty header block ends at CRLF CRLF
        self.state = "headers"
        return True

    def _headers_block(self) -> bool:
        end = self.buf.find(_CRLF + _CRLF)
        if end < 0:
            if len(self.buf) > MAX_HEADER_BYTES:
                raise MultipartError(f"part {self.index + 1}: header block too long")
            return False
        self.index += 1
        headers = _headers(bytes(self.buf[2:end]), self.index)
        del self.buf[: end + 4]
        fd, name = tempfile.mkstemp(prefix="wado-", suffix=".part", dir=self.spool_dir)
        self.part = _Open(headers, Path(name), open(fd, "wb"))  # noqa: SIM115 - closed in _body
        self.state = "body"
        return True

    def _write(self, data: bytes | bytearray) -> None:
        assert self.part is not None  # noqa: S101 - only called in state "body"
        self.part.size += len(data)
        if self.part.size > self.max_part_bytes:
            raise MultipartError(f"part {self.index}: larger than the configured limit")
        self.part.fh.write(data)

    def _body(self) -> Part | None:
        at = self.buf.find(self.delimiter)
        if at < 0:
            keep = len(self.delimiter) - 1
            if len(self.buf) > keep:
                self._write(self.buf[: len(self.buf) - keep])
                del self.buf[: len(self.buf) - keep]
            return None
        self._write(self.buf[:at])
        del self.buf[: at + len(self.delimiter)]
        part, self.part = self.part, None
        assert part is not None  # noqa: S101 - set by _headers_block
        part.fh.close()
        self.state = "delimiter"
        return Part(self.index, part.headers, part.path, part.size)

    def finish(self) -> None:
        """The body ended: it must have ended with the close delimiter."""
        if self.state == "end":
            return
        if self.state == "preamble":
            raise MultipartError("no part is delimited by the boundary the Content-Type announces")
        where = self.index if self.state == "body" else self.index + 1
        raise MultipartError(f"body ended inside part {where}: truncated")

    def discard(self) -> None:
        """Remove the spool file of a part not handed out (an error or an early stop)."""
        if self.part is not None:
            self.part.fh.close()
            self.part.path.unlink(missing_ok=True)
            self.part = None


def iter_parts(
    chunks: Iterable[bytes],
    boundary: str,
    *,
    max_part_bytes: int,
    spool_dir: Path | None = None,
) -> Generator[Part]:
    """Yield each complete part of the body, its content in a spool file the caller deletes.

    Raises:
        MultipartError: the body is not framed by `boundary`, a part is cut short, a part is
            larger than `max_part_bytes`, or the close delimiter is missing.
    """
    reader = _Reader(boundary, max_part_bytes, spool_dir)
    try:
        for chunk in chunks:
            yield from reader.feed(chunk)
        reader.finish()
    finally:
        reader.discard()
