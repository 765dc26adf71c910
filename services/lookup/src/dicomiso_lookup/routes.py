"""HTTP API of the lookup service: accession number(s) -> patient."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends

from dicomiso_common import pacs
from dicomiso_common.dicom import validate_accession
from dicomiso_common.errors import PROBLEM_RESPONSES, Conflict, NotFound
from dicomiso_common.names import person_name

from .his import His
from .models import Accession, Name, Resolved, ResolveRequest
from .settings import LookupSettings

log = logging.getLogger(__name__)


class AccessionUnknown(NotFound):
    title = "Accession not found"


class Resolver:
    """Answers from the HIS when one is configured, else from the PACS (C-FIND)."""

    def __init__(self, settings: LookupSettings, his: His | None) -> None:
        self.settings = settings
        self.his = his
        self.peer = pacs.PacsPeer(
            aet=settings.pacs_aet,
            host=settings.pacs_host,
            port=settings.pacs_port,
            calling_aet=settings.calling_aet,
            acse_timeout=settings.dicom_timeout,
            dimse_timeout=settings.dicom_timeout,
            network_timeout=settings.dicom_timeout,
        )

    def find(self, accession: str) -> Accession:
        accession = validate_accession(accession)
        return self._from_his(accession) if self.his else self._from_pacs(accession)

    def _from_his(self, accession: str) -> Accession:
        assert self.his is not None  # noqa: S101 - chosen by find()
        found = self.his.find(accession)
        if found is None:
            raise AccessionUnknown(f"accession {accession} is not in the HIS")
        return Accession(
            accession_number=accession,
            patient_id=found.medrec_id,
            patient_name=Name(**person_name(found.name).as_dict()),
            medrec_id=found.medrec_id,
            reg_id=found.reg_id,
            source="his",
        )

    def _from_pacs(self, accession: str) -> Accession:
        answers = sorted(
            pacs.find_studies_by_accession(self.peer, accession), key=lambda a: a.study_uid
        )
        if not answers:
            raise AccessionUnknown(f"accession {accession} is not in PACS {self.peer.aet}")
        ids = {(a.patient_id or "").strip() for a in answers}
        if "" in ids:
            raise Conflict(
                f"accession {accession}: the PACS gives no Patient ID, so its "
                "patient cannot be told apart from others"
            )
        if len(ids) > 1:
            raise Conflict(f"accession {accession} matches studies of more than one patient")
        patient_id = ids.pop()
        # Studies of one patient may spell the name differently (accents, case); the first
        # study in UID order decides, so the answer does not change from call to call.
        name = answers[0].patient_name or ""
        return Accession(
            accession_number=accession,
            patient_id=patient_id,
            patient_name=Name(**person_name(name).as_dict()),
            medrec_id=None,
            reg_id=None,
            source="pacs",
        )

    def resolve(self, accessions: list[Any]) -> Resolved:
        checked = list(dict.fromkeys(validate_accession(a) for a in accessions))
        found = [self.find(a) for a in checked]
        same = len({f.patient_id.strip().casefold() for f in found}) == 1
        log.info(
            "accessions resolved",
            extra={"count": len(found), "same_patient": same, "source": found[0].source},
        )
        return Resolved(accessions=found, same_patient=same)


def make_router(resolver: Resolver, guard: Any) -> APIRouter:
    router = APIRouter(
        prefix="/v1",
        dependencies=[Depends(guard.role("clerk"))],  # check a patient
        tags=["accessions"],
        responses={**PROBLEM_RESPONSES, 504: {"description": "The HIS did not answer in time"}},
    )

    @router.get(
        "/accessions/{accession}",
        response_model=Accession,
        summary="The patient an accession number belongs to",
    )
    def one(accession: str) -> Accession:
        return resolver.find(accession)

    @router.post(
        "/accessions:resolve",
        response_model=Resolved,
        summary="Several accession numbers: each patient, and whether they are one",
    )
    def many(body: ResolveRequest) -> Resolved:
        return resolver.resolve(body.accession_numbers)

    return router
