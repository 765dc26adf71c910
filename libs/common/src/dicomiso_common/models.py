"""The documents that cross services through the bucket or a job record, as typed models.

Every writer builds one of these and every reader parses one, so renaming a field is a
type error in each service that uses it, not a `KeyError` at run time. The JSON keys are the
bucket's contract (docs/architecture.md): a model's field names are exactly those keys, and
`model_dump(mode="json")` writes what the services wrote before there were models.

Readers ignore unknown keys (a newer writer may add one); the models are frozen because a
document that was read is evidence, not a scratch pad.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

_FROZEN = ConfigDict(frozen=True, extra="ignore")


class _Document(BaseModel):
    model_config = _FROZEN

    def to_json(self) -> dict[str, Any]:
        """The JSON object as stored in the bucket."""
        return self.model_dump(mode="json")


# --- the study manifest: studies/{uid}/manifest.json (written by the retriever) -------------


class PatientInfo(_Document):
    """Patient Module attributes of a study (PS3.3 C.7.1.1), from its representative instance."""

    id: str | None = None
    name: str | None = None
    birth_date: str | None = None
    sex: str | None = None


class StudyInfo(_Document):
    """General Study Module attributes (PS3.3 C.7.2.1)."""

    study_uid: str | None = None
    date: str | None = None
    time: str | None = None
    id: str | None = None
    description: str | None = None
    accession_number: str | None = None


class SeriesInfo(_Document):
    """General Series Module attributes (PS3.3 C.7.3.1) a DICOMDIR SERIES record needs."""

    modality: str | None = None
    number: int | None = None
    description: str | None = None


class InstanceEntry(_Document):
    """One stored instance: where it is, how to check it, what a DICOMDIR IMAGE record needs.

    With `offset` the instance is the `size` bytes at `offset` of the segment object `key`
    (segments/...); without, an older manifest's whole object (instances/...). Readers go
    through `dicomiso_common.instances`, never through key patterns.
    """

    key: str
    size: int
    sha256: str = ""  # empty only for an object stored without the checksum metadata
    offset: int | None = None
    transfer_syntax: str
    sop_class_uid: str
    sop_uid: str
    series_uid: str
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    frames: int | None = None


class InstanceDescription(_Document):
    """One instance's manifest entry with its patient, study and series context.

    The SCP keeps these for the instances it received; the manifest folds the context of
    all of them into one `patient`, `study` and `series` map.
    """

    entry: InstanceEntry
    series: SeriesInfo
    study: StudyInfo
    patient: PatientInfo
    charset: tuple[str, ...] = ()


class SegmentIndex(_Document):
    """segments/{StudyUID}/{id}.json: what one segment object holds, written after it.

    A segment without its index does not count (a replica that died between the two PUTs
    left only bytes nobody reads). Each entry's `key` is the segment and `offset` is set.
    """

    study_uid: str
    segment_key: str
    size: int
    sha256: str
    instances: tuple[InstanceDescription, ...]


def _empty_if_null(value: object) -> object:
    return {} if value is None else value


class StudyManifest(_Document):
    """studies/{uid}/manifest.json: the complete study as stored, written last.

    Its presence means the study is whole in the bucket (the retriever writes it only after
    proving that); the packager lays out the disc from it and the forwarder sends from it.
    """

    study_uid: str
    patient: PatientInfo = Field(default_factory=PatientInfo)
    study: StudyInfo = Field(default_factory=StudyInfo)
    charset: tuple[str, ...] = ()
    series: dict[str, SeriesInfo] = Field(default_factory=dict)
    instance_count: int
    total_bytes: int
    instances: tuple[InstanceEntry, ...] = ()
    retrieved_at: str
    job_id: str
    method: str

    _null_is_empty = field_validator("patient", "study", "series", mode="before")(_empty_if_null)

    @field_validator("charset", mode="before")
    @classmethod
    def _charset(cls, value: object) -> object:
        return () if value is None else value

    def series_info(self, series_uid: str) -> SeriesInfo:
        """The series' attributes (empty ones for a series the manifest does not describe)."""
        return self.series.get(series_uid) or SeriesInfo()


class AccessionIndex(_Document):
    """accessions/{accession}.json: the studies the PACS returned for one accession number."""

    accession_number: str
    study_uids: tuple[str, ...]
    found_at: str | None = None


# --- job requests and results (jobs/{kind}/{id}.json `request` / `result`) ------------------
#
# The request is the canonical form that names the job (jobs.job_id hashes its JSON), so its
# fields and their order of keys must not change: a changed request is a different job.


class RetrievalJobRequest(_Document):
    accession_numbers: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    method: str | None = None


class StudyOutcome(_Document):
    """One study of a retrieval: complete in the bucket, moved now or found there."""

    study_uid: str
    instances: int
    transferred: bool
    # How completeness was decided: {"expected": n, "from": what the count came from}.
    completeness: dict[str, Any] | None = None
    # C-GET only: which SOP classes were negotiated and why (negotiation.Plan.report()).
    negotiation: dict[str, Any] | None = None


class RetrievalJobResult(_Document):
    studies: tuple[StudyOutcome, ...] = ()
    accessions: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    method: str | None = None


class PackageJobRequest(_Document):
    accession_numbers: tuple[str, ...]
    email: str | None = None
    profile: str
    format: Literal["iso", "zip"] = "iso"
    expires_in: int | None = None


class EmailOutcome(_Document):
    state: str  # not_requested | sent | failed
    error: str | None = None
    sent_at: str | None = None


class PackageImage(_Document):
    """One image of a package: the requested format and, with the online page, the other."""

    format: str
    key: str
    filename: str
    size: int
    sha256: str
    url: str | None = None  # signed; never in the package manifest


class PlannedDisc(_Document):
    """One disc of a planned set: what goes on it (estimated bytes; instances never split)."""

    number: int
    study_uids: tuple[str, ...]
    series_uids: tuple[str, ...]
    instances: int
    estimated_bytes: int


class DiscPlan(_Document):
    """How a package is spread over media, decided before the build starts."""

    profile: str
    medium: str
    capacity: int  # bytes of one medium (the profile's, or DICOMISO_MEDIUM_CAPACITY_BYTES)
    discs: tuple[PlannedDisc, ...]


class DiscImage(_Document):
    """One disc image of a package: disc `number` of `total`, each a complete File-set."""

    number: int
    total: int
    key: str
    filename: str
    size: int
    sha256: str
    volume_id: str
    instances: int
    study_uids: tuple[str, ...] = ()
    download_url: str | None = None  # signed; never in the package manifest


class PackageContents(_Document):
    """What was built and where it is: the core of the package manifest and of the result."""

    key: str
    filename: str
    size: int
    sha256: str
    format: str
    profile: str
    medium: str
    fits_medium: bool
    studies: int
    study_uids: tuple[str, ...]
    instances: int
    transcoded: tuple[str, ...] = ()  # SOP Instance UIDs converted for the profile
    files: int
    volume_id: str
    downloads: tuple[PackageImage, ...] = ()  # every image of the package (url unset)
    # The requested format's images, one per disc (one entry when one disc suffices; the
    # fields above then describe disc 1); the plan they were built from.
    discs: tuple[DiscImage, ...] = ()
    plan: DiscPlan | None = None


class TreeEntry(_Document):
    path: str
    size: int


class PackageManifest(PackageContents):
    """packages/{id}/{id}.json, beside the image and written after it: what is on the disc."""

    job_id: str
    created_at: str
    tree: tuple[TreeEntry, ...] = ()
    # The online page's keys (packaging online.publish): {"studies": [...], "downloads":
    # [{"format", "key"}]}, so that a new link can re-sign it; None without the page.
    view: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """As stored; a package without the online page keeps the keys it always had."""
        data = super().to_json()
        for key in ("downloads", "view", "discs", "plan"):
            if not data.get(key):
                data.pop(key, None)
        return data


class PackageJobResult(_Document):
    """A package job's result: while it runs only `retrieval_id`; when done, the contents,
    the link and what became of the e-mail."""

    retrieval_id: str | None = None
    key: str | None = None
    filename: str | None = None
    size: int | None = None
    sha256: str | None = None
    format: str | None = None
    profile: str | None = None
    medium: str | None = None
    fits_medium: bool | None = None
    studies: int | None = None
    study_uids: tuple[str, ...] | None = None
    instances: int | None = None
    transcoded: tuple[str, ...] | None = None
    files: int | None = None
    volume_id: str | None = None
    downloads: tuple[PackageImage, ...] | None = None  # with their signed urls
    discs: tuple[DiscImage, ...] | None = None  # with their signed download_url
    plan: DiscPlan | None = None  # set before the build starts
    download_url: str | None = None
    view_url: str | None = None  # the online page (packages/{id}/view.html)
    expires_at: str | None = None
    email: EmailOutcome | None = None
    patient_name: str | None = None  # the HIS's name, display form (the staff page's list)
    patient_id: str | None = None  # the HIS's PatientID, for the audit events (atna.render)

    def to_json(self) -> dict[str, Any]:
        """Only the fields set so far (a running job's result holds its retrieval id only)."""
        return self.model_dump(mode="json", exclude_none=True)


class ForwardJobRequest(_Document):
    accession_numbers: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    destination: str


class ForwardJobResult(_Document):
    destination: str
    instances: int
    results_key: str


class SendResult(_Document):
    """One instance's outcome at the peer, in forwards/{job_id}/results.json (by SOP UID)."""

    status: Literal["acknowledged", "warning", "failed"]
    code: int | None = None  # the peer's C-STORE status, or STOW-RS Failure/Warning Reason
    transcoded: bool = False
    reason: str | None = None
    # Storage Commitment (peers with "commitment": true): what the peer's N-EVENT-REPORT said
    commitment: Literal["committed", "not committed"] | None = None
    commitment_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Only what is set: a result without a reason or code stores no such key."""
        return {k: v for k, v in self.model_dump(mode="json").items() if v not in (None, False)}


class SendResults(RootModel[dict[str, SendResult]]):
    """forwards/{job_id}/results.json: SOP Instance UID -> its result."""

    model_config = ConfigDict(frozen=True)
