"""ISO 9660 Level 1 and ZIP writers, checked with pycdlib, isoinfo, xorriso and zipfile."""

from __future__ import annotations

import io
import os
import re
import subprocess
import threading
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import pycdlib
import pytest

from dicomiso_packager.iso import DiscFile, ImageError, write_iso, write_zip

VOLUME_ID = "DICOMISO_TEST"
VIEWER_LONG = ("Viewer", "Start Viewer.html")


@dataclass
class Sources:
    """Opens files from disk and counts opens, closes and concurrency."""

    opens: Counter[tuple[str, ...]] = field(default_factory=Counter)
    open_now: int = 0
    max_open: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # prefetch opens in threads

    def opener(
        self, path: tuple[str, ...], src: Path, wrap: Callable[[IO[bytes]], IO[bytes]] | None = None
    ) -> Callable[[], IO[bytes]]:
        def open_() -> IO[bytes]:
            with self.lock:
                self.opens[path] += 1
                self.open_now += 1
                self.max_open = max(self.max_open, self.open_now)
            sources = self

            class Tracked(io.FileIO):
                def close(self) -> None:
                    if not self.closed:
                        with sources.lock:
                            sources.open_now -= 1
                    super().close()

            fp: IO[bytes] = Tracked(src, "rb")
            return wrap(fp) if wrap else fp

        return open_


@dataclass
class Tree:
    files: list[DiscFile]
    data: dict[tuple[str, ...], bytes]
    sources: Sources


def _payload(i: int, size: int) -> bytes:
    return (f"file {i} ".encode() * (size // 7 + 1))[:size]


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """DICOMDIR, README.TXT, IHE_PDI/INDEX.HTM, a viewer file and 5-deep DICOM file IDs."""
    paths = [
        ("DICOMDIR",),
        ("README.TXT",),
        ("IHE_PDI", "INDEX.HTM"),
        ("IHE_PDI", "EMPTY.TXT"),
        ("VIEWER", "START.HTM"),
    ]
    paths += [
        ("DICOM", "PAT00001", "STU00001", f"SER0000{s}", f"IMG0000{i}")
        for s in range(1, 3)
        for i in range(1, 6)
    ]
    sources = Sources()
    files, data = [], {}
    for i, path in enumerate(paths):
        size = 0 if path[-1] == "EMPTY.TXT" else 150_000 + 7_777 * i  # not block aligned
        blob = _payload(i, size)
        src = tmp_path / "src" / f"{i:03d}"
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(blob)
        long_path = VIEWER_LONG if path[0] == "VIEWER" else None
        files.append(DiscFile(path, size, sources.opener(path, src), long_path))
        data[path] = blob
    return Tree(files, data, sources)


def _iso_name(path: tuple[str, ...]) -> str:
    last = path[-1] if "." in path[-1] else path[-1] + "."
    return "/" + "/".join((*path[:-1], last + ";1"))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _write_iso(tree: Tree, tmp_path: Path, *, joliet: bool = False) -> Path:
    iso = tmp_path / "disc.iso"
    with iso.open("wb") as out:
        write_iso(tree.files, out, VOLUME_ID, joliet=joliet)
    return iso


def _run(*args: str | Path) -> str:
    return subprocess.run(
        [str(a) for a in args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def test_iso_bytes_match_and_each_source_is_opened_once(tree: Tree, tmp_path: Path) -> None:
    """Every file reads back byte-exact; each source opened once, one at a time, no leak."""
    fds = _fds()
    iso_path = _write_iso(tree, tmp_path)

    assert _fds() == fds
    assert tree.sources.open_now == 0
    assert tree.sources.max_open == 1
    assert tree.sources.opens == Counter({f.path: 1 for f in tree.files})
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        for path, blob in tree.data.items():
            got = io.BytesIO()
            iso.get_file_from_iso_fp(got, iso_path=_iso_name(path))
            assert got.getvalue() == blob, path
        # pycdlib's own level guess says 3 even for genisoimage images (it counts the
        # "." and ".." records), so check every identifier against Level 1 instead.
        for _, dirs, names in iso.walk(iso_path="/"):
            assert all(re.fullmatch(r"[A-Z0-9_]{1,8}", d) for d in dirs), dirs
            assert all(re.fullmatch(r"[A-Z0-9_]{1,8}\.([A-Z0-9_]{1,3})?;1", n) for n in names), (
                names
            )
    finally:
        iso.close()


def test_isoinfo_sees_level1_names_and_volume_id(tree: Tree, tmp_path: Path) -> None:
    """Names are COMP.;1 / NAME.EXT;1 (PS3.12 F.1.2.1), the volume id is the File-set ID."""
    iso = _write_iso(tree, tmp_path)

    info = _run("isoinfo", "-d", "-i", iso)
    listing = _run("isoinfo", "-l", "-i", iso)
    assert f"Volume id: {VOLUME_ID}\n" in info
    assert "NO Joliet present" in info
    names = {line.split()[-1] for line in listing.splitlines() if line.startswith("-")}
    assert {"DICOMDIR.;1", "README.TXT;1", "INDEX.HTM;1", "START.HTM;1", "IMG00001.;1"} <= names
    assert "Directory listing of /DICOM/PAT00001/STU00001/SER00002/" in listing


def test_xorriso_lists_and_extracts_every_file(tree: Tree, tmp_path: Path) -> None:
    """xorriso finds exactly the tree's files and extracts DICOMDIR byte-exact."""
    iso = _write_iso(tree, tmp_path)

    found = _run("xorriso", "-indev", iso, "-find", "/", "-type", "f")
    listed = {line.strip("'") for line in found.splitlines() if line.startswith("'")}
    assert listed == {"/" + "/".join(p) for p in tree.data}
    out = tmp_path / "DICOMDIR.out"
    _run("xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/DICOMDIR", out)
    assert out.read_bytes() == tree.data[("DICOMDIR",)]


def test_joliet_tree_carries_long_viewer_names(tree: Tree, tmp_path: Path) -> None:
    """With joliet, the viewer file has its long name there; the PVD stays Level 1."""
    iso_path = _write_iso(tree, tmp_path, joliet=True)

    joliet = _run("isoinfo", "-J", "-l", "-i", iso_path)
    assert "Start Viewer.html" in joliet
    assert "Directory listing of /Viewer/" in joliet
    assert "START.HTM;1" in _run("isoinfo", "-l", "-i", iso_path)
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        got = io.BytesIO()
        iso.get_file_from_iso_fp(got, joliet_path="/Viewer/Start Viewer.html")
        assert got.getvalue() == tree.data[("VIEWER", "START.HTM")]
        got = io.BytesIO()
        iso.get_file_from_iso_fp(got, joliet_path="/DICOMDIR")
        assert got.getvalue() == tree.data[("DICOMDIR",)]
    finally:
        iso.close()
    assert tree.sources.opens == Counter({f.path: 1 for f in tree.files})


class _Truncated(io.RawIOBase):
    """A source that stops early, as a dropped S3 connection would (or runs long)."""

    def __init__(self, fp: IO[bytes], delta: int) -> None:
        self._fp = fp
        self._delta = delta
        self._left = os.fstat(fp.fileno()).st_size + delta

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        n = self._left if size is None or size < 0 else min(size, self._left)
        data = self._fp.read(n) if self._delta < 0 else (self._fp.read(n) or b"X" * n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._fp.close()
        super().close()


@pytest.mark.parametrize("delta", [-1000, 1])
@pytest.mark.parametrize("kind", ["iso", "zip"])
def test_wrong_length_source_raises_and_leaves_no_image(
    tree: Tree, tmp_path: Path, delta: int, kind: str
) -> None:
    """A short or long source raises ImageError; the output is emptied, nothing leaks."""
    victim = tree.files[7]
    index = {f.path: i for i, f in enumerate(tree.files)}[victim.path]
    src = tmp_path / "src" / f"{index:03d}"
    tree.files[7] = DiscFile(
        victim.path,
        victim.size,
        tree.sources.opener(victim.path, src, lambda fp: cast(IO[bytes], _Truncated(fp, delta))),
    )
    fds = _fds()
    out_path = tmp_path / f"bad.{kind}"

    with out_path.open("wb") as out, pytest.raises(ImageError, match="IMG"):
        if kind == "iso":
            write_iso(tree.files, out, VOLUME_ID)
        else:
            write_zip(tree.files, out)

    assert out_path.stat().st_size == 0
    assert tree.sources.open_now == 0
    assert _fds() == fds


def _with(
    tree: Tree,
    path: tuple[str, ...],
    long_path: tuple[str, ...] | None = None,
) -> list[DiscFile]:
    return [*tree.files, DiscFile(path, 1, lambda: io.BytesIO(b"x"), long_path)]


@pytest.mark.parametrize(
    "path",
    [
        ("DICOM", "img00001"),  # lower case
        ("DICOM", "IMG000001"),  # 9 characters
        ("DICOM", "A.B", "IMG00001"),  # dot in a directory
        ("README.TEXT",),  # extension of 4
        ("A.B.C",),  # two dots
        ("DICOM", "", "IMG1"),  # empty component
        ("DICOM", "IMG-1"),  # not a d-character
        tuple("ABCDEFGHI"),  # 9 levels
        ("DICOMDIR",),  # duplicate
        ("DICOM",),  # file where a directory is
    ],
)
def test_bad_paths_raise_value_error(tree: Tree, path: tuple[str, ...]) -> None:
    """Names outside Level 1 / PS3.10 File ID rules are refused before anything is read."""
    with pytest.raises(ValueError):
        write_iso(_with(tree, path), io.BytesIO(), VOLUME_ID)
    with pytest.raises(ValueError):
        write_zip(_with(tree, path), io.BytesIO())
    assert not tree.sources.opens


@pytest.mark.parametrize("volume_id", ["lower", "A" * 17, "WITH SPACE"])
def test_bad_volume_id_raises(tree: Tree, volume_id: str) -> None:
    """The volume id is a File-set ID: d-characters, at most 16."""
    with pytest.raises(ValueError, match="volume id"):
        write_iso(tree.files, io.BytesIO(), volume_id)


def test_missing_dicomdir_and_bad_long_name_raise(tree: Tree) -> None:
    """A file-set needs its root DICOMDIR; Joliet names cannot hold '/' or ':'."""
    without = [f for f in tree.files if f.path != ("DICOMDIR",)]
    with pytest.raises(ValueError, match="DICOMDIR"):
        write_iso(without, io.BytesIO(), VOLUME_ID)
    with pytest.raises(ValueError, match="long name"):
        write_iso(
            _with(tree, ("VIEWER", "X.JS"), ("Viewer", "a:b.js")),
            io.BytesIO(),
            VOLUME_ID,
            joliet=True,
        )


def test_zip_holds_the_same_tree_stored(tree: Tree, tmp_path: Path) -> None:
    """zipfile reads back every file byte-exact under "/"-joined names, stored, unencrypted."""
    fds = _fds()
    out = tmp_path / "disc.zip"
    with out.open("wb") as fp:
        write_zip(tree.files, fp)

    assert _fds() == fds
    assert tree.sources.max_open == 1 and tree.sources.open_now == 0
    assert tree.sources.opens == Counter({f.path: 1 for f in tree.files})
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        infos = {i.filename: i for i in zf.infolist()}
        expected = {"/".join(p): b for p, b in tree.data.items()}
        expected["/".join(VIEWER_LONG)] = expected.pop("VIEWER/START.HTM")
        assert set(infos) == set(expected)
        for name, blob in expected.items():
            assert infos[name].compress_type == zipfile.ZIP_STORED
            assert not infos[name].flag_bits & 0x1  # no encryption
            assert zf.read(name) == blob, name


@pytest.mark.parametrize("fmt", ["iso", "zip"])
def test_prefetch_opens_each_source_once_a_few_ahead(tree: Tree, tmp_path: Path, fmt: str) -> None:
    """With prefetch the sources are opened ahead (at most 1 + depth at once), each once,
    all closed at the end, and the image is the same as without."""
    fds = _fds()
    plain, ahead = tmp_path / f"plain.{fmt}", tmp_path / f"ahead.{fmt}"
    write = (lambda f, out, **kw: write_iso(f, out, VOLUME_ID, **kw)) if fmt == "iso" else write_zip
    with plain.open("wb") as out:
        write(tree.files, out)
    tree.sources.opens.clear()
    tree.sources.max_open = 0
    with ahead.open("wb") as out:
        write(tree.files, out, prefetch=3)

    assert _fds() == fds and tree.sources.open_now == 0
    assert tree.sources.opens == Counter({f.path: 1 for f in tree.files})
    assert 1 < tree.sources.max_open <= 4
    if fmt == "iso":
        assert plain.read_bytes() == ahead.read_bytes()
    else:
        with zipfile.ZipFile(ahead) as zf:
            assert {tuple(i.filename.split("/")): zf.read(i) for i in zf.infolist()} == {
                f.long_path or f.path: tree.data[f.path] for f in tree.files
            }
