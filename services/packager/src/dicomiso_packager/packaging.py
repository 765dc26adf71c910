"""One package job: lookup, retrieval, the image, upload, link, e-mail.

Every step can run again after a take-over: the lookup and the retrieval are idempotent,
the image is rebuilt in a private temporary directory, and the objects under
`packages/{id}/` are written whole (the image by a multipart upload that appears only when
complete, then its manifest). The job record turns `succeeded` only after both exist, so a
package is never shown as complete while any part of it is missing.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO

from dicomiso_client import LookupClient, RetrieverClient
from dicomiso_client.models import JobView, Resolved
from dicomiso_common import audit
from dicomiso_common.dicom import manifest_key
from dicomiso_common.errors import Conflict, DicomisoError, ObjectMissing
from dicomiso_common.jobs import JobHandle, JobLost, JobRecord
from dicomiso_common.names import ascii_filename_part
from dicomiso_common.store import Store

from . import disc, iso, mail, media, online
from .iso import DiscFile
from .settings import PackagerSettings

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_SIGNED = ("view_url", "expires_at", "download_urls")  # not in the package manifest
CONTENT_TYPES = {"iso": "application/x-iso9660-image", "zip": "application/zip"}


class RetrievalFailed(DicomisoError):
    status = 502
    title = "Retrieval failed"


class WorkDirFull(DicomisoError):
    """The build directory ran out of space (or quota) while the image was being made."""

    status = 507
    title = "Insufficient storage"


class TooLarge(DicomisoError):
    status = 413
    title = "Image too large for the medium"


def image_key(package_id: str, fmt: str) -> str:
    return f"packages/{package_id}/{package_id}.{fmt}"


def manifest_key_of(package_id: str) -> str:
    return f"packages/{package_id}/{package_id}.json"


Names = Callable[[str], str]  # format -> the file's friendly name


def package_filename(accessions: list[str], patient_name: str, fmt: str) -> str:
    """The legacy rule (DESIGN.md Packaging 2): `{ACC}.iso`, or `{NAME}-{ACCS}.iso`.

    Both parts are reduced to ASCII letters and digits; a name with no Latin letters at all
    reduces to nothing, and then the accessions alone name the file.
    """
    accs = "".join(ascii_filename_part(a) for a in accessions)
    if len(accessions) == 1:
        return f"{accs}.{fmt}"
    name = ascii_filename_part(patient_name)
    return f"{name}-{accs}.{fmt}" if name else f"{accs}.{fmt}"


def one_patient(resolved: Resolved) -> None:
    """Refuse accession numbers of more than one patient (never two patients on one disc)."""
    if not resolved.same_patient:
        patients = len({a.patient_id.strip().casefold() for a in resolved.accessions})
        raise Conflict(
            f"the accession numbers belong to {patients} different patients; "
            "a disc holds the studies of one patient only"
        )


class Packaging:
    def __init__(self, settings: PackagerSettings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def lookup(self) -> LookupClient:
        return LookupClient(self.settings.lookup_url, self.settings.outgoing_token())

    def is_current(self, record: JobRecord) -> bool:
        """A succeeded package stays the answer while its image exists (lifecycle expiry)."""
        key = record.result.get("key")
        return isinstance(key, str) and self.store.exists(key)

    def run(self, handle: JobHandle) -> dict[str, Any]:
        """Build the package; its outcome goes into the audit trail (a lost job's does not:
        the replica that took it over reports it)."""
        about = {
            "job_id": handle.id,
            "accession_numbers": handle.record.request.get("accession_numbers"),
            "attempt": handle.record.attempt,
        }
        try:
            result = self._run(handle)
        except JobLost:
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, DicomisoError) else type(exc).__name__
            audit.record_outcome(self.store, "packager", "package", "failed", **about, error=reason)
            raise
        audit.record_outcome(
            self.store,
            "packager",
            "package",
            "succeeded",
            **about,
            study_uids=result.get("study_uids"),
            size=result.get("size"),
            email_state=(result.get("email") or {}).get("state"),
        )
        return result

    def _run(self, handle: JobHandle) -> dict[str, Any]:
        request = handle.record.request
        accessions: list[str] = request["accession_numbers"]
        handle.update(phase="lookup", flush=True)
        with self.lookup() as lookup:
            resolved = lookup.resolve(accessions)
        one_patient(resolved)
        name = resolved.accessions[0].patient_name.original

        def names(fmt: str) -> str:
            return package_filename(accessions, name, fmt)

        handle.update(phase="retrieve", flush=True)
        retrieval = self._retrieve(handle, accessions)
        manifests = self._manifests(retrieval)
        workdir = self.settings.work_dir
        with tempfile.TemporaryDirectory(prefix="package-", dir=workdir) as tmp:
            result = self._build_and_upload(handle, manifests, Path(tmp), names)
        self._finish(handle, result)
        return result

    # -- steps -----------------------------------------------------------------------------

    def _retrieve(self, handle: JobHandle, accessions: list[str]) -> JobView:
        s = self.settings

        def progress(view: JobView) -> None:
            handle.set_counts(
                expected=view.counts.get("expected", 0),
                received=view.counts.get("received", 0) + view.counts.get("reused", 0),
            )
            handle.check()

        with RetrieverClient(s.retriever_url, s.outgoing_token()) as retriever:
            started = retriever.retrieve(accessions, s.retrieve_method)
            handle.update(result={"retrieval_id": started.id})
            view = retriever.wait(
                started.id, timeout=s.retrieve_wait, poll=0.5, on_progress=progress
            )
        if view.state != "succeeded":
            raise RetrievalFailed(f"retrieval failed: {view.error or 'no reason given'}")
        return view

    def _manifests(self, retrieval: JobView) -> list[dict[str, Any]]:
        uids = sorted({st["study_uid"] for st in retrieval.result.get("studies", [])})
        if not uids:
            raise RetrievalFailed("retrieval found no studies")
        manifests = []
        for uid in uids:
            try:
                data, _ = self.store.get_json(manifest_key(uid))
            except ObjectMissing as exc:
                raise RetrievalFailed(
                    f"study {uid} is no longer complete in the bucket; ask again"
                ) from exc
            manifests.append(data)
        ids = {str((m.get("patient") or {}).get("id") or "").strip() for m in manifests}
        if len(ids) > 1:
            raise Conflict(
                f"the studies carry {len(ids)} different Patient IDs in the PACS; "
                "a disc holds the studies of one patient only"
            )
        return manifests

    def _build_and_upload(
        self, handle: JobHandle, manifests: list[dict[str, Any]], tmp: Path, names: Names
    ) -> dict[str, Any]:
        request = handle.record.request
        profile = media.PROFILES[request["profile"]]
        fmt = request["format"]
        handle.update(phase="build", flush=True)
        with self._space():
            image = disc.assemble(self.store, manifests, profile, self.settings, tmp, handle)
        formats = (fmt,) if not self.settings.view_online else ("zip", "iso")
        paths = self._write_images(handle, image, tmp, formats)
        size = paths[fmt].stat().st_size
        if fmt == "iso" and size > profile.capacity:
            raise TooLarge(
                f"the image is {size / 1e6:.0f} MB, more than a {profile.medium} "
                f"holds ({profile.capacity / 1e6:.0f} MB); use a DVD profile or ZIP"
            )
        handle.update(phase="upload", flush=True)
        handle.set_counts(image_bytes=sum(p.stat().st_size for p in paths.values()))
        made: list[str] = []  # removed again if the package cannot be completed
        try:
            return self._publish(handle, manifests, image, paths, names, made)
        except DicomisoError:
            for key in made:
                self._discard(key)
            raise

    def _publish(
        self,
        handle: JobHandle,
        manifests: list[dict[str, Any]],
        image: disc.Disc,
        paths: dict[str, Path],
        names: Names,
        made: list[str],
    ) -> dict[str, Any]:
        """Upload the images, then the page (links signed now), then the package manifest
        (what is on the disc and what the page shows): only that makes it a package."""
        request = handle.record.request
        profile = media.PROFILES[request["profile"]]
        fmt = request["format"]
        downloads = {}
        for f, path in paths.items():
            made.append(image_key(handle.id, f))
            downloads[f] = self._upload(handle.id, f, path, names(f))
        main = downloads[fmt]
        size = main["size"]
        result = {
            **main,
            "format": fmt,
            "profile": profile.name,
            "medium": profile.medium,
            "fits_medium": size <= profile.capacity,
            "studies": len(manifests),
            "study_uids": [m["study_uid"] for m in manifests],
            "instances": image.instances,
            "transcoded": image.transcoded,
            "files": len(image.files),
            "volume_id": image.volume_id,
            "downloads": list(downloads.values()),
        }
        view = None
        if self.settings.view_online:
            view = {
                "studies": online.studies_of(manifests),
                "downloads": [{"format": f, "key": downloads[f]["key"]} for f in ("iso", "zip")],
            }
            made.append(online.view_key(handle.id))
            result |= online.publish(self.store, self.settings, handle.id, view, self._ttl(handle))
        self.store.put_json(
            manifest_key_of(handle.id),
            {
                **{k: v for k, v in result.items() if k not in _SIGNED},
                "job_id": handle.id,
                "created_at": datetime.now(UTC).isoformat(),
                "tree": [{"path": "/".join(f.path), "size": f.size} for f in image.files],
                "view": view,
            },
        )
        return result

    def _write_images(
        self, handle: JobHandle, image: disc.Disc, tmp: Path, formats: tuple[str, ...]
    ) -> dict[str, Path]:
        """Write each format into `tmp`. With both, the ZIP is written from the sources (S3,
        transcoded files) and the ISO then from the local ZIP: S3 is read once."""
        paths = {f: tmp / f"image.{f}" for f in formats}
        with self._space():
            first = formats[0]
            with paths[first].open("w+b") as out:
                self._write(image, image.files, out, first, self.settings.build_prefetch)
            if len(formats) > 1:
                with zipfile.ZipFile(paths[first]) as archive, paths["iso"].open("w+b") as out:
                    self._write(image, _from_zip(image.files, archive, handle), out, "iso", 0)
        handle.check()
        return paths

    @contextmanager
    def _space(self) -> Iterator[None]:
        """A full build directory (or quota) becomes WorkDirFull."""
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise WorkDirFull(
                    "no space left for the image in DICOMISO_WORK_DIR "
                    f"({self.settings.work_dir or 'the system temp dir'})"
                ) from exc
            raise

    @staticmethod
    def _write(
        image: disc.Disc, files: list[DiscFile], out: BinaryIO, fmt: str, ahead: int
    ) -> None:
        if fmt == "iso":
            iso.write_iso(files, out, image.volume_id, joliet=image.joliet, prefetch=ahead)
        else:
            iso.write_zip(files, out, prefetch=ahead)

    def _upload(self, package_id: str, fmt: str, path: Path, filename: str) -> dict[str, Any]:
        sha256 = _sha256(path)
        key = image_key(package_id, fmt)
        # The friendly name travels as the object's Content-Disposition: neither the key nor
        # the signed URL holds it (URLs end up in proxy logs and mail archives).
        # A run that lost S3 mid-upload cannot abort its multipart upload; the key is this
        # job's, so whoever runs it next clears what is left before uploading again.
        self.store.abort_uploads(key)
        self.store.upload_path(
            key,
            path,
            content_type=CONTENT_TYPES[fmt],
            content_disposition=f'attachment; filename="{filename}"',
            metadata={"sha256": sha256},
        )
        return {
            "format": fmt,
            "key": key,
            "filename": filename,
            "size": path.stat().st_size,
            "sha256": sha256,
        }

    def _ttl(self, handle: JobHandle) -> int:
        return int(handle.record.request.get("expires_in") or self.settings.link_ttl)

    def fresh_links(self, record: JobRecord) -> dict[str, Any]:
        """Sign the package's links again (staff page "New link", e-mail again).

        With an online page, the page is re-written with fresh signatures first, so the new
        view_url, the new download links and every instance URL expire together.
        """
        ttl = int(record.request.get("expires_in") or self.settings.link_ttl)
        r = record.result
        view = None
        if self.settings.view_online and r.get("view_url"):
            manifest, _ = self.store.get_json(manifest_key_of(record.id))
            view = manifest.get("view")
        if view:
            links = online.publish(self.store, self.settings, record.id, view, ttl)
            urls = links.pop("download_urls")
        else:
            expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
            links = {"view_url": None, "expires_at": expires_at.isoformat()}
            urls = {
                d["format"]: self.store.presign_get(d["key"], ttl) for d in r.get("downloads") or []
            }
            urls[r["format"]] = self.store.presign_get(r["key"], ttl)
        return {
            **links,
            "download_url": urls[r["format"]],
            "downloads": [{**d, "url": urls.get(d["format"])} for d in r.get("downloads") or []],
            "filename": r.get("filename"),
            "size": r.get("size"),
        }

    def _discard(self, key: str) -> None:
        try:
            self.store.delete(key)
        except DicomisoError:
            log.warning("incomplete package not removed", extra={"key": key})

    def _finish(self, handle: JobHandle, result: dict[str, Any]) -> None:
        urls = result.pop("download_urls", None)
        if urls is None:  # no online page: the link alone is signed now
            ttl = self._ttl(handle)
            result["expires_at"] = (datetime.now(UTC) + timedelta(seconds=ttl)).isoformat()
            urls = {result["format"]: self.store.presign_get(result["key"], ttl)}
        result["download_url"] = urls[result["format"]]
        result["downloads"] = [{**d, "url": urls.get(d["format"])} for d in result["downloads"]]
        email = handle.record.request.get("email")
        result["email"] = self._mail(email, result) if email else {"state": "not_requested"}
        if email:
            audit.record_outcome(
                self.store,
                "packager",
                "email",
                result["email"]["state"],
                job_id=handle.id,
                email=email,
                via="package",
                error=result["email"].get("error"),
            )

    def _mail(self, to: str, result: dict[str, Any]) -> dict[str, Any]:
        """Send the link; a failure is reported in the status and never fails the package."""
        if not mail.mail_enabled(self.settings):
            return {"state": "failed", "error": "e-mail is not configured (DICOMISO_SMTP_URL)"}
        msg = mail.compose(self.settings, to, result)
        try:
            mail.send(self.settings, msg)
        except DicomisoError as exc:
            log.warning("link not mailed", extra={"error": str(exc)})
            return {"state": "failed", "error": str(exc)}
        return {"state": "sent", "sent_at": datetime.now(UTC).isoformat()}


def _from_zip(files: list[DiscFile], archive: zipfile.ZipFile, handle: JobHandle) -> list[DiscFile]:
    """The same files, each read back from the local ZIP (stored entries, CRC checked)."""

    def opener(name: str) -> Callable[[], IO[bytes]]:
        def open_() -> IO[bytes]:
            handle.check()
            return archive.open(name)

        return open_

    return [replace(f, opener=opener("/".join(f.long_path or f.path))) for f in files]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
