"""`dicom-iso` (the console script) and `python -m dicomiso_tools`: the command line, started
without the optional imports of its libraries that it never uses."""

from __future__ import annotations

import sys

# Imported by libraries whenever installed, as they are in this workspace, and never used by a
# synchronous command line: httpx's own CLI (httpx._main: rich.syntax, pygments; 0.2-0.4 s)
# and trio (httpcore probes for it at the first request; ~0.2 s). Both libraries catch the
# ImportError that a None entry in sys.modules gives. Only here, not in dicomiso_tools.cli:
# a test process or the dev stack that imports the CLI keeps trio for whoever needs it.
OPTIONAL_UNUSED = ("httpx._main", "trio")


def main() -> None:
    """Entry point `dicom-iso`."""
    for name in OPTIONAL_UNUSED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not importable"
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
