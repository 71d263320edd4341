"""The e-mail notifier: one multipart/alternative (text + HTML) message per notice.

Threading: the first notice of an alert gets ``Message-ID: <makewatch.<hash>.<outbox_id>@makewatch>``
(the hash is of the alert's fingerprint); later notices (repeat, resolved) carry
``In-Reply-To`` and ``References`` pointing at it (from the thread_ref the first send
returned) and the first notice's subject behind "Re: ". Every message's own Message-ID is
derived from its outbox row (the alert's fingerprint and the row's id: stable across retries
and restarts), so a message delivered twice has the same Message-ID and a reader or a mail
system can tell the copy (Gmail, for one, keeps one of two messages with the same ID).

A message can be delivered twice, and this is a limit of SMTP, not a bug to fix later: the
server takes responsibility for a message with its 250 after DATA, and no SMTP command lets a
client ask "do you have this one already?". If makewatch dies after that 250 and before the
delivery loop commits the row as sent, or the 250 is lost on the way (a timeout), the row is
still pending and is sent again after the restart, with the same Message-ID. The window is
kept to that commit: a session's ``send`` returns right after the 250, the loop commits, and
the QUIT and the socket's close-down come only when the session ends, after the pass's last
commit. bench/soak.py measures how often a random SIGKILL lands there (bench/README.md).

Sessions: one SMTP connection carries a whole delivery pass (connecting, STARTTLS and AUTH
cost several round trips per message otherwise). After a failed message the connection is
dropped and the next message opens a new one (a server that answered 4xx may be closing; a
connection in an unknown state is not worth saving); one the server closed meanwhile (an idle
timeout) is noticed before use and replaced; and after :data:`MESSAGES_PER_CONNECTION`
messages a new one is opened, for servers that limit how many one connection may carry.

SMTP answers map to :class:`DeliveryError`: 5xx (authentication refused, every recipient
refused, message refused) and missing server features are permanent; 4xx, refused
connections, timeouts and disconnections are retryable. Error texts go through
:func:`~alerts.notify.base.redact` with the password (also base64-encoded, as AUTH sends it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.policy
import email.utils
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import aiohttp
import aiosmtplib

from alerts.channels import EmailChannel
from alerts.notify.base import DeliveryError, Notification, redact, register

if TYPE_CHECKING:  # (alerts.render imports this package: no import at run time)
    from alerts.render import Renderer

__all__ = ["MESSAGES_PER_CONNECTION", "EmailNotifier", "message_id_for"]

log = logging.getLogger(__name__)

# Mail servers may refuse (421/451) past a number of messages per connection; opening a new
# one every 50 messages stays under such limits and costs one connection set-up in 50.
MESSAGES_PER_CONNECTION = 50


def message_id_for(n: Notification) -> str:
    """``<makewatch.<16 hex of sha256(fingerprint)>.<outbox_id>@makewatch>``."""
    fingerprint = str(n.alert.get("fingerprint", ""))
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return f"<makewatch.{digest}.{n.outbox_id}@makewatch>"


def _root_id(n: Notification) -> str | None:
    """The first notice's Message-ID, when ``n`` continues a thread."""
    if n.phase not in ("repeat", "resolved") or not isinstance(n.thread_ref, dict):
        return None
    root = n.thread_ref.get("message_id")
    if isinstance(root, str) and root.startswith("<") and root.endswith(">") and "\n" not in root:
        return root
    return None


class _WirePolicy(email.policy.EmailPolicy):
    """email.policy.SMTP, except that a header is never folded right after its name.

    Python's folder moves a whole value to a continuation line when it fits there but not
    after "Subject: " (an ASCII subject of 70 to 77 characters): clients then show it with
    a leading space, or not at all in a narrow list. Such a header is written on one line
    instead (RFC 5322 allows up to 998 characters; 78 is only a recommendation)."""

    def fold_binary(self, name: str, value: str) -> bytes:
        folded = super().fold_binary(name, value)
        if folded.startswith(f"{name}:{self.linesep}".encode()):
            folded = self.clone(max_line_length=998).fold_binary(name, value)
        return folded


WIRE_POLICY = _WirePolicy(linesep="\r\n")


def wire_bytes(msg: EmailMessage) -> bytes:
    """``msg`` as it goes over SMTP (CRLF, 8-bit bodies, headers folded as above)."""
    return msg.as_bytes(policy=WIRE_POLICY)


async def _closed(protocol: Any, timeout_s: float) -> None:
    """Wait until the socket under an aiosmtplib connection is closed.

    aiosmtplib's close() only *starts* closing a TLS connection (close_notify, then the
    server's answer); returning at once leaves the socket to a loop that may stop first
    (``makewatch once``; a test's loop), and it is then collected unclosed (ResourceWarning).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while protocol is not None and protocol.transport is not None:
        if loop.time() >= deadline:
            protocol.transport.abort()
            return
        await asyncio.sleep(0.005)


@register("email")
class EmailNotifier:
    """Sends through one SMTP server (STARTTLS, implicit TLS or plain; AUTH when configured)."""

    def __init__(
        self,
        name: str,
        settings: EmailChannel,
        *,
        session: aiohttp.ClientSession | None = None,
        renderer: Renderer,
    ) -> None:
        del session  # SMTP does not use HTTP
        self.name = name
        self.settings = settings
        self.renderer = renderer

    def build_message(self, n: Notification) -> EmailMessage:
        """The message for ``n``, headers and both parts (exposed for previews and tests)."""
        subject, text, html = self.renderer.render_email(n, self.settings.timezone)
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self.settings.from_addr
        msg["To"] = ", ".join(self.settings.to)
        msg["Date"] = email.utils.formatdate(usegmt=True)
        msg["Message-ID"] = message_id_for(n)
        root = _root_id(n)
        if root is not None:
            msg["In-Reply-To"] = root
            msg["References"] = root
        # RFC 3834: no vacation auto-replies to alerts.
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Makewatch-Kind"] = n.kind
        msg["X-Makewatch-Phase"] = n.phase
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        return msg

    def _secrets(self) -> list[str]:
        password = self.settings.password.reveal() if self.settings.password else None
        if not password:
            return []
        user = self.settings.username or ""
        plain = f"\0{user}\0{password}".encode()
        return [
            password,
            base64.b64encode(password.encode()).decode(),
            base64.b64encode(plain).decode(),
        ]

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.settings.ca_file is None:
            return None
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(self.settings.ca_file))
        return context

    def session(self) -> contextlib.AbstractAsyncContextManager[SmtpSession]:
        """One SMTP connection for several messages (opened at the first send); QUIT and
        close when the context exits, an abrupt close when it exits with an exception."""
        return _session(self)

    async def send(self, n: Notification) -> dict[str, Any] | None:
        """Send ``n`` on a connection of its own; returns ``{"message_id": <the thread's
        first Message-ID>}``."""
        async with self.session() as s:
            return await s.send(n)

    async def send_message(self, msg: EmailMessage, to: Sequence[str]) -> None:
        """Send any prepared message (an alert, a digest) on a connection of its own."""
        async with self.session() as s:
            await s.send_message(msg, to)

    async def verify(self) -> dict[str, Any]:
        """Connect, secure and log in as configured, then quit, sending nothing
        (for ``makewatch check``). Raises DeliveryError like a send would."""
        s = self.settings
        client = self._client()  # logs in below, explicitly, to tell a refused login apart
        protocol: Any = None
        try:
            with self._smtp_errors():
                await client.connect()
                protocol = client.protocol
                if s.username and s.password:
                    await client.login(s.username, s.password.reveal())
                await client.quit()
        finally:
            if client.is_connected:
                client.close()
            await _closed(protocol, s.timeout_s)
        return {"server": f"{s.smtp_host}:{s.smtp_port}", "security": s.security, "login": bool(s.username)}

    def _login_client(self) -> aiosmtplib.SMTP:
        """A client that logs in (when configured) as it connects."""
        s = self.settings
        return self._client(username=s.username, password=s.password.reveal() if s.password else None)

    def _client(self, **login: Any) -> aiosmtplib.SMTP:
        """An SMTP client for this channel's server and security (``login``: username and
        password, for aiosmtplib to log in as it connects)."""
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            tls_context=self._tls_context(),
            timeout=s.timeout_s,
            **login,
        )

    @contextlib.contextmanager
    def _smtp_errors(self) -> Iterator[None]:
        """SMTP, TLS and socket failures as DeliveryError (permanent or not), secret-free."""
        try:
            yield
        except aiosmtplib.SMTPException as exc:
            raise self._error(exc) from None
        except ssl.SSLError as exc:
            raise self._tls_error(exc) from None
        except (OSError, TimeoutError) as exc:
            raise DeliveryError(
                f"{self._where()}: cannot connect ({type(exc).__name__})", permanent=False
            ) from None

    async def aclose(self) -> None:
        """Nothing to close: each session opens and closes its own SMTP connection."""

    # --- error mapping ---------------------------------------------------------------

    def _where(self) -> str:
        return f"SMTP {self.settings.smtp_host}:{self.settings.smtp_port} (channel {self.name})"

    def _server_text(self, text: str) -> str:
        return redact(" ".join(str(text).split()), self._secrets())[:200]

    def _tls_error(self, exc: BaseException) -> DeliveryError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return DeliveryError(
                f"{self._where()}: TLS certificate not trusted ({exc.verify_message}); "
                "check smtp_host or set ca_file",
                permanent=True,
            )
        return DeliveryError(f"{self._where()}: TLS failed ({type(exc).__name__})", permanent=False)

    def _error(self, exc: aiosmtplib.SMTPException) -> DeliveryError:
        where = self._where()
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            return self._tls_error(cause)
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return DeliveryError(
                f"{where}: authentication as {self.settings.username!r} refused "
                f"({exc.code} {self._server_text(exc.message)})",
                permanent=exc.code >= 500,
            )
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            refused = ", ".join(f"{r.recipient} ({r.code})" for r in exc.recipients)
            return DeliveryError(
                f"{where}: every recipient refused: {refused}",
                permanent=all(c >= 500 for c in codes),
            )
        if isinstance(exc, aiosmtplib.SMTPSenderRefused):
            return DeliveryError(
                f"{where}: sender {exc.sender} refused ({exc.code} {self._server_text(exc.message)})",
                permanent=exc.code >= 500,
            )
        if isinstance(exc, aiosmtplib.SMTPTimeoutError):
            return DeliveryError(
                f"{where}: no answer within {self.settings.timeout_s:g} s", permanent=False
            )
        if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected):
            if isinstance(exc, aiosmtplib.SMTPResponseException):  # 421/554 greeting
                return DeliveryError(
                    f"{where}: connection refused by the server ({exc.code})",
                    permanent=exc.code >= 500,
                )
            reason = type(cause).__name__ if cause is not None else type(exc).__name__
            return DeliveryError(f"{where}: cannot connect ({reason})", permanent=False)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return DeliveryError(
                f"{where}: {exc.code} {self._server_text(exc.message)}",
                permanent=exc.code >= 500,
            )
        if isinstance(exc, aiosmtplib.SMTPNotSupported) or "not supported" in str(exc):
            # The server lacks STARTTLS, AUTH or SMTPUTF8: configuration, not luck.
            return DeliveryError(f"{where}: {self._server_text(str(exc))}", permanent=True)
        return DeliveryError(f"{where}: {self._server_text(str(exc))}", permanent=False)


@contextlib.asynccontextmanager
async def _session(notifier: EmailNotifier) -> AsyncIterator[SmtpSession]:
    session = SmtpSession(notifier)
    try:
        yield session
    except BaseException:
        # A crash or a cancellation (shutdown): no goodbye, nothing left open either.
        await session.close(goodbye=False)
        raise
    await session.close(goodbye=True)


class SmtpSession:
    """Messages sent over one SMTP connection; see "Sessions" in the module docstring."""

    def __init__(self, notifier: EmailNotifier) -> None:
        self._notifier = notifier
        self._client: aiosmtplib.SMTP | None = None
        self._sent_on_connection = 0
        #: Connections opened so far (for tests and benches).
        self.connections = 0

    async def send(self, n: Notification) -> dict[str, Any] | None:
        """Send ``n``; returns right after the server's 250, with ``{"message_id": <the
        thread's first Message-ID>}``. The connection stays open for the next message."""
        msg = self._notifier.build_message(n)
        await self.send_message(msg, self._notifier.settings.to)
        return {"message_id": _root_id(n) or str(msg["Message-ID"])}

    async def send_message(self, msg: EmailMessage, to: Sequence[str]) -> None:
        """Send any prepared message; returns once the server accepted it."""
        s = self._notifier.settings
        try:
            with self._notifier._smtp_errors():
                client = await self._connected()
                errors, _ = await client.sendmail(
                    email.utils.parseaddr(s.from_addr)[1],
                    [email.utils.parseaddr(a)[1] for a in to],
                    wire_bytes(msg),
                )
        except BaseException:
            await self.close(goodbye=False)
            raise
        self._sent_on_connection += 1
        if errors:
            # Some (not all) recipients refused: the others got it; a retry would resend to them.
            log.warning(
                "channel %s: some recipients refused: %s",
                self._notifier.name,
                ", ".join(f"{rcpt} ({resp.code})" for rcpt, resp in errors.items()),
            )

    async def _connected(self) -> aiosmtplib.SMTP:
        client = self._client
        if client is not None and (
            not client.is_connected or self._sent_on_connection >= MESSAGES_PER_CONNECTION
        ):
            await self.close(goodbye=client.is_connected)
        if self._client is None:
            client = self._notifier._login_client()
            self._client = client  # (set first: a failed connect is closed like the rest)
            await client.connect()  # TLS and login as configured
            self._sent_on_connection = 0
            self.connections += 1
        assert self._client is not None
        return self._client

    async def close(self, *, goodbye: bool) -> None:
        """QUIT (when ``goodbye`` and still connected) and close the socket; idempotent."""
        client, self._client = self._client, None
        if client is None:
            return
        protocol = client.protocol
        timeout_s = self._notifier.settings.timeout_s
        try:
            if goodbye and client.is_connected:
                # Every message was accepted (and recorded) already: a failing QUIT changes
                # nothing for them.
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await client.quit()
            elif protocol is not None and protocol.transport is not None:
                protocol.transport.abort()  # no QUIT, no TLS close_notify
        finally:
            if client.is_connected:
                client.close()
            await _closed(protocol, timeout_s)
