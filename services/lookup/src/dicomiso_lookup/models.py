"""Response and request shapes of the lookup API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Name(BaseModel):
    """A patient's name as the source gave it, readable (`display`), and in parts."""

    original: str
    display: str
    family: str | None = None
    given: str | None = None
    middle: str | None = None
    prefix: str | None = None
    suffix: str | None = None


class Accession(BaseModel):
    accession_number: str
    patient_id: str
    patient_name: Name
    medrec_id: str | None
    reg_id: str | None
    source: Literal["his", "pacs"]


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accession_numbers: list[Any] = Field(min_length=1, max_length=50)


class Resolved(BaseModel):
    accessions: list[Accession]
    same_patient: bool
