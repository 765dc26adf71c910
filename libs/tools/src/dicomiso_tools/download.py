"""Download a finished disc: streamed to a `.part` file, checked, then renamed."""

from __future__ import annotations

import hashlib
import re
from email.message import Message
from pathlib import Path
from typing import Any

import httpx

from .output import FAILED, UNREACHABLE, USAGE, Output

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


def _disposition_name(header: str | None) -> str | None:
    """The file name of a Content-Disposition header, if it is a plain, safe name."""
    if not header:
        return None
    msg = Message()
    msg["content-disposition"] = header
    name = msg.get_filename()
    return name if name and _SAFE_NAME.fullmatch(name) else None


def target_of(path: Path, out: Output) -> Path:
    """Check --download before anything starts: an existing directory or a new file's path."""
    if path.is_dir():
        return path
    if not path.parent.is_dir():
        out.fail(f"--download: directory {path.parent} does not exist", USAGE)
    return path


def download_to(url: str, target: Path, pkg: dict[str, Any], out: Output) -> tuple[Path, int]:
    """Stream the image to `target` (a directory: the server's file name) in 1 MiB chunks.

    The bytes go to a `.part` file first and are checked against the size and SHA-256 the
    packager recorded, so a broken transfer never leaves something that looks like a disc.
    """
    where = httpx.URL(url).copy_with(query=None, fragment=None)  # never print the signature
    fallback = pkg.get("filename") or f"{pkg.get('id', 'package')}.iso"
    try:
        with (
            httpx.Client(
                timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True, trust_env=False
            ) as http,
            http.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                out.fail(
                    f"download from {where} answered {response.status_code} (link "
                    "expired? dicom-iso package again gives a fresh one)",
                    FAILED,
                )
            name = _disposition_name(response.headers.get("content-disposition")) or fallback
            dest = target / name if target.is_dir() else target
            size = _save(response, dest, pkg, out)
    except httpx.TransportError as exc:
        out.fail(f"download unreachable at {where} ({type(exc).__name__})", UNREACHABLE)
    return dest, size


def _save(response: httpx.Response, dest: Path, pkg: dict[str, Any], out: Output) -> int:
    part = dest.with_name(f".{dest.name}.part")
    digest, size = hashlib.sha256(), 0
    total = int(response.headers.get("content-length") or pkg.get("size") or 0) or None
    from rich.progress import Progress  # only when there is something to download

    try:
        with Progress(disable=not out.live, console=out.console) as progress, part.open("wb") as fp:
            task = progress.add_task(f"download {dest.name}", total=total)
            for chunk in response.iter_bytes(1 << 20):
                fp.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                progress.update(task, completed=size)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    expected_sha, expected_size = pkg.get("sha256"), pkg.get("size")
    if (expected_size is not None and size != expected_size) or (
        expected_sha and digest.hexdigest() != expected_sha
    ):
        part.unlink()
        out.fail(
            f"download of {dest.name} is damaged ({size} bytes, sha256 differs from the "
            "packager's); run the command again",
            FAILED,
        )
    part.replace(dest)
    return size
