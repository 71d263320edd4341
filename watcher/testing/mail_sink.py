"""A local SMTP sink (aiosmtpd) that keeps every message: for the demo and the tests."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class MailSink:
    """An aiosmtpd handler; ``messages`` holds (envelope recipients, parsed message).

    ``listeners`` are called with each message as it arrives, in the SMTP server's thread.
    """

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    listeners: list[Callable[[list[str], EmailMessage], None]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        for listener in self.listeners:
            listener(list(envelope.rcpt_tos), message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def subjects(self) -> list[str]:
        return [subject_of(m) for _, m in self.messages]


def subject_of(message: EmailMessage) -> str:
    """The subject as a mail client shows it.

    A subject longer than a line is folded right after ``Subject:``, and Python's parser
    keeps the whitespace that began the continuation line (" [makewatch] ..."); clients
    drop it, and so does this.
    """
    return str(message["Subject"] or "").strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mail_sink(sink: MailSink, port: int | None = None, host: str = "127.0.0.1") -> Controller:
    """Start an SMTP server on ``host`` (a free port unless given) in its own thread.

    aiosmtpd logs every connection, command and disconnect at INFO on ``mail.log`` (some
    fifteen lines a message, the demo's stderr drowned in them); only its warnings are kept.
    """
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(sink, hostname=host, port=port or free_port())
    controller.start()
    return controller
