"""Lookup configuration, read from DICOMISO_* variables (README.md has the table)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator

from dicomiso_common.settings import CommonSettings

_IDENTIFIER = re.compile(r"[A-Za-z0-9_$]{1,64}")


class LookupSettings(CommonSettings):
    """Where the HIS database is and how to ask it; the PACS is the fallback source."""

    http_port: int = 8001

    his_url: SecretStr | None = None  # mysql://user:pass@host:port ; unset = PACS only
    his_accession_db: str = "pacsdb_his"
    his_patient_db: str = "rsabt201107"
    # {accession_db}/{patient_db} are replaced by the (validated) database names; %s is the
    # one parameter, bound by the driver. Results by column name: MEDRECID, RegID / Nama.
    his_accession_query: str = (
        "SELECT MEDRECID, RegID FROM `{accession_db}`.accessions WHERE AccessionNumber = %s"
    )
    his_patient_query: str = "SELECT Nama FROM `{patient_db}`.pasien WHERE MEDRECID = %s"
    his_pool_size: Annotated[int, Field(ge=1)] = 4
    his_connect_timeout: Annotated[float, Field(gt=0)] = 3.0
    his_read_timeout: Annotated[float, Field(gt=0)] = 5.0
    his_ssl_ca: str | None = None  # CA file: connect to the HIS over TLS

    pacs_aet: str = "ABPACS"
    pacs_host: str = "127.0.0.1"
    pacs_port: int = 11112
    calling_aet: str = "CDRECORD"
    dicom_timeout: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("his_accession_db", "his_patient_db")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError("database names may hold only letters, digits, '_' and '$'")
        return value

    @field_validator("his_url")
    @classmethod
    def _mysql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            parts = urlsplit(value.get_secret_value())
            try:
                parts.port  # noqa: B018 - raises on a port out of range
            except ValueError:
                raise ValueError("DICOMISO_HIS_URL has an invalid port") from None
            if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
                raise ValueError("DICOMISO_HIS_URL must look like mysql://user:pass@host:port")
        return value if value is not None and value.get_secret_value() else None

    @field_validator("his_accession_query", "his_patient_query")
    @classmethod
    def _one_parameter(cls, value: str) -> str:
        """Exactly one %s and no other %: the value is always bound by the driver."""
        if value.count("%s") != 1 or value.count("%") != 1:
            raise ValueError("a HIS query needs exactly one %s placeholder and no other '%'")
        try:
            value.format(accession_db="x", patient_db="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"a HIS query may use only {{accession_db}} and {{patient_db}}: {exc}"
            ) from None
        return value

    def his_connection(self) -> dict[str, object]:
        """pymysql.connect() arguments from DICOMISO_HIS_URL (None values left out)."""
        assert self.his_url is not None  # noqa: S101 - callers check his_url first
        parts = urlsplit(self.his_url.get_secret_value())
        return {
            "host": parts.hostname,
            "port": parts.port or 3306,
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
        }

    def accession_sql(self) -> str:
        return self.his_accession_query.format(
            accession_db=self.his_accession_db, patient_db=self.his_patient_db
        )

    def patient_sql(self) -> str:
        return self.his_patient_query.format(
            accession_db=self.his_accession_db, patient_db=self.his_patient_db
        )
