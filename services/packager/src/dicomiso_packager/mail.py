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


def compose(settings: PackagerSettings, to: str, links: dict[str, Any]) -> EmailMessage:
    """The message a patient receives (plain text; the package's links are its only URLs).

    `links` is a package result or fresh links: download_url, view_url (None without the
    online page), expires_at, filename, size.
    """
    org = settings.institution_name
    link, view_url = links["download_url"], links.get("view_url")
    filename, size = links.get("filename"), int(links.get("size") or 0)
    expires_at = datetime.fromisoformat(links["expires_at"])
    msg = EmailMessage()
    msg["Subject"] = f"Your imaging disc from {org} is ready to download"
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2] or None)
    when = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    if view_url:
        links_text = (
            "View them online, in your web browser, with nothing to install (the page also "
            f"offers the disc image for a CD or USB stick, and a ZIP file):\n\n{view_url}\n\n"
            f"Or download the disc image directly:\n\n{link}\n\n"
            f"Both links work until {when}.\n\n"
        )
    else:
        links_text = f"Download it here (the link works until {when}):\n\n{link}\n\n"
    discs = [d for d in links.get("discs") or () if d.get("download_url")]
    if len(discs) > 1:
        listed = "".join(
            f"Disc {d['number']} of {d['total']} ({d['filename']}):\n{d['download_url']}\n\n"
            for d in discs
        )
        links_text += (
            f"The images need {len(discs)} discs. Each disc opens on its own; download and "
            f"burn every one of them (the links work until {when}):\n\n{listed}"
        )
    contact = (
        f"Questions: {settings.institution_contact}\n\n" if settings.institution_contact else ""
    )
    msg.set_content(
        f"Hello,\n\n{org} has prepared a copy of your medical images as a disc image.\n\n"
        f"{links_text}"
        f"The file is {filename} ({size / 1e6:.0f} MB). Burn it to a CD/DVD or open it "
        "directly: it holds your images in the DICOM format, a README.TXT and an INDEX.HTM "
        "you can open in a web browser.\n\n"
        "The file contains personal health information. Keep it safe and do not forward "
        "this message. If you did not ask for your images, please contact us.\n\n"
        f"{contact}{org}\n"
    )
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
