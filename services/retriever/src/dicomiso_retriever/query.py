"""The PACS side of a retrieval, part one: C-FIND of the studies and of a study's instances.

Associations and STUDY-level C-FIND live in `dicomiso_common.pacs`, so every service queries
the PACS with the same validation; this module adds what only the retriever asks: a study's
instances by series (SERIES and IMAGE level), for C-GET's contexts and for completeness.
Moving or getting a study (C-MOVE, C-GET) is `transfer`. Every association proposes the
Study Root and the Patient Root model and uses the one the PACS accepts; on Patient Root the
identifier carries the study's PatientID (PS3.4 C.4.1.2.1).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomiso_common.dicom import is_valid_uid, validate_uid
from dicomiso_common.pacs import (
    MODELS,
    PENDING,
    PacsPeer,
    StudyAnswer,
    accepted_model,
    associate,
    find_studies_by_accession,
    find_study_by_uid,
    make_ae,
    request_models,
    unpadded,
)

from . import reactor
from .settings import RetrieverSettings

log = logging.getLogger(__name__)


def peer(s: RetrieverSettings) -> PacsPeer:
    """The PACS as the retriever's settings describe it, called as `our_calling_aet`."""
    return PacsPeer(
        aet=s.pacs_aet,
        host=s.pacs_host,
        port=s.pacs_port,
        calling_aet=s.our_calling_aet,
        acse_timeout=s.dicom_acse_timeout,
        dimse_timeout=s.dicom_dimse_timeout,
        network_timeout=s.dicom_network_timeout,
        max_pdu=s.scp_max_pdu,
    )


def find_by_accession(s: RetrieverSettings, accession: str) -> list[StudyAnswer]:
    """Return the studies whose AccessionNumber equals `accession` exactly."""
    return find_studies_by_accession(peer(s), accession)


def find_by_study_uid(s: RetrieverSettings, study_uid: str) -> list[StudyAnswer]:
    """Return the study with this StudyInstanceUID (an empty list when the PACS has none)."""
    return find_study_by_uid(peer(s), study_uid)


Inventory = dict[str, dict[str, str | None]]  # series UID -> {SOP instance UID: class}


def _patient_root(model: UID) -> bool:
    return model in (m[1] for m in MODELS.values())


def level(level: str, hit: StudyAnswer, model: UID, **keys: str) -> Dataset:
    """An identifier at `level` below the study, with PatientID on Patient Root."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    if _patient_root(model):
        ds.PatientID = hit.patient_id or ""
    ds.StudyInstanceUID = validate_uid(hit.study_uid, "StudyInstanceUID")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _pending(answers: Iterator[tuple[Dataset, Dataset | None]]) -> Iterator[Dataset]:
    for status, ident in answers:
        if "Status" in status and int(status.Status) in PENDING and ident is not None:
            yield ident


def take_inventory(s: RetrieverSettings, hit: StudyAnswer) -> Inventory:
    """List the study's instances by series (SERIES-, then IMAGE-level C-FIND).

    The IMAGE-level query names the series: hierarchical archives (dcmqrscp) answer nothing
    without it. SOPClassUID is asked for and kept when the PACS returns it (None otherwise).
    Answers of another study or series, or with an illegal UID, are dropped.
    """
    ae = make_ae(peer(s))
    reactor.use(ae)
    request_models(ae, "find")
    found: Inventory = {}
    with associate(peer(s), ae) as assoc:
        model = accepted_model(assoc, "find", peer(s))
        series_q = level("SERIES", hit, model, SeriesInstanceUID="")
        for ident in _pending(assoc.send_c_find(series_q, model)):
            uid = unpadded(ident.get("SeriesInstanceUID"))
            if is_valid_uid(uid) and unpadded(ident.get("StudyInstanceUID")) == hit.study_uid:
                found[uid] = {}
        for series_uid, instances in found.items():
            image_q = level(
                "IMAGE", hit, model, SeriesInstanceUID=series_uid, SOPInstanceUID="", SOPClassUID=""
            )
            for ident in _pending(assoc.send_c_find(image_q, model)):
                sop = unpadded(ident.get("SOPInstanceUID"))
                if not is_valid_uid(sop) or unpadded(ident.get("SeriesInstanceUID")) not in (
                    series_uid,
                    "",
                ):
                    continue
                sop_class = unpadded(ident.get("SOPClassUID"))
                instances[sop] = sop_class if is_valid_uid(sop_class) else None
    return found
