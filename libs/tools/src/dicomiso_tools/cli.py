"""`dicom-iso`: order discs, retrievals and forwards, look up accessions, verify images.

A thin layer over the typed clients: every service error is one of ours (http.py), and this
module turns each into one line on stderr and an exit code, never a traceback. `--json`
writes one JSON document on stdout; progress bars appear only when stdout is a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from typer import _click as click  # typer 0.29 vendors click: its own Context and Parameter
from typer.core import TyperCommand, TyperGroup

from .output import FAILED, OK, USAGE, Output, errors
from .settings import ClientSettings, SettingError

if TYPE_CHECKING:
    from rich.progress import TaskID

    from dicomiso_client.http import ServiceClient
    from dicomiso_client.jobs import JobClient
    from dicomiso_client.models import JobView

# Start-up (issue 19: `--help`, lookup and status in under 0.5 s): the clients (httpx,
# pydantic), rich and the download code are imported by the commands that use them, and the
# help is click's plain text, not typer's rich boxes (rendering those took ~0.35 s of CPU).

EPILOG = (
    "Exit codes: 0 ok; 1 the job failed, verify found problems, or a service answered with "
    "an error; 2 usage or input error (invalid value 422, unknown accession 404, accessions "
    "of two patients 409); 3 a service is unreachable or unavailable.\n\n"
    "Environment: DICOMISO_LOOKUP_URL, DICOMISO_RETRIEVER_URL, DICOMISO_PACKAGER_URL, "
    "DICOMISO_FORWARDER_URL (default http://127.0.0.1:8001-8004), DICOMISO_CALL_TOKEN or "
    "DICOMISO_API_TOKEN (bearer token), DICOMISO_POLL_INTERVAL (seconds)."
)


def _plain_flags(params: list[click.Parameter]) -> list[click.Parameter]:
    """An on/off flag takes no value, so its help shows no type (typer would print `<bool>`)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _plain_flags(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _plain_flags(super().get_params(ctx))


app = typer.Typer(
    name="dicom-iso",
    cls=_Group,
    help="Get imaging studies out of the PACS: discs, retrievals, forwards.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Every command: one JSON document on stdout, no bars.")
    ] = False,
) -> None:
    ctx.obj = as_json


class Format(StrEnum):
    iso = "iso"
    zip = "zip"


class Method(StrEnum):
    move = "move"
    get = "get"
    dicomweb = "dicomweb"


class Service(StrEnum):
    packager = "packager"
    retriever = "retriever"
    forwarder = "forwarder"


Json = Annotated[bool, typer.Option("--json", help="One JSON document on stdout, no bars.")]
Wait = Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the job.")]
Accessions = Annotated[
    str, typer.Argument(metavar="ACC[,ACC...]", help="Accession numbers, comma-separated.")
]
LookupUrl = Annotated[str | None, typer.Option("--lookup-url", help="[env DICOMISO_LOOKUP_URL]")]
RetrieverUrl = Annotated[
    str | None, typer.Option("--retriever-url", help="[env DICOMISO_RETRIEVER_URL]")
]
PackagerUrl = Annotated[
    str | None, typer.Option("--packager-url", help="[env DICOMISO_PACKAGER_URL]")
]
ForwarderUrl = Annotated[
    str | None, typer.Option("--forwarder-url", help="[env DICOMISO_FORWARDER_URL]")
]

# What each service's bars show: (label, count done, count of the total).
_BARS: dict[str, list[tuple[str, str, str]]] = {
    "packager": [
        ("instances received", "received", "expected"),
        ("files written", "files_written", "files"),
    ],
    "retriever": [("instances received", "received", "expected")],
    "forwarder": [("instances acknowledged", "acknowledged", "instances")],
}


def _settings(out: Output, **urls: str | None) -> ClientSettings:
    try:
        return ClientSettings.from_env(urls)
    except SettingError as exc:
        out.fail(f"bad setting: {exc}", USAGE)


def _accessions(value: str, out: Output) -> list[str]:
    accessions = [a.strip() for a in value.split(",") if a.strip()]
    if not accessions:
        out.fail("no accession number given", USAGE)
    return accessions


@contextmanager
def _progress(out: Output, service: str) -> Iterator[Callable[[JobView], None]]:
    """A callback for JobClient.wait: rich bars on a terminal, silence otherwise."""
    if not out.live:
        yield lambda _view: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # a bar: ~0.1 s

    bars = _BARS.get(service, [])
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=out.console,
        transient=False,
    ) as progress:
        phase = progress.add_task(f"{service}: starting", total=None)
        tasks: list[TaskID] = [
            progress.add_task(label, total=None, visible=False) for label, _, _ in bars
        ]
        upload = progress.add_task("upload", total=1, visible=False)

        def show(view: JobView) -> None:
            progress.update(phase, description=f"{service}: {view.state}, phase {view.phase}")
            for task, (_, done, total) in zip(tasks, bars, strict=True):
                if total in view.counts:
                    progress.update(
                        task,
                        completed=view.counts.get(done, 0),
                        total=view.counts[total],
                        visible=True,
                    )
            if service == "packager" and view.phase in ("upload", "done"):
                progress.update(upload, visible=True, completed=int(view.phase == "done"))

        yield show


def _follow(client: JobClient, job: JobView, out: Output, timeout: float, poll: float) -> JobView:
    with _progress(out, client.service) as show:
        return client.wait(job.id, timeout=timeout, poll=poll, on_progress=show)


def _counts(view: JobView) -> str:
    return ", ".join(f"{k} {v}" for k, v in view.counts.items()) or "no counts yet"


_C = TypeVar("_C", bound="ServiceClient")


def _client(cls: type[_C], url: str, settings: ClientSettings) -> _C:
    """One service's client with the CLI's token and timeout."""
    return cls(url, settings.token(), timeout=settings.http_timeout)


def _job_doc(view: JobView, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job as JSON: the service's latest full answer wins over the view we followed (a
    package found already done was never polled, so its view has no phase or counts)."""
    return {**view.model_dump(), **(raw or {})}


@app.command(cls=_Command)
def package(
    ctx: typer.Context,
    accessions: Accessions,
    email: Annotated[str | None, typer.Option(help="Mail the link here.")] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="STD-GEN-DVD-JPEG (default), STD-GEN-CD, STD-GEN-DVD-J2K, STD-GEN-BD-JPEG, "
            "STD-GEN-BD-J2K, STD-GEN-USB-JPEG or STD-GEN-USB-J2K."
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format")] = Format.iso,
    wait: Wait = False,
    download: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Wait, then save the image here (file or directory; a set of discs: all of "
            "them, into the directory).",
        ),
    ] = None,
    timeout: Timeout = 7200.0,
    packager_url: PackagerUrl = None,
    as_json: Json = False,
) -> None:
    """Make a disc image of one patient's studies; optionally wait and download it."""
    from dicomiso_client.jobs import PackagerClient

    from .download import download_to, target_of

    out = Output(as_json or bool(ctx.obj))
    body: dict[str, Any] = {"accession_numbers": _accessions(accessions, out), "format": fmt.value}
    body |= {k: v for k, v in (("email", email), ("profile", profile)) if v}
    target = target_of(download, out) if download is not None else None
    settings = _settings(out, packager_url=packager_url)
    with (
        errors(out, "packager"),
        _client(PackagerClient, settings.packager_url, settings) as client,
    ):
        job = client.start(body)
        if not wait and target is None:
            out.done(
                _job_doc(job),
                f"package {job.id} {job.state}; follow it with: dicom-iso status {job.id}",
            )
        view = _follow(client, job, out, timeout, settings.poll_interval)
        pkg = client.json("GET", f"{client.collection}/{job.id}")
        if view.state != "succeeded":
            out.fail(f"package {job.id} failed: {view.error}", FAILED, _job_doc(view, pkg))
        url = str(pkg.get("download_url") or "")
        discs = [d for d in pkg.get("discs") or () if d.get("download_url")]
        if target is not None and len(discs) > 1:
            _save_discs(out, job.id, view, pkg, discs, target)
        if target is None or not url:
            text = (
                f"package {job.id} ready: {pkg.get('filename')} "
                f"({pkg.get('size')} bytes), link until {pkg.get('expires_at')}:\n{url}"
            )
            if len(discs) > 1:
                text = f"package {job.id} ready: {len(discs)} discs, links until " + (
                    f"{pkg.get('expires_at')}:"
                    + "".join(
                        f"\ndisc {d['number']} of {d['total']}: {d['filename']} "
                        f"({d['size']} bytes): {d['download_url']}"
                        for d in discs
                    )
                )
            out.done(
                _job_doc(view, pkg),
                text + (f"\nview online: {pkg['view_url']}" if pkg.get("view_url") else ""),
            )
    path, size = download_to(url, target, pkg, out)
    out.done(
        {**_job_doc(view, pkg), "saved_to": str(path.resolve()), "saved_bytes": size},
        f"package {job.id}: disc saved: {path.resolve()} ({size} bytes, sha256 checked)",
    )


def _save_discs(
    out: Output,
    job_id: str,
    view: JobView,
    pkg: dict[str, Any],
    discs: list[dict[str, Any]],
    target: Path,
) -> NoReturn:
    """Every disc of a set into one directory (a file path: its directory), each checked."""
    from .download import download_to

    where = target if target.is_dir() else target.parent
    saved = []
    for disc in discs:
        path, size = download_to(str(disc["download_url"]), where, disc, out)
        saved.append({"number": disc["number"], "saved_to": str(path.resolve()), "bytes": size})
    lines = [f"package {job_id}: {len(discs)} discs saved (sha256 checked):"]
    lines += [f"  disc {s['number']} of {len(discs)}: {s['saved_to']}" for s in saved]
    lines.append(f"check the set with: dicom-iso verify {where.resolve()}/*.iso")
    out.done({**_job_doc(view, pkg), "saved": saved}, "\n".join(lines))


# -- retrieve, forward, status, lookup ---------------------------------------------------------


def _finish(
    out: Output, client: JobClient, job: JobView, wait: bool, timeout: float, poll: float, what: str
) -> NoReturn:
    if not wait:
        out.done(
            _job_doc(job),
            f"{what} {job.id} {job.state}; follow it with: dicom-iso "
            f"status {job.id} --service {client.service}",
        )
    view = _follow(client, job, out, timeout, poll)
    if view.state != "succeeded":
        out.fail(f"{what} {view.id} failed: {view.error}", FAILED, _job_doc(view))
    out.done(_job_doc(view), f"{what} {view.id} succeeded: {_counts(view)}")


@app.command(cls=_Command)
def retrieve(
    ctx: typer.Context,
    accessions: Accessions,
    method: Annotated[
        Method | None,
        typer.Option(
            help="C-MOVE (the PACS must know our AE), C-GET, or DICOMweb (QIDO-RS + WADO-RS)."
        ),
    ] = None,
    wait: Wait = False,
    timeout: Timeout = 7200.0,
    retriever_url: RetrieverUrl = None,
    as_json: Json = False,
) -> None:
    """Pull studies from the PACS into the bucket."""
    from dicomiso_client.jobs import RetrieverClient

    out = Output(as_json or bool(ctx.obj))
    accs = _accessions(accessions, out)
    settings = _settings(out, retriever_url=retriever_url)
    with (
        errors(out, "retriever"),
        _client(RetrieverClient, settings.retriever_url, settings) as client,
    ):
        job = client.retrieve(accs, method.value if method else None)
        _finish(out, client, job, wait, timeout, settings.poll_interval, "retrieval")


@app.command(cls=_Command)
def forward(
    ctx: typer.Context,
    accessions: Accessions,
    to: Annotated[
        str, typer.Option("--to", metavar="PEER", help="A configured peer (GET /v1/peers).")
    ],
    wait: Wait = False,
    timeout: Timeout = 7200.0,
    forwarder_url: ForwarderUrl = None,
    as_json: Json = False,
) -> None:
    """Send studies to a configured peer PACS (C-STORE)."""
    from dicomiso_client.jobs import ForwarderClient

    out = Output(as_json or bool(ctx.obj))
    body = {"accession_numbers": _accessions(accessions, out), "destination": to}
    settings = _settings(out, forwarder_url=forwarder_url)
    with (
        errors(out, "forwarder"),
        _client(ForwarderClient, settings.forwarder_url, settings) as client,
    ):
        _finish(out, client, client.start(body), wait, timeout, settings.poll_interval, "forward")


def _job_client(service: Service) -> type[JobClient]:
    from dicomiso_client import jobs

    return {
        Service.packager: jobs.PackagerClient,
        Service.retriever: jobs.RetrieverClient,
        Service.forwarder: jobs.ForwarderClient,
    }[service]


@app.command(cls=_Command)
def status(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    service: Annotated[Service, typer.Option(help="Whose job it is.")] = Service.packager,
    packager_url: PackagerUrl = None,
    retriever_url: RetrieverUrl = None,
    forwarder_url: ForwarderUrl = None,
    as_json: Json = False,
) -> None:
    """Show the state of a job (exit 1 if it failed)."""
    from dicomiso_client.models import JobView

    out = Output(as_json or bool(ctx.obj))
    settings = _settings(
        out, packager_url=packager_url, retriever_url=retriever_url, forwarder_url=forwarder_url
    )
    url = str(getattr(settings, f"{service.value}_url"))
    with (
        errors(out, service.value),
        _job_client(service)(url, settings.token(), timeout=settings.http_timeout) as client,
    ):
        raw = client.json("GET", f"{client.collection}/{job_id}")
        view = JobView.model_validate(raw)
    lines = [
        f"{service.value} job {view.id}: {view.state}, phase {view.phase}",
        f"counts: {_counts(view)}",
    ]
    if view.error:
        lines.append(f"error: {view.error}")
    discs = raw.get("discs") or []
    if len(discs) > 1:
        lines += [
            f"disc {d['number']} of {d['total']}: {d['filename']} until {raw.get('expires_at')}: "
            f"{d['download_url']}"
            for d in discs
        ]
    elif raw.get("download_url"):
        lines.append(f"{raw.get('filename')} until {raw.get('expires_at')}: {raw['download_url']}")
    if raw.get("view_url"):
        lines.append(f"view online: {raw['view_url']}")
    out.done(_job_doc(view, raw), "\n".join(lines), FAILED if view.state == "failed" else OK)


@app.command(cls=_Command)
def lookup(
    ctx: typer.Context, accessions: Accessions, lookup_url: LookupUrl = None, as_json: Json = False
) -> None:
    """Show whose accession numbers these are (several: and whether they are one patient)."""
    from dicomiso_client.lookup import LookupClient

    out = Output(as_json or bool(ctx.obj))
    accs = _accessions(accessions, out)
    settings = _settings(out, lookup_url=lookup_url)
    with (
        errors(out, "lookup"),
        _client(LookupClient, settings.lookup_url, settings) as client,
    ):
        infos = [client.accession(accs[0])] if len(accs) == 1 else client.resolve(accs).accessions
    same = len({i.patient_id for i in infos}) == 1
    lines = [
        f"{i.accession_number}: {i.patient_name.display} (patient ID {i.patient_id}, "
        f"from {i.source})"
        for i in infos
    ]
    if len(infos) > 1:
        lines.append("one patient" if same else "more than one patient: not one disc")
    # Several patients is what the packager refuses (409): the same exit code as that refusal.
    out.done(
        {"accessions": [i.model_dump() for i in infos], "same_patient": same},
        "\n".join(lines),
        OK if same else USAGE,
    )


# -- audit -------------------------------------------------------------------------------------


def _event_line(e: dict[str, Any]) -> str:
    what = ",".join(e.get("accession_numbers") or e.get("study_uids") or [])
    extra = " ".join(f"{k}={e[k]}" for k in ("via", "destination", "error") if e.get(k))
    return " ".join(
        str(part)
        for part in (
            e.get("at"),
            e.get("service"),
            e.get("action"),
            e.get("outcome"),
            f"user={e.get('user')}",
            f"job={e.get('job_id') or '-'}",
            what,
            extra,
        )
        if part
    )


@app.command(cls=_Command)
def audit(
    ctx: typer.Context,
    since: Annotated[
        str,
        typer.Option(
            metavar="DURATION|ISO-DATE",
            help="How far back: 90s, 30m, 1h, 2d, 1w, or 2024-05-01[T08:00:00Z].",
        ),
    ],
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
    packager_url: PackagerUrl = None,
    as_json: Json = False,
) -> None:
    """List the audit trail (packages, links, e-mails, forwards), oldest first."""
    from dicomiso_client.jobs import PackagerClient
    from dicomiso_common.errors import InvalidInput
    from dicomiso_common.since import parse_since

    out = Output(as_json or bool(ctx.obj))
    try:
        start = parse_since(since)
    except InvalidInput as exc:
        out.fail(f"--since: {exc}", USAGE)
    settings = _settings(out, packager_url=packager_url)
    with (
        errors(out, "packager"),
        _client(PackagerClient, settings.packager_url, settings) as client,
    ):
        doc = client.json("GET", "/v1/audit", params={"since": start.isoformat(), "limit": limit})
    events = doc.get("events", [])
    lines = [_event_line(e) for e in events] or [f"no audit events since {doc.get('since')}"]
    if doc.get("truncated"):
        lines.append(f"(only the first {limit}; ask with a later --since or a larger --limit)")
    out.done(doc, "\n".join(lines))


# -- verify, dev -------------------------------------------------------------------------------


@app.command(cls=_Command)
def verify(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE.iso|FILE.zip...", exists=True, dir_okay=False, readable=True),
    ],
    as_json: Json = False,
) -> None:
    """Check disc images or ZIPs: DICOMDIR, file IDs, references, PDI files, ISO names; with
    several, also the set: every disc once, no instance on two discs."""
    from .verify import verify as verify_medium  # pydicom and pycdlib: only this command
    from .verify import verify_set

    out = Output(as_json or bool(ctx.obj))
    reports = [verify_medium(file) for file in files]
    lines = []
    for file, report in zip(files, reports, strict=True):
        if report.ok:
            lines.append(
                f"{file}: ok ({report.kind}, {report.files} files, "
                f"{report.referenced} instances referenced by DICOMDIR)"
            )
        else:
            lines.append(f"{file}: {len(report.problems)} problem(s)")
            lines += [f"  {p}" for p in report.problems]
    doc: dict[str, Any] = reports[0].as_dict() if len(reports) == 1 else {}
    ok = all(r.ok for r in reports)
    if len(reports) > 1:
        whole = verify_set(reports)
        ok = ok and whole.ok
        doc = {"media": [r.as_dict() for r in reports], "set": whole.as_dict(), "ok": ok}
        if whole.ok:
            lines.append(
                f"set of {whole.discs} discs: ok ({whole.instances} instances, each on one disc)"
            )
        else:
            lines.append(f"set of {whole.discs} discs: {len(whole.problems)} problem(s)")
            lines += [f"  {p}" for p in whole.problems]
    out.done(doc, "\n".join(lines), OK if ok else FAILED)


@app.command(cls=_Command)
def dev(
    no_his: Annotated[bool, typer.Option("--no-his", help="Names from the PACS, no HIS.")] = False,
    port_base: Annotated[int, typer.Option(help="Offset added to every standard port.")] = 0,
    state_dir: Annotated[
        Path | None, typer.Option(help="Where the stack keeps its data (default ./.dicom-iso-dev).")
    ] = None,
) -> None:
    """Run the local stack (PACS, S3, HIS, the four services) until Ctrl-C."""
    from .dev import run as dev_run

    raise typer.Exit(dev_run(no_his=no_his, port_base=port_base, state_dir=state_dir))


def main() -> None:
    """Run the command line (the console script `dicom-iso` comes in through __main__)."""
    app()
