"""What a C-GET proposes: storage SOP classes with the SCP role, within 128 contexts.

On a C-GET the PACS sends each instance back on our own association, so it can send only the
SOP classes (and transfer syntaxes) we proposed (PS3.4 C.4.3.1). The classes come from what
the PACS says the study holds: SOPClassesInStudy at STUDY level, else SOPClassUID at IMAGE
level. A PACS that says neither gets a broad default set. When a study needs more contexts
than one association holds (PS3.8 9.3.2.2: at most 128), the C-GET is split by series over
several associations. The plan records where its classes came from, for the job's status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dicomiso_common.errors import InvalidInput

UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]
# Compressed syntaxes archives store, most common first; each is its own context per SOP
# class, so a compressed instance arrives byte-exact whichever of them it is in.
COMPRESSED = [
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context ids are odd numbers 1..255
BUDGET = MAX_CONTEXTS - 2  # the Study Root and Patient Root Get models take two

# The legacy scripts' 14 modality classes (dcm4che2 -cstore CR..SR), image classes first.
LEGACY_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.7",  # SC
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
    "1.2.840.10008.5.1.4.1.1.12.2",  # XRF
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG for presentation
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
]
# Other storage classes common in hospital archives.
OTHER_IMAGE_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.3.1",  # US Multi-frame
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # MG for processing
    "1.2.840.10008.5.1.4.1.1.1.3",  # Intra-oral X-ray
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
]
OTHER_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.11.2",  # Color Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.50",  # Mammography CAD SR
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.66",  # Raw Data
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
]
DEFAULT_CLASSES = LEGACY_CLASSES + OTHER_IMAGE_CLASSES + OTHER_CLASSES
# Classes without pixel data (or whose pixels are never compressed): uncompressed only.
_NO_PIXELS = {
    "1.2.840.10008.5.1.4.1.1.11.1",
    "1.2.840.10008.5.1.4.1.1.88.59",
    "1.2.840.10008.5.1.4.1.1.88.11",
    *OTHER_CLASSES,
}
# In the default set, compressed contexts go to the image classes that most often hold
# compressed pixels (the legacy image classes and the common multi-frame ones), most common
# syntaxes first, as long as the budget lasts.
_DEFAULT_COMPRESSED_FOR = [c for c in LEGACY_CLASSES if c not in _NO_PIXELS] + [
    "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.4.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
]

Context = tuple[str, list[str]]


def contexts_for(classes: list[str], compress: list[str] | None = None) -> list[Context]:
    """Each class with the uncompressed syntaxes, then compressed contexts while room lasts.

    Compressed contexts are added syntax by syntax (most common first) for the classes in
    `compress` (default: every class in `classes` that has pixel data).

    Raises:
        InvalidInput: More classes than one association can propose.
    """
    if len(classes) > BUDGET:
        raise InvalidInput(f"{len(classes)} SOP classes; one C-GET association holds {BUDGET}")
    contexts: list[Context] = [(c, UNCOMPRESSED) for c in classes]
    imaging = [c for c in (compress if compress is not None else classes) if c not in _NO_PIXELS]
    for ts in COMPRESSED:
        for sop_class in imaging:
            if len(contexts) >= BUDGET:
                return contexts
            contexts.append((sop_class, [ts]))
    return contexts


@dataclass
class Plan:
    """How one study is fetched by C-GET: associations, each with its contexts and series.

    `series` per association is empty when the whole study is fetched at STUDY level.
    """

    source: str  # where the classes came from, in words
    classes: list[str]
    associations: list[tuple[list[Context], list[str]]] = field(default_factory=list)
    retried: list[dict[str, Any]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """The job status's `negotiation` entry of this study."""
        return {
            "source": self.source,
            "sop_classes": self.classes,
            "associations": len(self.associations),
            "contexts": [len(c) for c, _ in self.associations],
            "split_by_series": any(series for _, series in self.associations),
            "retries": self.retried,
        }


def _split(by_series: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """Group series (in order) into batches whose SOP classes fit one association."""
    batches: list[tuple[set[str], list[str]]] = []
    for series_uid, classes in by_series.items():
        if len(classes) > BUDGET:
            raise InvalidInput(
                f"series {series_uid} has {len(classes)} SOP classes; C-GET can negotiate "
                f"{BUDGET} on one association; use method 'move'"
            )
        if batches and len(batches[-1][0] | classes) <= BUDGET:
            batches[-1][0].update(classes)
            batches[-1][1].append(series_uid)
        else:
            batches.append((set(classes), [series_uid]))
    return [(sorted(c), s) for c, s in batches]


def plan(study_classes: list[str], by_series: dict[str, dict[str, str | None]]) -> Plan:
    """Choose the contexts for a study's C-GET from what the PACS told us.

    Args:
        study_classes: SOPClassesInStudy of the STUDY-level answer ([] if not reported).
        by_series: IMAGE-level answers: series UID -> {SOP instance UID: SOP class or None}.
    """
    known = {c for instances in by_series.values() for c in instances.values() if c}
    every_known = bool(by_series) and all(
        c for instances in by_series.values() for c in instances.values()
    )
    if study_classes:
        source, classes = "SOPClassesInStudy (STUDY-level C-FIND)", sorted(set(study_classes))
    elif every_known:
        source, classes = "SOPClassUID (IMAGE-level C-FIND)", sorted(known)
    else:
        source = "default set: the PACS named no SOP class for the study's instances"
        chosen = Plan(source, sorted(set(DEFAULT_CLASSES) | known))
        extra = sorted(known - set(DEFAULT_CLASSES))
        contexts = contexts_for(DEFAULT_CLASSES + extra, _DEFAULT_COMPRESSED_FOR)
        chosen.associations = [(contexts, [])]
        return chosen
    chosen = Plan(source, classes)
    if len(classes) <= BUDGET:
        chosen.associations = [(contexts_for(classes), [])]
        return chosen
    if not every_known:
        raise InvalidInput(
            f"study has {len(classes)} SOP classes and the PACS does not say which series "
            f"holds which; C-GET can negotiate {BUDGET} per association; use method 'move'"
        )
    chosen.source += f"; split by series: {len(classes)} classes exceed {BUDGET}"
    per_series = {s: {c for c in inst.values() if c} for s, inst in by_series.items()}
    chosen.associations = [(contexts_for(c), series) for c, series in _split(per_series)]
    return chosen


def retry_plan(
    previous: Plan, failed_classes: set[str], failed_series: dict[str, set[str]] | None = None
) -> Plan | None:
    """One retry for sub-operations refused for lack of a context, or None if none would help.

    The retry fetches the study again on one association proposing what the first attempt
    proposed plus what the failed instances need: their SOP classes when the PACS named
    them, else the default set. If that offers no context the first attempt did not, the
    failure was not for lack of a context and there is no retry. Instances that arrived the
    first time arrive again and are acknowledged as duplicates.

    A study split by series (more classes than one association holds) is retried series by
    series: only the series that held failed instances (`failed_series`: series UID -> its
    SOP classes), with their classes plus the needed ones. Re-fetching the whole study on
    one association would fail every instance whose class no longer fits.
    """
    offered = {(c, tuple(ts)) for contexts, _ in previous.associations for c, ts in contexts}
    if failed_classes:
        needed, why = sorted(failed_classes), "the failed instances' SOP classes"
    else:
        needed, why = DEFAULT_CLASSES, "the default set"
    split = any(series for _, series in previous.associations)
    if split and failed_series:
        per_series = {uid: classes | set(needed) for uid, classes in failed_series.items()}
        try:
            batches = _split(per_series)
        except InvalidInput:
            return None
        # Compressed contexts for the needed classes first: the first attempt may have run
        # out of room before it proposed the syntax an instance is held in.
        associations = [
            (contexts_for(c, [n for n in needed if n in c] or None), series)
            for c, series in batches
        ]
        wanted = {(c, tuple(ts)) for contexts, _ in associations for c, ts in contexts}
        if wanted <= offered:
            return None
        classes = sorted({c for batch, _ in batches for c in batch})
        return Plan(f"retry of {len(per_series)} series with {why}", classes, associations)
    classes = sorted(set(previous.classes) | set(needed))
    if len(classes) > BUDGET:
        classes = sorted(needed)[:BUDGET]
    contexts = contexts_for(classes)
    if {(c, tuple(ts)) for c, ts in contexts} <= offered:
        return None
    return Plan(f"retry with {why}", classes, [(contexts, [])])
