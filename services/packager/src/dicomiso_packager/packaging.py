"""One package job: lookup, retrieval, the image, upload, link, e-mail.

Every step can run again after a take-over: the lookup and the retrieval are idempotent,
the image is rebuilt (the ISO streamed into a multipart upload while it is written, the ZIP
in a private temporary directory), and the objects under `packages/{id}/` are written whole
(an image by a multipart upload that appears only when complete, then its manifest). The
job record turns `succeeded` only after both exist, so a package is never shown as complete
while any part of it is missing.
"""

from __future__ import annotations

import errno
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from dicomiso_client import LookupClient, RetrieverClient
from dicomiso_client.models import JobView, Resolved
from dicomiso_common import audit
from dicomiso_common.errors import Conflict, DicomisoError, ObjectMissing
from dicomiso_common.jobs import JobHandle, JobLost, JobRecord
from dicomiso_common.manifests import load_accession_index, load_manifest
from dicomiso_common.models import (
    DiscImage,
    DiscPlan,
    EmailOutcome,
    PackageContents,
    PackageImage,
    PackageJobRequest,
    PackageJobResult,
    PackageManifest,
    PlannedDisc,
    RetrievalJobResult,
    StudyManifest,
    TreeEntry,
)
from dicomiso_common.names import ascii_filename_part
from dicomiso_common.store import Store

from . import disc, iso, mail, media, online, pdi, plan, viewer
from .iso import DiscFile
from .settings import PackagerSettings
from .stream import ImageSink

log = logging.getLogger(__name__)

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


def disc_key(package_id: str, number: int, total: int) -> str:
    """Disc `number` of a set of `total` (a package on one disc keeps `image_key`)."""
    return f"packages/{package_id}/{package_id}-{number}of{total}.iso"


def disc_filename(filename: str, number: int, total: int) -> str:
    """`BudiSantoso-MR001CT002.iso` -> `BudiSantoso-MR001CT002-2of3.iso`."""
    stem, dot, ext = filename.rpartition(".")
    return f"{stem}-{number}of{total}{dot}{ext}"


def manifest_key_of(package_id: str) -> str:
    return f"packages/{package_id}/{package_id}.json"


Names = Callable[[str], str]  # format -> the file's friendly name


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
            result = self._run(handle, about)
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
            size=result.size,
            profile=result.profile,
            email_state=result.email.state if result.email else None,
        )
        # The links are handed out once, here, with the result: a status GET that shows them
        # later only reads (it writes no event and signs nothing).
        audit.record_outcome(
            self.store,
            "packager",
            "link",
            "issued",
            **about,
            via="build",
            expires_at=result.expires_at,
        )
        return result.to_json()

    def _run(self, handle: JobHandle, about: dict[str, Any]) -> PackageJobResult:
        """Build the package; `about` gains the PatientID, Study UIDs and SOP classes as they
        become known, so the job's audit events carry them (success or failure)."""
        request = package_request(handle.record)
        accessions = list(request.accession_numbers)
        handle.update(phase="lookup", flush=True)
        with self.lookup() as lookup:
            resolved = lookup.resolve(accessions)
        one_patient(resolved)
        about["patient_id"] = resolved.accessions[0].patient_id
        name = resolved.accessions[0].patient_name.original
        display = resolved.accessions[0].patient_name.display

        def names(fmt: str) -> str:
            return package_filename(accessions, name, fmt)

        handle.update(phase="retrieve", flush=True)
        retrieval = self._retrieve(handle, accessions)
        manifests = self._manifests(retrieval)
        about.update(audit.study_facts(manifests))
        workdir = self.settings.work_dir
        with tempfile.TemporaryDirectory(prefix="package-", dir=workdir) as tmp:
            contents, links = self._build_and_upload(handle, request, manifests, Path(tmp), names)
        result = self._finish(handle, request, contents, links, about)
        return result.model_copy(
            update={"patient_name": display, "patient_id": about.get("patient_id")}
        )

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
            # Long polls of 5 s at most: a lost job notices it (handle.check) within that.
            view = retriever.wait(
                started.id, timeout=s.retrieve_wait, poll=0.5, on_progress=progress, long_poll=5
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
        names: Names,
    ) -> tuple[PackageContents, dict[str, Any] | None]:
        """Build, upload and describe the package; with the online page also the other
        format and view.html, whose signed links come back beside the contents."""
        profile = media.PROFILES[request.profile]
        disc_plan, parts = self._plan(handle, request, manifests)
        made: list[str] = []  # removed again if the package cannot be completed
        try:
            if len(parts) > 1:
                return self._build_set(
                    handle, request, manifests, disc_plan, parts, tmp, names, made
                )
            handle.update(phase="build", flush=True)
            with self._space():
                image = disc.assemble(self.store, manifests, profile, self.settings, tmp, handle)
            downloads = self._images(handle, request, image, tmp, names, made)
            handle.set_counts(image_bytes=sum(d.size for d in downloads.values()))
            return self._publish(handle, request, manifests, image, downloads, made, disc_plan)
        except DicomisoError:
            if _still_ours(handle):  # a run taken over must not delete the new owner's objects
                for key in made:
                    self._discard(key)
            raise

    def preflight(self, request: PackageJobRequest) -> None:
        """Refuse at once what the plan would refuse after the retrieval (a series larger
        than the medium), when every study is in the bucket already; otherwise the job
        finds out after retrieving and fails with the same reason."""
        if request.format != "iso":
            return
        manifests = []
        try:
            for accession in request.accession_numbers:
                index = load_accession_index(self.store, accession)
                manifests += [load_manifest(self.store, uid) for uid in index.study_uids]
        except DicomisoError:
            return  # not (all) retrieved before: the job plans after its retrieval
        if not manifests:
            return
        profile = media.PROFILES[request.profile]
        fixed = plan.fixed_cost(viewer.viewer_source(self.settings))
        plan.plan_discs(manifests, profile, self.capacity(profile), fixed)

    def capacity(self, profile: media.Profile) -> int:
        """Bytes one medium of the profile holds (DICOMISO_MEDIUM_CAPACITY_BYTES overrides)."""
        return self.settings.medium_capacity_bytes or profile.capacity

    def _plan(
        self, handle: JobHandle, request: PackageJobRequest, manifests: list[StudyManifest]
    ) -> tuple[DiscPlan | None, list[plan.Part]]:
        """Spread the studies over discs before anything is built; the plan goes into the
        job's result at once, so the status (and the staff page) shows "3 DVDs" while the
        discs are made. A ZIP has no capacity: one File-set, no plan."""
        handle.update(phase="plan", flush=True)
        if request.format != "iso":
            return None, [plan.Part(1, 1, manifests, _whole(manifests))]
        profile = media.PROFILES[request.profile]
        fixed = plan.fixed_cost(viewer.viewer_source(self.settings))
        disc_plan, parts = plan.plan_discs(manifests, profile, self.capacity(profile), fixed)
        result = package_result(handle.record).model_copy(update={"plan": disc_plan})
        handle.set_counts(discs=len(parts))
        handle.update(result=result.to_json(), flush=True)
        return disc_plan, parts

    def _check_fits(
        self, size: int, profile: media.Profile, number: int = 1, total: int = 1
    ) -> None:
        """The built image against the medium: the plan's sizes were estimates."""
        capacity = self.capacity(profile)
        if size > capacity:
            which = f"disc {number} of {total} is" if total > 1 else "the image is"
            raise TooLarge(
                f"{which} {size / 1e6:.0f} MB, more than a {profile.medium} "
                f"holds ({capacity / 1e6:.0f} MB); use a larger medium's profile or ZIP"
            )

    def _build_set(
        self,
        handle: JobHandle,
        request: PackageJobRequest,
        manifests: list[StudyManifest],
        disc_plan: DiscPlan | None,
        parts: list[plan.Part],
        tmp: Path,
        names: Names,
        made: list[str],
    ) -> tuple[PackageContents, dict[str, Any] | None]:
        """Several discs, each a complete File-set built by the one-disc code and uploaded
        before the next is built (the build directory holds one image at a time); with the
        online page also one ZIP of everything (a ZIP has no capacity)."""
        profile = media.PROFILES[request.profile]
        total = len(parts)
        discs: list[DiscImage] = []
        images: list[PackageImage] = []
        tree: list[TreeEntry] = []
        transcoded: set[str] = set()
        files = 0
        for part in parts:
            others = {p.number: p.manifests for p in parts if p is not part}
            vid = disc.set_volume_id(handle.id, part.number, total)
            sub = tmp / f"disc{part.number}"
            sub.mkdir()
            handle.set_counts(disc=part.number)
            handle.update(phase="build", flush=True)
            with self._space():
                image = disc.assemble(
                    self.store,
                    part.manifests,
                    profile,
                    self.settings,
                    sub,
                    handle,
                    pdi.DiscSet(part.number, total, vid, others),
                )
            key = disc_key(handle.id, part.number, total)
            made.append(key)
            up = self._stream_iso(
                handle,
                image,
                image.files,
                key,
                disc_filename(names("iso"), part.number, total),
                self.settings.build_prefetch,
                fits=(profile, part.number, total),
            )
            images.append(up)
            discs.append(
                DiscImage(
                    number=part.number,
                    total=total,
                    key=key,
                    filename=up.filename,
                    size=up.size,
                    sha256=up.sha256,
                    volume_id=image.volume_id,
                    instances=image.instances,
                    study_uids=tuple(m.study_uid for m in part.manifests),
                )
            )
            prefix = f"{part.number}of{total}/"
            tree += [TreeEntry(path=prefix + "/".join(f.path), size=f.size) for f in image.files]
            transcoded.update(image.transcoded)
            files += len(image.files)
            shutil.rmtree(sub)
        if self.settings.view_online:
            images.append(self._whole_zip(handle, manifests, profile, tmp, names, made))
        first = discs[0]
        contents = PackageContents(
            key=first.key,
            filename=first.filename,
            size=first.size,
            sha256=first.sha256,
            format="iso",
            profile=profile.name,
            medium=profile.medium,
            fits_medium=all(d.size <= self.capacity(profile) for d in discs),
            studies=len(manifests),
            study_uids=tuple(m.study_uid for m in manifests),
            instances=sum(d.instances for d in discs),
            transcoded=tuple(sorted(transcoded)),
            files=files,
            volume_id=first.volume_id,
            downloads=tuple(images),
            discs=tuple(discs),
            plan=disc_plan,
        )
        return self._describe(handle, request, manifests, contents, tuple(tree), made)

    def _whole_zip(
        self,
        handle: JobHandle,
        manifests: list[StudyManifest],
        profile: media.Profile,
        tmp: Path,
        names: Names,
        made: list[str],
    ) -> PackageImage:
        """One ZIP of every study beside a set of discs (the online page offers it)."""
        sub = tmp / "zip"
        sub.mkdir()
        handle.update(phase="build", flush=True)
        with self._space():
            image = disc.assemble(self.store, manifests, profile, self.settings, sub, handle)
        path = self._write_zip(handle, image, sub)
        handle.update(phase="upload", flush=True)
        made.append(image_key(handle.id, "zip"))
        up = self._upload(handle.id, "zip", path, names("zip"))
        shutil.rmtree(sub)
        return up

    def _publish(
        self,
        handle: JobHandle,
        request: PackageJobRequest,
        manifests: list[StudyManifest],
        image: disc.Disc,
        downloads: dict[str, PackageImage],
        made: list[str],
        disc_plan: DiscPlan | None = None,
    ) -> tuple[PackageContents, dict[str, Any] | None]:
        """Describe the uploaded images, then write the page (links signed now) and the
        package manifest (what is on the disc and what the page shows): only that makes
        it a package."""
        profile = media.PROFILES[request.profile]
        main = downloads[request.format]
        only = DiscImage(
            number=1,
            total=1,
            key=main.key,
            filename=main.filename,
            size=main.size,
            sha256=main.sha256,
            volume_id=image.volume_id,
            instances=image.instances,
            study_uids=tuple(m.study_uid for m in manifests),
        )
        contents = PackageContents(
            key=main.key,
            filename=main.filename,
            size=main.size,
            sha256=main.sha256,
            format=request.format,
            profile=profile.name,
            medium=profile.medium,
            fits_medium=request.format != "iso" or main.size <= self.capacity(profile),
            studies=len(manifests),
            study_uids=tuple(m.study_uid for m in manifests),
            instances=image.instances,
            transcoded=tuple(image.transcoded),
            files=len(image.files),
            volume_id=image.volume_id,
            downloads=tuple(downloads.values()),
            discs=(only,),
            plan=disc_plan,
        )
        tree = tuple(TreeEntry(path="/".join(f.path), size=f.size) for f in image.files)
        return self._describe(handle, request, manifests, contents, tree, made)

    def _describe(
        self,
        handle: JobHandle,
        request: PackageJobRequest,
        manifests: list[StudyManifest],
        contents: PackageContents,
        tree: tuple[TreeEntry, ...],
        made: list[str],
    ) -> tuple[PackageContents, dict[str, Any] | None]:
        """The online page (links signed now), then the package manifest (what is on the
        discs and what the page shows): only that makes the uploaded images a package."""
        view = links = None
        if self.settings.view_online:
            view = {
                "studies": online.studies_of([m.to_json() for m in manifests]),
                "downloads": online.downloads_of(contents),
            }
            made.append(online.view_key(handle.id))
            ttl = int(request.expires_in or self.settings.link_ttl)
            links = online.publish(self.store, self.settings, handle.id, view, ttl)
        package = PackageManifest(
            **dict(contents),
            job_id=handle.id,
            created_at=datetime.now(UTC).isoformat(),
            tree=tree,
            view=view,
        )
        # The fence (docs/architecture.md, invariant 5): only right after a write of the
        # record landed may this run write the manifest that makes the objects a package.
        handle.flush()
        self.store.put_json(manifest_key_of(handle.id), package.to_json())
        return contents, links

    def _images(
        self,
        handle: JobHandle,
        request: PackageJobRequest,
        image: disc.Disc,
        tmp: Path,
        names: Names,
        made: list[str],
    ) -> dict[str, PackageImage]:
        """Write and upload the package's image(s), each named by its format.

        The ISO streams into its multipart upload while it is written (no local copy). With
        the online page both are made: the ZIP from the sources (S3, transcoded files) into
        `tmp`, then the ISO from the local ZIP (S3 is read once) while the ZIP is uploaded
        beside it."""
        profile = media.PROFILES[request.profile]
        fits = (profile, 1, 1) if request.format == "iso" else None
        iso_key = image_key(handle.id, "iso")
        if not self.settings.view_online and request.format == "iso":
            made.append(iso_key)
            ahead = self.settings.build_prefetch
            return {
                "iso": self._stream_iso(
                    handle, image, image.files, iso_key, names("iso"), ahead, fits
                )
            }
        path = self._write_zip(handle, image, tmp)
        made.append(image_key(handle.id, "zip"))
        if not self.settings.view_online:
            handle.update(phase="upload", flush=True)
            return {"zip": self._upload(handle.id, "zip", path, names("zip"))}
        made.append(iso_key)
        with (
            ThreadPoolExecutor(1, thread_name_prefix="zip-upload") as pool,
            zipfile.ZipFile(path) as archive,
        ):
            zipped = pool.submit(self._upload, handle.id, "zip", path, names("zip"))
            try:
                files = _from_zip(image.files, archive, handle)
                streamed = self._stream_iso(handle, image, files, iso_key, names("iso"), 0, fits)
            except BaseException:
                # The failed package's objects are removed next: the ZIP's upload must
                # have ended first, or it could complete after the removal.
                wait([zipped])
                raise
            return {"zip": zipped.result(), "iso": streamed}

    def _write_zip(self, handle: JobHandle, image: disc.Disc, tmp: Path) -> Path:
        """Write the ZIP from the sources into `tmp` (zipfile goes back to each entry's
        header, so it is written to disk, then uploaded)."""
        path = tmp / "image.zip"
        with self._space(), path.open("w+b") as out:
            iso.write_zip(image.files, out, prefetch=self.settings.build_prefetch)
        handle.check()
        return path

    def _stream_iso(
        self,
        handle: JobHandle,
        image: disc.Disc,
        files: list[DiscFile],
        key: str,
        filename: str,
        ahead: int,
        fits: tuple[media.Profile, int, int] | None,
    ) -> PackageImage:
        """Write the ISO straight into its multipart upload (stream.ImageSink); with `fits`
        (profile, disc number, discs) it is checked against the medium before it completes.
        A failure aborts the upload: no object appears under `key`."""
        sink = ImageSink(
            self.store,
            key,
            part_size=self.settings.s3_multipart_chunk,
            content_type=CONTENT_TYPES["iso"],
            content_disposition=f'attachment; filename="{filename}"',
            check=handle.check,
        )
        with sink:
            iso.write_iso(
                files,
                cast(BinaryIO, sink),
                image.volume_id,
                joliet=image.joliet,
                prefetch=ahead,
                settle=sink.settle,
            )
            handle.check()
            if fits is not None:
                self._check_fits(sink.size, *fits)
            handle.update(phase="upload", flush=True)
            done = sink.finish()
        return PackageImage(
            format="iso", key=key, filename=filename, size=done.size, sha256=done.sha256
        )

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

    def _upload(self, package_id: str, fmt: str, path: Path, filename: str) -> PackageImage:
        sha256, checksum = self.store.file_sha256(path)  # one read: the whole and its parts
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
            checksum=checksum,
        )
        return PackageImage(
            format=fmt, key=key, filename=filename, size=path.stat().st_size, sha256=sha256
        )

    def fresh_links(self, record: JobRecord) -> dict[str, Any]:
        """Sign the package's links again (staff page "New link", e-mail again).

        With an online page, the page is re-written with fresh signatures first, so the new
        view_url, the new download links and every instance URL expire together. Returns
        download_url, view_url (None without a page), expires_at, downloads (with urls),
        filename and size.
        """
        ttl = int(package_request(record).expires_in or self.settings.link_ttl)
        r = package_result(record)
        key = package_key(record)
        view = None
        if self.settings.view_online and r.view_url:
            view = PackageManifest.model_validate(
                self.store.get_json(manifest_key_of(record.id))[0]
            ).view
        images = r.downloads or ()
        discs = r.discs or ()
        if view:
            links = online.publish(self.store, self.settings, record.id, view, ttl)
        else:
            links = self._sign(ttl, [key, *(d.key for d in images), *(d.key for d in discs)])
        urls = links["urls"]
        return {
            "download_url": urls[key],
            "view_url": links["view_url"],
            "expires_at": links["expires_at"],
            "downloads": [d.model_copy(update={"url": urls.get(d.key)}) for d in images],
            "discs": [d.model_copy(update={"download_url": urls.get(d.key)}) for d in discs],
            "filename": r.filename,
            "size": r.size,
        }

    def _sign(self, ttl: int, keys: list[str]) -> dict[str, Any]:
        """Links to the images without an online page: each key signed once, now."""
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
        urls = {k: self.store.presign_get(k, ttl) for k in dict.fromkeys(keys)}
        return {"view_url": None, "expires_at": expires_at.isoformat(), "urls": urls}

    def _discard(self, key: str) -> None:
        try:
            self.store.delete(key)
        except DicomisoError:
            log.warning("incomplete package not removed", extra={"key": key})

    def _finish(
        self,
        handle: JobHandle,
        request: PackageJobRequest,
        contents: PackageContents,
        links: dict[str, Any] | None,
        about: dict[str, Any],
    ) -> PackageJobResult:
        if links is None:  # no online page: the links alone are signed now
            ttl = int(request.expires_in or self.settings.link_ttl)
            links = self._sign(ttl, [contents.key, *(d.key for d in contents.discs)])
        urls = links["urls"]
        discs = tuple(
            d.model_copy(update={"download_url": urls.get(d.key)}) for d in contents.discs
        )
        found = {
            "download_url": urls[contents.key],
            "view_url": links["view_url"],
            "expires_at": links["expires_at"],
            "filename": contents.filename,
            "size": contents.size,
            "discs": [d.to_json() for d in discs],
        }
        email = request.email
        outcome = self._mail(email, found) if email else EmailOutcome(state="not_requested")
        if email:
            audit.record_outcome(
                self.store,
                "packager",
                "email",
                outcome.state,
                **about,
                email=email,
                via="package",
                error=outcome.error,
            )
        return PackageJobResult(
            **{
                **dict(contents),
                "downloads": tuple(
                    d.model_copy(update={"url": urls.get(d.key)}) for d in contents.downloads
                ),
                "discs": discs,
            },
            download_url=found["download_url"],
            view_url=found["view_url"],
            expires_at=found["expires_at"],
            email=outcome,
        )

    def _mail(self, to: str, links: dict[str, Any]) -> EmailOutcome:
        """Send the links; a failure is reported in the status and never fails the package."""
        if not mail.mail_enabled(self.settings):
            return EmailOutcome(
                state="failed", error="e-mail is not configured (DICOMISO_SMTP_URL)"
            )
        msg = mail.compose(self.settings, to, links)
        try:
            mail.send(self.settings, msg)
        except DicomisoError as exc:
            log.warning("link not mailed", extra={"error": str(exc)})
            return EmailOutcome(state="failed", error=str(exc))
        return EmailOutcome(state="sent", sent_at=datetime.now(UTC).isoformat())


def _whole(manifests: list[StudyManifest]) -> PlannedDisc:
    """The plan entry of a package that is one File-set whatever its size (a ZIP)."""
    return PlannedDisc(
        number=1,
        study_uids=tuple(m.study_uid for m in manifests),
        series_uids=tuple(sorted({e.series_uid for m in manifests for e in m.instances})),
        instances=len({e.sop_uid for m in manifests for e in m.instances}),
        estimated_bytes=sum(e.size for m in manifests for e in m.instances),
    )


def _still_ours(handle: JobHandle) -> bool:
    """Whether a record write of this run lands now: then no one can have taken the job."""
    try:
        handle.flush()
    except (JobLost, DicomisoError):
        return False
    return True


def _from_zip(files: list[DiscFile], archive: zipfile.ZipFile, handle: JobHandle) -> list[DiscFile]:
    """The same files, each read back from the local ZIP (stored entries, CRC checked)."""

    def opener(name: str) -> Callable[[], IO[bytes]]:
        def open_() -> IO[bytes]:
            handle.check()
            return archive.open(name)

        return open_

    return [replace(f, opener=opener("/".join(f.long_path or f.path))) for f in files]
