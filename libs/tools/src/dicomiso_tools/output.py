"""How the CLI speaks: results as text or one JSON document, errors as one line and a code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from dicomiso_client.http import ServiceUnreachable
from dicomiso_common.errors import Conflict, DicomisoError, InvalidInput, NotFound, Unavailable

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3


class Output:
    """Where results and errors go: text or one JSON document on stdout, errors on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.console = Console(highlight=False)

    @property
    def live(self) -> bool:
        """Progress bars only on a terminal, never with --json."""
        return not self.json and self.console.is_terminal

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
