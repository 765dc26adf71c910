"""The PACS side of a retrieval, part one: C-FIND of the studies and of a study's SOP classes.

Associations and STUDY-level C-FIND live in `dicomiso_common.pacs`, so every service queries
the PACS with the same validation; this module adds what only the retriever asks. Moving or
getting a study (C-MOVE, C-GET) is `transfer`.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

# pynetdicom.sop_class generates its SOP class names at import: mypy cannot see them.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomiso_common.dicom import is_valid_uid
from dicomiso_common.pacs import (
    PENDING,
    PacsPeer,
    StudyAnswer,
    associate,
    find_studies_by_accession,
    find_study_by_uid,
    make_ae,
)

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


def find_sop_classes(s: RetrieverSettings, study_uid: str) -> list[str]:
    """List the SOP classes in a study (IMAGE-level C-FIND), to propose exactly those for C-GET."""
    ae = make_ae(peer(s))
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    classes: set[str] = set()
    with associate(peer(s), ae) as assoc:
        series_q = Dataset()
        series_q.QueryRetrieveLevel = "SERIES"
        series_q.StudyInstanceUID = study_uid
        series_q.SeriesInstanceUID = ""
        series: list[str] = []
        answers = assoc.send_c_find(series_q, StudyRootQueryRetrieveInformationModelFind)
        for status, ident in answers:
            if "Status" in status and int(status.Status) in PENDING and ident is not None:
                uid = str(ident.get("SeriesInstanceUID", ""))
                if is_valid_uid(uid):
                    series.append(uid)
        for series_uid in series:
            image_q = Dataset()
            image_q.QueryRetrieveLevel = "IMAGE"
            image_q.StudyInstanceUID = study_uid
            image_q.SeriesInstanceUID = series_uid
            image_q.SOPInstanceUID = ""
            image_q.SOPClassUID = ""
            for status, ident in assoc.send_c_find(
                image_q, StudyRootQueryRetrieveInformationModelFind
            ):
                if "Status" in status and int(status.Status) in PENDING and ident is not None:
                    sop_class = str(ident.get("SOPClassUID", ""))
                    if is_valid_uid(sop_class):
                        classes.add(sop_class)
    return sorted(classes)
