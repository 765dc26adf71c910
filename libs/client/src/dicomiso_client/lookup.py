"""Client of the lookup service: accession numbers -> patient."""

from __future__ import annotations

from .http import ServiceClient
from .models import AccessionInfo, Resolved


class LookupClient(ServiceClient):
    service = "lookup"

    def accession(self, accession: str) -> AccessionInfo:
        return AccessionInfo.model_validate(self.json("GET", f"/v1/accessions/{accession}"))

    def resolve(self, accessions: list[str]) -> Resolved:
        """Each accession's patient and whether they are all one (404 for an unknown one)."""
        body = {"accession_numbers": accessions}
        return Resolved.model_validate(self.json("POST", "/v1/accessions:resolve", json=body))
