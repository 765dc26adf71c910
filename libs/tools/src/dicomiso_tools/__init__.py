"""The dicom-iso command line and its tools: dev stack, demo data, media verifier."""

import sys

# httpx imports its own command line (httpx._main: rich.syntax, pygments, click) whenever those
# are installed, as they are here; that costs `dicom-iso` 0.2-0.4 s at every start and nothing
# here uses it. A None entry makes httpx fall back to its stub `httpx.main` (it catches the
# ImportError). setdefault: a process that imported httpx before keeps what it has.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: "not importable"
