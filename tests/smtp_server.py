"""A real SMTP server on loopback (aiosmtpd) for the email tests.

It keeps every message it accepted, parsed, and answers as a test scripts it: queued replies to
RCPT and DATA (refusals), and a hook that runs while a message is being accepted (before the
server says 250), to simulate a crash in that window.
"""

import asyncio
import email
import email.policy
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        content: str = body.get_content()
        return content.replace("\r\n", "\n")


class ScriptedHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.rcpt_replies: deque[str] = deque()
        self.data_replies: deque[str] = deque()
        self.while_accepting: Callable[[], Awaitable[None]] | None = None
        self.logins: list[tuple[str, str]] = []
        self.arrived = asyncio.Event()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.popleft()
        raw = bytes(envelope.original_content or envelope.content)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed, raw))
        self.arrived.set()
        if self.while_accepting is not None:
            await self.while_accepting()
        return "250 2.0.0 Message accepted"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login = (auth_data.login.decode(), auth_data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == ("mailer", "p@ss word"))


class SmtpServer:
    def __init__(self) -> None:
        self.handler = ScriptedHandler()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        handler = self.handler

        def protocol() -> SMTP:
            return SMTP(
                handler,
                hostname="smtp.test",
                authenticator=handler.authenticate,
                auth_require_tls=False,
                # Without AUTH the server takes mail too (most tests send without logging in).
                auth_required=False,
            )

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def reset(self) -> None:
        self.handler.received.clear()
        self.handler.rcpt_replies.clear()
        self.handler.data_replies.clear()
        self.handler.while_accepting = None
        self.handler.logins.clear()
        self.handler.arrived.clear()

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
