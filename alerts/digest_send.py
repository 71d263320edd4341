"""Sending digests: when each recipient's is due, once per period, across restarts.

For each ``[[digests]]`` table and each of its recipients, :func:`alerts.schedule.due_digests`
says what is due from the end of the last period recorded in the ``digests`` table (several
missed days collapse into one digest covering the whole span). Before sending, the period is
*claimed* (a ``digests`` row without ``sent_at``) in its own transaction; after the SMTP
server accepted the message, ``sent_at`` is set. A failed send releases the claim, so the
next tick tries again. A crash between claim and acceptance leaves the claim: that digest is
then not sent again (at most once: a restart never sends a second copy; the log says so).
"""

from __future__ import annotations

import email.utils
import logging
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from alerts.channels import EmailChannel
from alerts.digest import build_digest
from alerts.notify.base import DeliveryError, Notifier
from alerts.notify.email import EmailNotifier
from alerts.render import Renderer
from alerts.schedule import DigestSettings, due_digests, period_for, previous_send_time
from watcher import store as st
from watcher.config import Settings
from watcher.store import Store

if TYPE_CHECKING:
    from watcher.web.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DigestRun:
    recipient: str
    period_start: float
    period_end: float
    sent: bool
    skipped_quiet: bool = False
    error: str | None = None


def email_channel_for(settings: Settings, digest: DigestSettings) -> str:
    """The e-mail channel a digest goes through: its own, or the first declared one."""
    if digest.channel:
        return digest.channel
    for name, channel in settings.channels.items():
        if isinstance(channel, EmailChannel):
            return name
    raise ValueError("no e-mail channel configured for digests")


def compose(
    channel: EmailChannel, recipient: str, parts: tuple[str, str, str], period_start: float
) -> EmailMessage:
    subject, text, html = parts
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = channel.from_addr
    msg["To"] = recipient
    msg["Date"] = email.utils.formatdate(usegmt=True)
    # Stable per (recipient, period): a resend after a crash is recognisably the same message.
    msg["Message-ID"] = email.utils.make_msgid(idstring=f"digest.{int(period_start)}", domain="makewatch")
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Makewatch-Kind"] = "digest"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


async def render_for(
    store: Store, renderer: Renderer, digest: DigestSettings, start: float, end: float, now: float
) -> tuple[Any, tuple[str, str, str]]:
    """The digest content of a period, and its (subject, text, html)."""
    content = await store.read(
        lambda db: build_digest(
            db,
            period_start=start,
            period_end=end,
            timezone=digest.timezone,
            organizations=digest.organizations,
            now=now,
        )
    )
    return content, renderer.render_digest(content)


def current_period(digest: DigestSettings, now: float) -> tuple[float, float]:
    """The latest scheduled period that has ended by ``now`` (for ``makewatch digest``)."""
    end = previous_send_time(digest.schedule, now, inclusive=True)
    start, end = period_for(end, digest.schedule)
    return start.timestamp(), end.timestamp()


def _ts(value: datetime | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


async def send_due_digests(
    settings: Settings,
    store: Store,
    notifiers: dict[str, Notifier],
    renderer: Renderer,
    now: float,
    retry_at: dict[str, float] | None = None,
    *,
    metrics: Metrics | None = None,
) -> list[DigestRun]:
    """Send every digest that is due at ``now``; record each in the ``digests`` table.

    ``retry_at`` (kept by the caller between ticks) spaces out retries after a failed send.
    ``metrics`` counts each digest sent.
    """
    runs: list[DigestRun] = []
    retry_at = {} if retry_at is None else retry_at
    for digest in settings.digests:
        channel_name = email_channel_for(settings, digest)
        notifier = notifiers.get(channel_name)
        if not isinstance(notifier, EmailNotifier):
            log.error("digest channel %s is not an e-mail channel", channel_name)
            continue
        for recipient in digest.recipients:
            if retry_at.get(recipient, 0.0) > now:
                continue
            last_end = await store.read(
                lambda db, r=recipient: db.execute(
                    "SELECT MAX(period_end) FROM digests WHERE recipient = ?", [r]
                ).fetchone()[0]
            )
            if last_end is None:
                # A recipient's first digest covers from when makewatch first saw it to the first
                # scheduled time after that: a period it did not watch says nothing.
                last_end = await _first_seen(store, recipient, now)
            for due in due_digests(digest, last_end, now):
                run = await _send_one(
                    store, renderer, notifier, digest, recipient, _ts(due.period_start), _ts(due.period_end), now
                )
                runs.append(run)
                if run.sent and metrics is not None:
                    metrics.digest_sent()
                if run.error and run.error != "already claimed":
                    retry_at[recipient] = now + 300.0
    return runs


async def _first_seen(store: Store, recipient: str, now: float) -> float:
    key = f"digest_since:{recipient.casefold()}"

    def tx(db: Any) -> float:
        found = st.get_watch_state(db, key).get(key)
        if found is None:
            st.set_watch_state(db, {key: now}, now)
            return now
        return float(found)

    return await store.write(tx)


async def _send_one(
    store: Store,
    renderer: Renderer,
    notifier: EmailNotifier,
    digest: DigestSettings,
    recipient: str,
    start: float,
    end: float,
    now: float,
) -> DigestRun:
    def claim(db: Any) -> bool:
        existing = db.execute(
            "SELECT sent_at FROM digests WHERE recipient = ? AND period_start = ?", [recipient, start]
        ).fetchone()
        if existing is not None:
            if existing[0] is None:
                log.warning(
                    "digest for %s from %s was claimed but never confirmed (a crash while sending?): "
                    "not sending it twice",
                    recipient,
                    start,
                )
            return False
        db["digests"].insert({"recipient": recipient, "period_start": start, "period_end": end, "sent_at": None})
        return True

    if not await store.write(claim):
        return DigestRun(recipient, start, end, sent=False, error="already claimed")
    content, parts = await render_for(store, renderer, digest, start, end, now)
    if digest.skip_if_quiet and getattr(content, "quiet", False):
        await store.write(lambda db: db["digests"].update((recipient, start), {"sent_at": now}))
        return DigestRun(recipient, start, end, sent=False, skipped_quiet=True)
    msg = compose(notifier.settings, recipient, parts, start)
    try:
        await notifier.send_message(msg, [recipient])
    except DeliveryError as exc:
        await store.write(lambda db: db["digests"].delete((recipient, start)))
        log.warning("digest for %s not sent (%s); will retry", recipient, exc.message)
        return DigestRun(recipient, start, end, sent=False, error=exc.message)
    await store.write(lambda db: db["digests"].update((recipient, start), {"sent_at": now}))
    log.info("digest sent to %s", recipient)
    return DigestRun(recipient, start, end, sent=True)


def digest_for(settings: Settings, recipient: str) -> DigestSettings:
    for digest in settings.digests:
        if recipient.casefold() in (r.casefold() for r in digest.recipients):
            return digest
    raise LookupError(f"{recipient} is not a recipient of any [[digests]] table")


async def digest_now(
    settings: Settings,
    store: Store,
    notifiers: dict[str, Notifier],
    renderer: Renderer,
    recipient: str,
    now: float,
    *,
    send: bool,
    record: bool,
) -> tuple[tuple[str, str, str], DigestRun | None]:
    """The latest ended period's digest for ``recipient``; sent when ``send`` (recorded like a
    scheduled one only with ``record``). Returns the rendered parts and the run, if sent."""
    digest = digest_for(settings, recipient)
    start, end = current_period(digest, now)
    _, parts = await render_for(store, renderer, digest, start, end, now)
    if not send:
        return parts, None
    notifier = notifiers.get(email_channel_for(settings, digest))
    if not isinstance(notifier, EmailNotifier):
        raise LookupError("the digest's channel is not an e-mail channel")
    if record:
        return parts, await _send_one(store, renderer, notifier, digest, recipient, start, end, now)
    try:
        await notifier.send_message(compose(notifier.settings, recipient, parts, start), [recipient])
    except DeliveryError as exc:
        return parts, DigestRun(recipient, start, end, sent=False, error=exc.message)
    return parts, DigestRun(recipient, start, end, sent=True)
