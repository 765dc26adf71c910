"""The streaming multipart reader on its own: framing, every split of the input, memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomiso_retriever.multipart import MultipartError, Part, iter_parts, media_type_params

BODY = (
    b"preamble to ignore\r\n"
    b"--b0und\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--b0un not a delimiter\r\n"
    b"--b0und \t\r\nContent-Type: application/dicom\r\nContent-Length: 6\r\n\r\nsecond"
    b"\r\n--b0und\r\n\r\n"  # a part without headers, with empty content
    b"\r\n--b0und--\r\nepilogue to ignore"
)


def _read(parts: Iterator[Part]) -> list[tuple[dict[str, str], bytes]]:
    out = []
    for part in parts:
        out.append((part.headers, part.path.read_bytes()))
        part.path.unlink()
    return out


def test_parts_are_the_same_however_the_body_is_split(tmp_path: Path) -> None:
    """Chunk edges may fall anywhere, inside a delimiter or a header line."""
    expected = [
        ({"content-type": "application/dicom"}, b"first\r\n--b0un not a delimiter"),
        ({"content-type": "application/dicom", "content-length": "6"}, b"second"),
        ({}, b""),
    ]
    for size in (1, 2, 3, 5, 8, 13, len(BODY)):
        chunks = [BODY[i : i + size] for i in range(0, len(BODY), size)]
        parts = iter_parts(chunks, "b0und", max_part_bytes=100, spool_dir=tmp_path)
        assert _read(parts) == expected, size
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "boundary", "says"),
    [
        (BODY, "other", "no part is delimited by the boundary"),
        (BODY[: BODY.index(b"second") + 3], "b0und", "ended inside part 2: truncated"),
        (BODY[: BODY.rindex(b"--b0und--")], "b0und", "truncated"),
        (BODY.replace(b"--b0und \t\r\n", b"--b0undX\r\n"), "b0und", "followed by text"),
        (BODY, "", "no usable boundary"),
    ],
)
def test_malformed_bodies_raise_and_leave_no_spool_file(
    tmp_path: Path, body: bytes, boundary: str, says: str
) -> None:
    with pytest.raises(MultipartError, match=says):
        _read(iter_parts([body], boundary, max_part_bytes=100, spool_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_part_over_the_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MultipartError, match="part 1: larger than the configured limit"):
        _read(iter_parts([BODY], "b0und", max_part_bytes=5, spool_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_memory_stays_bounded_for_a_large_body(tmp_path: Path) -> None:
    """64 MiB in 256 KiB chunks: the reader's own allocations peak at a few chunks."""
    chunk = b"\x5a" * (256 * 1024)
    parts, per_part = 8, 32  # 8 parts of 8 MiB

    def body() -> Iterator[bytes]:
        for _ in range(parts):
            yield b"--bb\r\nContent-Type: application/dicom\r\n\r\n"
            for _ in range(per_part):
                yield chunk
            yield b"\r\n"
        yield b"--bb--\r\n"

    tracemalloc.start()
    try:
        sizes = []
        for part in iter_parts(body(), "bb", max_part_bytes=1 << 30, spool_dir=tmp_path):
            sizes.append(part.size)
            part.path.unlink()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sizes == [per_part * len(chunk)] * parts
    assert peak < 4 * len(chunk), peak


def test_media_type_parameters() -> None:
    media, params = media_type_params(
        'Multipart/Related; type="application/dicom"; boundary="a b:c=d"; transfer-syntax=*'
    )
    assert media == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "a b:c=d", "transfer-syntax": "*"}
