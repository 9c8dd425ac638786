"""SMTP delivery (aiosmtplib): the connection settings, the MIME message, and what an answer means.

An exchange is MAIL, RCPT, then DATA. Until the message's last byte is sent nothing can have
been delivered, so any failure before DATA is safe to retry. A reply code to DATA is a clear
answer too. But a connection lost or a timeout *during* DATA leaves the outcome unknown: the
server may have queued the message. At most once means that such a message is not sent again
(`unknown`), and the operator decides.
"""

from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from typing import Literal
from urllib.parse import unquote, urlsplit
from uuid import UUID

import aiosmtplib

from app.core.config import Settings
from app.emails.rendering import Rendered

OutcomeKind = Literal["sent", "retry", "failed", "unknown"]


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool  # smtps://: TLS from the first byte
    start_tls: bool | None  # None: STARTTLS when the server offers it
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "SmtpConfig":
        assert settings.smtp_url is not None
        parts = urlsplit(settings.smtp_url.get_secret_value())
        use_tls = parts.scheme == "smtps"
        start_tls = {"auto": None, "required": True, "off": False}[settings.smtp_starttls]
        return cls(
            host=parts.hostname or "",
            port=parts.port or (465 if use_tls else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=False if use_tls else start_tls,
            timeout=settings.smtp_timeout_seconds,
        )


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    detail: str
    smtp_status: int | None = None


def envelope_sender(settings: Settings) -> str:
    assert settings.email_from is not None
    return parseaddr(settings.email_from)[1]


def message_id(row_id: UUID, settings: Settings) -> str:
    """Derived from the outbox row: every attempt of one email carries the same Message-ID."""
    domain = envelope_sender(settings).rpartition("@")[2] or "localhost"
    return f"<{row_id.hex}@{domain}>"


def compose(
    settings: Settings,
    row_id: UUID,
    to_address: str,
    rendered: Rendered,
    unsubscribe_url: str,
    unsubscribe_token: str,
) -> bytes:
    """The MIME message (multipart/alternative, text then HTML) with one-click unsubscribe."""
    assert settings.email_from is not None
    message = EmailMessage(policy=SMTP)
    message["From"] = settings.email_from
    message["To"] = to_address
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(row_id, settings)
    unsubscribe = f"<{unsubscribe_url}>"
    if settings.email_unsubscribe_mailto:
        mailto = settings.email_unsubscribe_mailto
        unsubscribe += f", <mailto:{mailto}?subject=unsubscribe%20{unsubscribe_token}>"
    # RFC 8058: a mail client POSTs "List-Unsubscribe=One-Click" to the https URL.
    message["List-Unsubscribe"] = unsubscribe
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message.as_bytes()


class SmtpSender:
    """One connection for a dispatch round, opened lazily and dropped after any failure."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: aiosmtplib.SMTP | None = None

    async def ready(self) -> Outcome | None:
        """Connect (TLS, login) unless connected; an Outcome when the server cannot be reached."""
        if self._client is not None and self._client.is_connected:
            return None
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.use_tls,
            start_tls=config.start_tls,
            timeout=config.timeout,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPResponseException as exc:
            return Outcome("retry", f"connect refused: {exc.code}", exc.code)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome("retry", f"cannot connect: {type(exc).__name__}")
        self._client = client
        return None

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome:
        client = self._client
        assert client is not None, "call ready() first"
        try:
            await client.mail(sender)
            await client.rcpt(recipient)
        except aiosmtplib.SMTPRecipientRefused as exc:
            await self._drop()
            # 5xx to RCPT: the mailbox does not exist or takes no mail; asking again harms.
            kind: OutcomeKind = "failed" if exc.code >= 500 else "retry"
            return Outcome(kind, f"recipient refused: {exc.code}", exc.code)
        except aiosmtplib.SMTPResponseException as exc:
            await self._drop()
            return Outcome("retry", f"sender refused: {exc.code}", exc.code)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._drop()
            return Outcome("retry", f"connection lost before the message: {type(exc).__name__}")
        try:
            response = await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            # The server answered: it did not take the message. 5xx here is most often our
            # configuration or content (fixable), so it is retried for the window too.
            await self._drop()
            return Outcome("retry", f"message refused: {exc.code}", exc.code)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._drop()
            return Outcome("unknown", f"connection lost during the message: {type(exc).__name__}")
        return Outcome("sent", "accepted", response.code)

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
