"""The shapes the clients return: what the services' APIs answer, as typed models.

They mirror the services' response models without importing the services (dependencies
point one way); unknown fields are ignored, so a service may add fields without breaking us.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_LENIENT = ConfigDict(extra="ignore")


class PatientName(BaseModel):
    model_config = _LENIENT

    original: str
    display: str
    family: str | None = None
    given: str | None = None


class AccessionInfo(BaseModel):
    """One accession number and the patient it belongs to (lookup)."""

    model_config = _LENIENT

    accession_number: str
    patient_id: str
    patient_name: PatientName
    source: str


class Resolved(BaseModel):
    model_config = _LENIENT

    accessions: list[AccessionInfo]
    same_patient: bool


class JobView(BaseModel):
    """The state of any job (retrieval, forward, package)."""

    model_config = _LENIENT

    id: str
    state: str
    phase: str | None = None
    attempt: int = 1
    counts: dict[str, int] = Field(default_factory=dict)
    error: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")
