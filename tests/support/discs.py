"""Open a disc image the way a reader would, and check it with the real DICOM tools."""

from __future__ import annotations

import io
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pycdlib
import pydicom

from support.dcmtk import dcmtk_bin, dcmtk_env


@dataclass
class DiscTree:
    """Every file of an image: path (as on the medium, no ';1') -> bytes."""

    files: dict[str, bytes]

    def dicomdir(self) -> pydicom.FileDataset:
        return pydicom.dcmread(io.BytesIO(self.files["DICOMDIR"]))

    def referenced(self) -> dict[str, str]:
        """SOP Instance UID -> path, from the DICOMDIR's leaf records."""
        out = {}
        for rec in self.dicomdir().DirectoryRecordSequence:
            if "ReferencedFileID" in rec:
                fid = rec.ReferencedFileID
                parts = [fid] if isinstance(fid, str) else list(fid)
                out[str(rec.ReferencedSOPInstanceUIDInFile)] = "/".join(parts)
        return out

    def extract(self, into: Path) -> Path:
        for name, data in self.files.items():
            target = into.joinpath(*name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return into


def download(url: str, into: Path) -> httpx.Response:
    """GET a presigned link into a file, streamed."""
    with httpx.stream("GET", url, timeout=60, trust_env=False) as response:
        response.raise_for_status()
        with into.open("wb") as out:
            for chunk in response.iter_bytes(1024 * 1024):
                out.write(chunk)
    return response


def read_iso(path: Path) -> DiscTree:
    """Read every file of the ISO 9660 primary volume with pycdlib."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    files: dict[str, bytes] = {}
    try:
        for root, _dirs, names in iso.walk(iso_path="/"):
            for name in names:
                full = f"{root.rstrip('/')}/{name}"
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, iso_path=full)
                clean = full.lstrip("/").split(";")[0].rstrip(".")
                files[clean] = buf.getvalue()
    finally:
        iso.close()
    return DiscTree(files)


def read_zip(path: Path) -> DiscTree:
    with zipfile.ZipFile(path) as zf:
        return DiscTree({i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()})


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines dicom3tools' dciodvfy flags as errors for one file (empty = valid)."""
    run = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def dcentvfy(dicomdir: Path) -> subprocess.CompletedProcess[str]:
    """dicom3tools' file-set checker, run from the file-set's root."""
    return subprocess.run(
        ["dcentvfy", dicomdir.name],
        cwd=dicomdir.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def dcmdump(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_bin("dcmdump"), str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=dcmtk_env(),
    )
