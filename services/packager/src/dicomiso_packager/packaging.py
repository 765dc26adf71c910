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
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomiso_client import LookupClient, RetrieverClient
from dicomiso_client.models import JobView, Resolved
from dicomiso_common import audit
from dicomiso_common.errors import Conflict, DicomisoError, ObjectMissing
from dicomiso_common.jobs import JobHandle, JobLost, JobRecord
from dicomiso_common.manifests import load_manifest
from dicomiso_common.models import (
    EmailOutcome,
    PackageContents,
    PackageJobRequest,
    PackageJobResult,
    PackageManifest,
    RetrievalJobResult,
    StudyManifest,
    TreeEntry,
)
from dicomiso_common.names import ascii_filename_part
from dicomiso_common.store import Store

from . import disc, iso, mail, media
from .settings import PackagerSettings

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
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


def package_filename(accessions: list[str], patient_name: str, fmt: str) -> str:
    """The legacy rule (README.md, Run the packager): `{ACC}.iso`, or `{NAME}-{ACCS}.iso`.

    Both parts are reduced to ASCII letters and digits; a name with no Latin letters at all
    reduces to nothing, and then the accessions alone name the file.
    """
    accs = "".join(ascii_filename_part(a) for a in accessions)
    if len(accessions) == 1:
        return f"{accs}.{fmt}"
    name = ascii_filename_part(patient_name)
    return f"{name}-{accs}.{fmt}" if name else f"{accs}.{fmt}"


def package_request(record: JobRecord) -> PackageJobRequest:
    """A package job's request, typed."""
    return PackageJobRequest.model_validate(record.request)


def package_result(record: JobRecord) -> PackageJobResult:
    """A package job's result so far, typed (only `retrieval_id` while it runs)."""
    return PackageJobResult.model_validate(record.result)


def package_key(record: JobRecord) -> str:
    """The image's key of a succeeded package job."""
    key = package_result(record).key
    if key is None:
        raise ObjectMissing(f"package {record.id} has no image")
    return key


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
        key = package_result(record).key
        return key is not None and self.store.exists(key)

    def run(self, handle: JobHandle) -> dict[str, Any]:
        """Build the package; its outcome goes into the audit trail (a lost job's does not:
        the replica that took it over reports it)."""
        about = {
            "job_id": handle.id,
            "accession_numbers": list(
                PackageJobRequest.model_validate(handle.record.request).accession_numbers
            ),
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
            study_uids=list(result.study_uids or ()),
            size=result.size,
            email_state=result.email.state if result.email else None,
        )
        return result.to_json()

    def _run(self, handle: JobHandle) -> PackageJobResult:
        request = package_request(handle.record)
        accessions = list(request.accession_numbers)
        handle.update(phase="lookup", flush=True)
        with self.lookup() as lookup:
            resolved = lookup.resolve(accessions)
        one_patient(resolved)
        filename = package_filename(
            accessions, resolved.accessions[0].patient_name.original, request.format
        )
        handle.update(phase="retrieve", flush=True)
        retrieval = self._retrieve(handle, accessions)
        manifests = self._manifests(retrieval)
        workdir = self.settings.work_dir
        with tempfile.TemporaryDirectory(prefix="package-", dir=workdir) as tmp:
            contents = self._build_and_upload(handle, request, manifests, Path(tmp), filename)
        return self._finish(handle, request, contents)

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
            handle.update(result=PackageJobResult(retrieval_id=started.id).to_json())
            view = retriever.wait(
                started.id, timeout=s.retrieve_wait, poll=0.5, on_progress=progress
            )
        if view.state != "succeeded":
            raise RetrievalFailed(f"retrieval failed: {view.error or 'no reason given'}")
        return view

    def _manifests(self, retrieval: JobView) -> list[StudyManifest]:
        result = RetrievalJobResult.model_validate(retrieval.result)
        uids = sorted({st.study_uid for st in result.studies})
        if not uids:
            raise RetrievalFailed("retrieval found no studies")
        manifests = []
        for uid in uids:
            try:
                manifests.append(load_manifest(self.store, uid))
            except ObjectMissing as exc:
                raise RetrievalFailed(
                    f"study {uid} is no longer complete in the bucket; ask again"
                ) from exc
        ids = {(m.patient.id or "").strip() for m in manifests}
        if len(ids) > 1:
            raise Conflict(
                f"the studies carry {len(ids)} different Patient IDs in the PACS; "
                "a disc holds the studies of one patient only"
            )
        return manifests

    def _build_and_upload(
        self,
        handle: JobHandle,
        request: PackageJobRequest,
        manifests: list[StudyManifest],
        tmp: Path,
        filename: str,
    ) -> PackageContents:
        profile = media.PROFILES[request.profile]
        fmt = request.format
        handle.update(phase="build", flush=True)
        size_limit = profile.capacity
        path = tmp / f"image.{fmt}"
        try:
            image = disc.assemble(self.store, manifests, profile, self.settings, tmp, handle)
            with path.open("w+b") as out:
                if fmt == "iso":
                    iso.write_iso(
                        image.files,
                        out,
                        image.volume_id,
                        joliet=image.joliet,
                        prefetch=self.settings.build_prefetch,
                    )
                else:
                    iso.write_zip(image.files, out, prefetch=self.settings.build_prefetch)
                size = out.tell()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise WorkDirFull(
                    "no space left for the image in DICOMISO_WORK_DIR "
                    f"({self.settings.work_dir or 'the system temp dir'})"
                ) from exc
            raise
        handle.check()
        if fmt == "iso" and size > size_limit:
            raise TooLarge(
                f"the image is {size / 1e6:.0f} MB, more than a {profile.medium} "
                f"holds ({size_limit / 1e6:.0f} MB); use a DVD profile or ZIP"
            )
        sha256 = _sha256(path)
        handle.update(phase="upload", flush=True)
        handle.set_counts(image_bytes=size)
        key = image_key(handle.id, fmt)
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
        contents = PackageContents(
            key=key,
            filename=filename,
            size=size,
            sha256=sha256,
            format=fmt,
            profile=profile.name,
            medium=profile.medium,
            fits_medium=size <= size_limit,
            studies=len(manifests),
            study_uids=tuple(m.study_uid for m in manifests),
            instances=image.instances,
            transcoded=tuple(image.transcoded),
            files=len(image.files),
            volume_id=image.volume_id,
        )
        # The package manifest (beside the image, written after it): what is on the disc.
        # Without it the image is not a package: it is removed again, never left looking done.
        package = PackageManifest(
            **dict(contents),
            job_id=handle.id,
            created_at=datetime.now(UTC).isoformat(),
            tree=tuple(TreeEntry(path="/".join(f.path), size=f.size) for f in image.files),
        )
        try:
            self.store.put_json(manifest_key_of(handle.id), package.to_json())
        except DicomisoError:
            self._discard(key)
            raise
        return contents

    def _discard(self, key: str) -> None:
        try:
            self.store.delete(key)
        except DicomisoError:
            log.warning("incomplete package not removed", extra={"key": key})

    def _finish(
        self, handle: JobHandle, request: PackageJobRequest, contents: PackageContents
    ) -> PackageJobResult:
        ttl = int(request.expires_in or self.settings.link_ttl)
        url = self.store.presign_get(contents.key, ttl)
        expires = datetime.fromtimestamp(time.time() + ttl, UTC)
        email = request.email
        outcome = (
            self._mail(email, url, expires, contents)
            if email
            else EmailOutcome(state="not_requested")
        )
        if email:
            audit.record_outcome(
                self.store,
                "packager",
                "email",
                outcome.state,
                job_id=handle.id,
                email=email,
                via="package",
                error=outcome.error,
            )
        return PackageJobResult(
            **dict(contents), download_url=url, expires_at=expires.isoformat(), email=outcome
        )

    def _mail(
        self, to: str, url: str, expires: datetime, contents: PackageContents
    ) -> EmailOutcome:
        """Send the link; a failure is reported in the status and never fails the package."""
        if not mail.mail_enabled(self.settings):
            return EmailOutcome(
                state="failed", error="e-mail is not configured (DICOMISO_SMTP_URL)"
            )
        msg = mail.compose(self.settings, to, url, expires, contents.filename, contents.size)
        try:
            mail.send(self.settings, msg)
        except DicomisoError as exc:
            log.warning("link not mailed", extra={"error": str(exc)})
            return EmailOutcome(state="failed", error=str(exc))
        return EmailOutcome(state="sent", sent_at=datetime.now(UTC).isoformat())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
