"""The notifier interface: one small class per channel type behind one protocol.

A notifier turns a :class:`Notification` (one outbox row, already decided) into one
delivery attempt on its channel. It never retries by itself: the delivery loop owns retries
and backoff, and decides from :class:`DeliveryError` whether another attempt can help.

Sessions: ``async with notifier.session() as s`` opens what several sends can share (one SMTP
connection for a whole delivery pass), and ``await s.send(n)`` returns **as soon as the
channel has accepted** ``n`` (SMTP's 250 after DATA, Slack's HTTP answer), before any
close-down (QUIT, closing the socket), which happens when the session ends. The delivery loop
records the row as sent between the two, so a crash after the acceptance repeats the message
only if it lands in that commit, not in the close-down too (see alerts.delivery).
``notifier.send(n)`` is one message in a session of its own, for callers that send one.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DeliveryError",
    "Notification",
    "Notifier",
    "NotifierSession",
    "notifier_factory",
    "request_per_send",
    "classify_http_status",
    "parse_retry_after",
    "redact",
    "register",
]

PHASES = ("firing", "repeat", "resolved", "summary")


@dataclass(frozen=True)
class Notification:
    """One message to deliver on one channel (one outbox row).

    ``alert`` holds: fingerprint, org_id, team_id, scenario_id, count, count_since_notice,
    first_seen, last_seen (epoch seconds), payload (the latest event payload), samples (up to
    5 recent event payloads, for grouped alerts) and held_back (short dicts, only for phase
    "summary"). ``thread_ref`` is what a previous send of the same alert returned (Slack
    channel + ts, e-mail Message-ID), or None for a first notice.
    """

    outbox_id: int
    channel: str
    kind: str
    phase: str
    severity: str
    reason: str
    alert: dict[str, Any]
    thread_ref: dict[str, Any] | None = None


class DeliveryError(Exception):
    """A failed delivery attempt, saying whether another attempt can help.

    ``permanent`` errors (revoked token, unknown channel, refused recipient) park the outbox
    row; the others are retried, not before ``retry_after_s`` when the channel said so
    (HTTP 429 ``Retry-After``). The message never contains a secret: no webhook URL, bot token
    or SMTP password.
    """

    def __init__(self, message: str, *, permanent: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return not self.permanent

    def __repr__(self) -> str:
        return (
            f"DeliveryError({self.message!r}, permanent={self.permanent}, "
            f"retry_after_s={self.retry_after_s})"
        )


class NotifierSession(Protocol):
    """Sends on one channel that may share a connection (see the module docstring)."""

    async def send(self, n: Notification) -> dict[str, Any] | None:
        """Deliver ``n``; return once the channel accepted it, with the thread_ref to store
        for the alert. Raises :class:`DeliveryError`; the session stays usable after it."""
        ...


@runtime_checkable
class Notifier(Protocol):
    """A configured channel. ``send`` returns the thread_ref to store for the alert."""

    name: str

    def session(self) -> contextlib.AbstractAsyncContextManager[NotifierSession]:
        """What one delivery pass sends through; closed (QUIT...) when the context exits,
        abruptly (no goodbye) when it exits with an exception."""
        ...

    async def send(self, n: Notification) -> dict[str, Any] | None:
        """``n`` in a session of its own: accepted, and the connection closed."""
        ...

    async def aclose(self) -> None: ...


@contextlib.asynccontextmanager
async def request_per_send(notifier: NotifierSession) -> AsyncIterator[NotifierSession]:
    """The session of a channel whose every send is a request of its own (an HTTP API on a
    keep-alive session): nothing to open or close, each ``send`` returns with the answer."""
    yield notifier


def classify_http_status(status: int) -> tuple[bool, bool]:
    """``(retryable, permanent)`` for an HTTP status: the one place that maps statuses.

    2xx is success (neither). 408, 425, 429 and every 5xx are transient: retry (after
    ``Retry-After`` when given). Every other status (3xx, which aiohttp would have followed,
    and 4xx) means the request or the configuration is wrong and the same request will fail
    again: give up.
    """
    if 200 <= status < 300:
        return False, False
    if status in (408, 425, 429) or 500 <= status < 600:
        return True, False
    return False, True


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``***`` (a last line of defence)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --- registry: channel type -> notifier class -------------------------------------------

NotifierFactory = Callable[..., Notifier]
_REGISTRY: dict[str, NotifierFactory] = {}


def register(channel_type: str) -> Callable[[NotifierFactory], NotifierFactory]:
    """Class decorator: ``@register("slack_bot")`` makes ``build_notifier`` know the type."""

    def decorate(cls: NotifierFactory) -> NotifierFactory:
        _REGISTRY[channel_type] = cls
        return cls

    return decorate


def notifier_factory(channel_type: str) -> NotifierFactory:
    """The class registered for ``channel_type`` (KeyError when none is). The concrete
    notifiers register themselves when ``alerts.notify`` (the package) imports them: this
    module knows none of them."""
    return _REGISTRY[channel_type]
