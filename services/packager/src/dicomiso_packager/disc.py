"""Assemble the tree of a disc from study manifests: what goes where, and where it comes from.

Nothing here holds a study in memory. Instances that go on the disc byte-exact are opened
from S3 only when the image writer reaches them; instances whose transfer syntax the
profile does not allow are transcoded first into the build directory; DICOMDIR, README.TXT
and the web pages are generated; the few headers the DICOMDIR needs beyond the manifest
(non-image leaves) come from ranged GETs.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomiso_common.instances import InstanceSource, read_head
from dicomiso_common.jobs import JobHandle
from dicomiso_common.models import InstanceEntry, StudyManifest
from dicomiso_common.store import Store

from . import dicomdir, media, pdi, viewer
from .iso import DiscFile
from .settings import PackagerSettings, contact_line

log = logging.getLogger(__name__)

HEADER_PROBE = 256 * 1024  # one ranged GET holds the header of nearly every instance
_SPOOL_IN_MEMORY = 8 * 1024 * 1024


@dataclass
class Disc:
    files: list[DiscFile]
    volume_id: str
    instances: int
    transcoded: list[str] = field(default_factory=list)  # SOP Instance UIDs
    joliet: bool = False


def volume_id(package_id: str) -> str:
    """File-set ID and ISO volume identifier: 16 d-characters (PS3.10 8.5, ECMA-119 7.4.1)."""
    return f"DICOMISO{package_id[:8].upper()}"


def set_volume_id(package_id: str, number: int, total: int) -> str:
    """Disc `number` of `total`: `1A2B3C4D_2OF3`, at most 15 of the 16 characters."""
    return f"{package_id[:8].upper()}_{number}OF{total}"


def _copy(src: IO[bytes], dst: IO[bytes]) -> None:
    shutil.copyfileobj(src, dst, 1024 * 1024)


def read_header(store: Store, entry: InstanceEntry) -> Dataset:
    """An instance's header (no pixel data) from S3: a ranged GET, or the whole instance
    when the header is longer than the probe (large SR, big private groups)."""
    data = read_head(store, entry, HEADER_PROBE)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        ds.SOPInstanceUID  # noqa: B018 - force parsing to the end of the probe's header
        return ds
    except (InvalidDicomError, EOFError, AttributeError, ValueError, OSError):
        source = InstanceSource(store)
        with tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY) as spool, source.open(entry) as body:
            _copy(body, spool)
            spool.seek(0)
            return pydicom.dcmread(spool, stop_before_pixels=True)


class _Assembler:
    def __init__(
        self,
        store: Store,
        manifests: list[StudyManifest],
        profile: media.Profile,
        settings: PackagerSettings,
        tmp: Path,
        handle: JobHandle,
        disc_set: pdi.DiscSet | None = None,
    ) -> None:
        self.disc_set = disc_set
        self.store, self.manifests, self.profile = store, manifests, profile
        self.settings, self.tmp, self.handle = settings, tmp, handle
        self.entries = [e for m in manifests for e in m.instances]
        self.local: dict[str, Path] = {}  # sop_uid -> transcoded file in tmp
        self.final_syntax: dict[str, str] = {}
        self.single = InstanceSource(store)  # instances read on their own (transcode, preview)
        self.source = self.single  # set in run(): what goes on the disc byte-exact, in order
        self._lock = threading.Lock()

    def run(self) -> Disc:
        file_ids = dicomdir.assign_file_ids(self.manifests)
        with ThreadPoolExecutor(self.settings.build_workers, thread_name_prefix="build") as pool:
            todo = [
                e for e in self.entries if media.needs_transcode(self.profile, e.transfer_syntax)
            ]
            self.handle.set_counts(instances=len(self.entries), to_transcode=len(todo))
            for entry, syntax in zip(todo, pool.map(self._transcode, todo), strict=True):
                self.final_syntax[entry.sop_uid] = syntax
            self.handle.check()
            for e in self.entries:
                self.final_syntax.setdefault(e.sop_uid, e.transfer_syntax)
            previews = self._previews(pool)
            headers = self._headers(pool)
        self.handle.check()
        # In disc order, the instances copied as they are: back to back in a segment, they
        # share one ranged GET (dicomiso_common.instances).
        self.source = InstanceSource(
            self.store, [e for e in self.entries if e.sop_uid not in self.local]
        )
        vid = self.disc_set.volume_id if self.disc_set else volume_id(self.handle.id)
        directory = dicomdir.build_dicomdir(
            self.manifests, file_ids, self.final_syntax, lambda e: headers[e.sop_uid], vid
        )
        now = datetime.now(UTC)
        viewer_files = self._viewer()
        viewer_name = "VIEWER" if viewer_files else None
        viewer_page = next(
            (f.path for f in viewer_files if f.path == ("VIEWER", viewer.ENTRY)), None
        )
        generated: list[tuple[tuple[str, ...], bytes]] = [
            (("DICOMDIR",), directory),
            (
                ("README.TXT",),
                pdi.readme_text(
                    self.manifests,
                    institution=self.settings.institution_name,
                    profile=self.profile.name,
                    created_at=now,
                    viewer=viewer_name,
                    viewer_page=viewer_page,
                    contact=contact_line(self.settings),
                    lang=self.settings.language,
                    disc_set=self.disc_set,
                ),
            ),
            *pdi.web_pages(
                self.manifests,
                institution=self.settings.institution_name,
                previews={s: p for s, (p, _) in previews.items()},
                created_at=now,
                viewer=viewer_name,
                viewer_page=viewer_page,
                lang=self.settings.language,
                disc_set=self.disc_set,
            ),
            *[(path, jpeg) for path, jpeg in previews.values()],
        ]
        files = [DiscFile(path, len(data), _bytes_opener(data)) for path, data in generated]
        files += [self._instance_file(e, file_ids[e.sop_uid]) for e in self.entries]
        files += viewer_files
        files = [replace(f, opener=self._counted(_call, f.opener)) for f in files]
        self.handle.set_counts(files=len(files), files_written=0)
        return Disc(files, vid, len(self.entries), sorted(self.local), joliet=bool(viewer_files))

    # -- instances -------------------------------------------------------------------------

    def _instance_file(self, entry: InstanceEntry, file_id: tuple[str, ...]) -> DiscFile:
        sop = entry.sop_uid
        local = self.local.get(sop)
        if local is not None:
            return DiscFile(file_id, local.stat().st_size, _path_opener(local))
        return DiscFile(file_id, entry.size, lambda: self.source.open(entry))

    def _counted(self, opener: Callable[[Any], IO[bytes]], arg: Any) -> Callable[[], IO[bytes]]:
        """An opener that counts progress and stops the build when the job was lost."""

        def open_() -> IO[bytes]:
            self.handle.check()
            self._bump("files_written")
            return opener(arg)

        return open_

    def _transcode(self, entry: InstanceEntry) -> str:
        sop = entry.sop_uid
        target = self.tmp / f"{sop}.dcm"  # a validated UID: digits and dots
        with tempfile.TemporaryFile(dir=self.tmp) as src:
            with self.single.open(entry) as body:
                _copy(body, src)
            src.seek(0)
            with target.open("wb") as dst:
                syntax = media.transcode(src, dst)
        with self._lock:
            self.local[sop] = target
        self._bump("transcoded")
        return syntax

    def _bump(self, name: str) -> None:
        with self._lock:
            self.handle.set_counts(**{name: self.handle.record.counts.get(name, 0) + 1})

    def _open_instance(self, entry: InstanceEntry) -> IO[bytes]:
        local = self.local.get(entry.sop_uid)
        return local.open("rb") if local is not None else self.single.open(entry)

    # -- what the DICOMDIR and the web pages need --------------------------------------------

    def _headers(self, pool: ThreadPoolExecutor) -> dict[str, Dataset]:
        wanted = [
            e
            for m in self.manifests
            for e in m.instances
            if dicomdir.needs_header(e.sop_class_uid, m.series_info(e.series_uid).modality)
        ]

        def one(entry: InstanceEntry) -> Dataset:
            local = self.local.get(entry.sop_uid)
            if local is not None:
                return pydicom.dcmread(local, stop_before_pixels=True)
            return read_header(self.store, entry)

        return {e.sop_uid: ds for e, ds in zip(wanted, pool.map(one, wanted), strict=True)}

    def _previews(self, pool: ThreadPoolExecutor) -> dict[str, tuple[tuple[str, ...], bytes]]:
        """One JPEG per image series, from its middle instance (series without: none)."""
        picks = [
            (uid, c)
            for m in self.manifests
            for uid in sorted(m.series)
            if (c := pdi.preview_candidate(m, uid)) is not None
        ]

        def one(entry: InstanceEntry) -> bytes | None:
            with tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=str(self.tmp)) as spool:
                with self._open_instance(entry) as body:
                    _copy(body, spool)
                spool.seek(0)
                return pdi.series_preview(spool)

        out: dict[str, tuple[tuple[str, ...], bytes]] = {}
        for (uid, _), jpeg in zip(picks, pool.map(one, [c for _, c in picks]), strict=True):
            if jpeg is not None:
                out[uid] = (("IHE_PDI", f"SER{len(out) + 1:05d}.JPG"), jpeg)
        return out

    def _viewer(self) -> list[DiscFile]:
        """The viewer under VIEWER/: 8.3 names on the Level 1 tree (a name that already is
        one is kept, so VIEWER/VIEWER.HTM is the same path on every tree), its own names in
        the Joliet tree (and the ZIP), never inside DICOM/ or IHE_PDI/."""
        root = viewer.viewer_source(self.settings)
        if root is None:
            return []
        files: list[DiscFile] = []
        dirs: dict[tuple[str, ...], tuple[str, ...]] = {(): ("VIEWER",)}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).parts
            short = dirs[()]
            for depth in range(1, len(rel)):
                key = rel[:depth]
                if key not in dirs:
                    dirs[key] = (*dirs[key[:-1]], f"D{len(dirs):07d}")
                short = dirs[key]
            ext = "".join(c for c in path.suffix[1:].upper() if c.isalnum())[:3]
            name = f"F{len(files):07d}" + (f".{ext}" if ext else "")
            if short == ("VIEWER",) and pdi.is_name_83(rel[-1]) and rel[-1][:1] != "F":
                name = rel[-1]  # kept: cannot collide with the F0000000 names made here
            files.append(
                DiscFile(
                    (*short, name),
                    path.stat().st_size,
                    _path_opener(path),
                    long_path=("VIEWER", *rel),
                )
            )
        return files


def _call(opener: Callable[[], IO[bytes]]) -> IO[bytes]:
    return opener()


def _bytes_opener(data: bytes) -> Callable[[], IO[bytes]]:
    return lambda: io.BytesIO(data)


def _path_opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")


def assemble(
    store: Store,
    manifests: list[StudyManifest],
    profile: media.Profile,
    settings: PackagerSettings,
    tmp: Path,
    handle: JobHandle,
    disc_set: pdi.DiscSet | None = None,
) -> Disc:
    """Plan the disc: every file with its size and a lazy opener; transcodes done in `tmp`.

    With `disc_set` it is one disc of a set: its volume id, and README.TXT and INDEX.HTM
    say which disc it is and what the others hold.
    """
    return _Assembler(store, manifests, profile, settings, tmp, handle, disc_set).run()
