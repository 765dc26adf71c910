"""How the CLI speaks: results as text or one JSON document, errors as one line and a code."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3


class Output:
    """Where results and errors go: text or one JSON document on stdout, errors on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    @cached_property
    def console(self) -> Console:
        """rich's console, imported when a bar is drawn (rich costs ~0.1 s of every start)."""
        from rich.console import Console

        return Console(highlight=False)

    @property
    def live(self) -> bool:
        """Progress bars only on a terminal, never with --json."""
        if self.json:
            return False
        # rich's own test, without importing rich for a command that draws nothing
        if os.environ.get("FORCE_TERMINAL") is not None or os.environ.get("TTY_COMPATIBLE"):
            return self.console.is_terminal
        return sys.stdout.isatty()

    def done(self, doc: dict[str, Any], text: str, code: int = OK) -> NoReturn:
        typer.echo(json.dumps(doc, indent=2, default=str) if self.json else text)
        raise typer.Exit(code)

    def fail(self, message: str, code: int, doc: dict[str, Any] | None = None) -> NoReturn:
        line = " ".join(message.split())
        typer.echo(f"error: {line}", err=True)
        if self.json:
            typer.echo(
                json.dumps({**(doc or {}), "error": line, "exit_code": code}, indent=2, default=str)
            )
        raise typer.Exit(code)


@contextmanager
def errors(out: Output, service: str) -> Iterator[None]:
    """Our errors -> one line on stderr and the exit code of the epilog."""
    # Imported here, when a command talks to a service: `--help` loads neither httpx nor pydantic.
    from pydantic import ValidationError

    from dicomiso_client.http import ServiceUnreachable
    from dicomiso_common.errors import Conflict, DicomisoError, InvalidInput, NotFound, Unavailable

    try:
        yield
    except ServiceUnreachable as exc:
        out.fail(f"{exc} — is the stack running? (dicom-iso dev)", UNREACHABLE)
    except Unavailable as exc:
        out.fail(str(exc), UNREACHABLE)
    except (InvalidInput, NotFound, Conflict) as exc:
        out.fail(f"{service}: {exc}", USAGE)
    except DicomisoError as exc:
        out.fail(str(exc) or exc.title, FAILED)
    except ValidationError:
        out.fail(f"{service} gave an answer this client does not understand", FAILED)
    except KeyboardInterrupt:
        out.fail("interrupted; a started job keeps running (dicom-iso status JOB)", 130)
