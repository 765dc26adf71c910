"""E-mail of a download link: SMTP with STARTTLS (or implicit TLS) and optional login.

The message holds the link, when it expires and who sent it, nothing else: no diagnosis, no
study description, and the subject names no patient (mail subjects end up in notification
previews and in logs of every relay on the way).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import unquote, urlsplit

from dicomiso_common.errors import DicomisoError, InvalidInput

from .handout import words
from .i18n import Lang, megabytes, t
from .settings import PackagerSettings

log = logging.getLogger(__name__)


class MailError(DicomisoError):
    """The relay refused or could not be reached; the package itself is not affected."""

    status = 502
    title = "E-mail not sent"


def _relay(settings: PackagerSettings) -> tuple[str, str, int, str | None, str | None]:
    """(scheme, host, port, user, password) of DICOMISO_SMTP_URL."""
    assert settings.smtp_url is not None  # noqa: S101 - callers check mail_enabled first
    url = urlsplit(settings.smtp_url.get_secret_value())
    if url.scheme not in ("smtp", "smtps") or not url.hostname:
        raise InvalidInput("DICOMISO_SMTP_URL must be smtp://[user:pass@]host[:port] or smtps://")
    port = url.port or (465 if url.scheme == "smtps" else 587)
    user = unquote(url.username) if url.username else None
    password = unquote(url.password) if url.password else None
    return url.scheme, url.hostname, port, user, password


# Shown to a clerk (page and API): what it means and what to do instead, no setting names.
NOT_CONFIGURED = (
    "Sending e-mail is not set up on this server. Give the patient the download link or the "
    "disc instead, or ask IT to set up e-mail."
)


def mail_enabled(settings: PackagerSettings) -> bool:
    return settings.smtp_url is not None and bool(settings.smtp_url.get_secret_value())


def compose(
    settings: PackagerSettings, to: str, links: dict[str, Any], lang: Lang | None = None
) -> EmailMessage:
    """The message a patient receives (plain text; the package's links are its only URLs).

    The words are the hand-out's (`handout.words`), in `lang` (else DICOMISO_LANGUAGE).
    `links` is a package result or fresh links: download_url, view_url (None without the
    online page), expires_at, filename, size.
    """
    lang = lang or settings.language
    org = settings.institution_name
    link, view_url = links["download_url"], links.get("view_url")
    filename, size = links.get("filename"), int(links.get("size") or 0)
    said = words(settings, lang, datetime.fromisoformat(links["expires_at"]))
    msg = EmailMessage()
    msg["Subject"] = t(lang, "mail_subject", org=org)
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2] or None)
    blocks = [t(lang, "mail_hello"), said["intro"], said["gives"], view_url or link]
    if view_url:
        blocks += [t(lang, "mail_download"), link]
    discs = [d for d in links.get("discs") or () if d.get("download_url")]
    if len(discs) > 1:
        blocks.append(t(lang, "mail_discs", count=len(discs)))
        blocks += [
            t(lang, "mail_disc", number=d["number"], total=d["total"], file=d["filename"])
            + "\n"
            + d["download_url"]
            for d in discs
        ]
    blocks += [
        said["expiry"],
        "\n".join(f"{n}. {step}" for n, step in enumerate(said["steps"], 1)),
        t(lang, "mail_file", file=filename, size=megabytes(size, lang)),
        said["privacy"] + " " + t(lang, "mail_not_you"),
        t(lang, "mail_regards") + "\n" + "\n".join(said["contact"]),
    ]
    msg.set_content("\n\n".join(blocks) + "\n")
    return msg


def send(settings: PackagerSettings, msg: EmailMessage) -> None:
    """Deliver one message; raises MailError with a reason a user can act on."""
    scheme, host, port, user, password = _relay(settings)
    context = ssl.create_default_context(
        cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    )
    timeout = settings.smtp_timeout
    try:
        if scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            client.ehlo()
            if scheme == "smtp" and settings.smtp_starttls:
                if not client.has_extn("starttls"):
                    raise MailError(
                        f"SMTP relay {host}:{port} offers no STARTTLS "
                        "(set DICOMISO_SMTP_STARTTLS=false only for a local relay)"
                    )
                client.starttls(context=context)
                client.ehlo()
            if user is not None:
                client.login(user, password or "")
            client.send_message(msg)
    except MailError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP relay {host}:{port} refused our login ({exc.smtp_code})") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(f"SMTP relay {host}:{port} refused the recipient") from exc
    except smtplib.SMTPResponseException as exc:
        raise MailError(f"SMTP relay {host}:{port} answered {exc.smtp_code}") from exc
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        raise MailError(
            f"SMTP relay {host}:{port} unreachable or failed ({type(exc).__name__})"
        ) from exc
    log.info("link mailed", extra={"relay": f"{host}:{port}"})
