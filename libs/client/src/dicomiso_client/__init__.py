"""Typed HTTP clients for the four dicom-iso services (used by the services at run time and by
the `dicom-iso` command line in dicomiso_tools). Only httpx and pydantic: a service image
carries no CLI dependencies."""

from .http import ServiceClient, ServiceUnreachable, UpstreamError
from .jobs import ForwarderClient, JobClient, PackagerClient, RetrieverClient
from .lookup import LookupClient
from .models import AccessionInfo, JobView, Resolved

__all__ = [
    "AccessionInfo",
    "ForwarderClient",
    "JobClient",
    "JobView",
    "LookupClient",
    "PackagerClient",
    "Resolved",
    "RetrieverClient",
    "ServiceClient",
    "ServiceUnreachable",
    "UpstreamError",
]
