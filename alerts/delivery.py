"""Draining the outbox: send each pending row on its channel, record every attempt.

At-least-once: a row is marked sent in the same transaction that records the successful
attempt, after the channel accepted it. The one window for a duplicate is a crash between the
channel's acceptance and that commit; nothing is ever lost (a row stays pending until a
success is recorded) and a row recorded as sent is never sent again.

Order: rows of one channel go out in outbox order. When a row of a channel fails and must be
retried, the channel's later rows wait behind it, so that a repeat never overtakes the first
notice it replies to, and everything queued during an outage arrives in order afterwards.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from alerts.notify.base import DeliveryError, Notification, Notifier
from watcher import store as st
from watcher.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter between ``base_s`` and ``max_s``."""

    base_s: float = 15.0
    max_s: float = 1800.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        cap = min(self.max_s, self.base_s * 2 ** max(0, attempts - 1))
        return cap / 2 + rng.uniform(0, cap / 2)


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    parked: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)


def _notification(row: Mapping[str, Any], thread_refs: Mapping[str, Any]) -> Notification:
    data = json.loads(row["payload_json"])
    return Notification(
        outbox_id=row["id"],
        channel=row["channel"],
        kind=data["kind"],
        phase=data["phase"],
        severity=data["severity"],
        reason=data["reason"],
        alert=data["alert"],
        thread_ref=thread_refs.get(row["channel"]),
    )


def _due_rows(db: Database, now: float) -> list[dict[str, Any]]:
    rows = db.query(
        """SELECT o.*, a.thread_ref_json AS alert_thread_refs FROM outbox o
           LEFT JOIN alerts a ON a.id = o.alert_id
           WHERE o.status = 'pending' ORDER BY o.id""",
    )
    return [dict(r) for r in rows]


async def deliver_due(
    store: Store,
    notifiers: Mapping[str, Notifier],
    now: float,
    *,
    rng: random.Random | None = None,
    policy: RetryPolicy | None = None,
) -> DeliveryReport:
    """One pass over the outbox: send every row that is due, in order per channel."""
    rng = rng or random.Random()
    policy = policy or RetryPolicy()
    report = DeliveryReport()
    rows = await store.read(lambda db: _due_rows(db, now))
    blocked: set[str] = set()
    for row in rows:
        channel = row["channel"]
        if channel in blocked:
            report.waiting += 1
            continue
        if (row["next_attempt_at"] or 0) > now:
            blocked.add(channel)  # keep order: nothing of this channel overtakes it
            report.waiting += 1
            continue
        notifier = notifiers.get(channel)
        if notifier is None:
            await _park(store, row, now, f"channel {channel!r} is not configured")
            report.parked += 1
            continue
        refs = json.loads(row["alert_thread_refs"] or "{}") if row.get("alert_thread_refs") else {}
        try:
            ref = await notifier.send(_notification(row, refs))
        except DeliveryError as exc:
            attempts = (row["attempts"] or 0) + 1
            if exc.permanent:
                await _park(store, row, now, exc.message, attempts=attempts)
                report.parked += 1
                report.errors.append(f"{channel}: {exc.message}")
                log.error("channel %s: outbox row %s parked: %s", channel, row["id"], exc.message)
                continue
            wait = max(policy.delay(attempts, rng), exc.retry_after_s or 0.0)
            await _retry_later(store, row, now, exc.message, attempts, now + wait)
            report.retried += 1
            blocked.add(channel)
            log.warning(
                "channel %s: outbox row %s failed (attempt %d), retry in %.0f s: %s",
                channel, row["id"], attempts, wait, exc.message,
            )
            continue
        await _mark_sent(store, row, now, channel, ref, refs)
        report.sent += 1
    return report


async def _mark_sent(
    store: Store, row: Mapping[str, Any], now: float, channel: str, ref: Any, refs: dict[str, Any]
) -> None:
    def tx(db: Database) -> None:
        db["outbox"].update(
            row["id"],
            {"status": "sent", "sent_at": now, "attempts": (row["attempts"] or 0) + 1, "last_error": None},
        )
        db["deliveries"].insert({"outbox_id": row["id"], "attempted_at": now, "ok": 1, "error": None})
        if ref and row["alert_id"] is not None and channel not in refs:
            # Keep the first message's reference: later notices thread under (or update) it.
            refs2 = {**refs, channel: ref}
            db["alerts"].update(row["alert_id"], {"thread_ref_json": json.dumps(refs2)})

    await store.write(tx)


async def _retry_later(
    store: Store, row: Mapping[str, Any], now: float, error: str, attempts: int, at: float
) -> None:
    def tx(db: Database) -> None:
        db["outbox"].update(row["id"], {"attempts": attempts, "next_attempt_at": at, "last_error": error[:500]})
        db["deliveries"].insert({"outbox_id": row["id"], "attempted_at": now, "ok": 0, "error": error[:500]})

    await store.write(tx)


async def _park(
    store: Store, row: Mapping[str, Any], now: float, error: str, *, attempts: int | None = None
) -> None:
    """Give up on a row, and raise a watcher_health event so other channels hear of it."""
    channel = row["channel"]

    def tx(db: Database) -> None:
        db["outbox"].update(
            row["id"],
            {"status": "parked", "attempts": attempts or row["attempts"] or 0, "last_error": error[:500]},
        )
        db["deliveries"].insert({"outbox_id": row["id"], "attempted_at": now, "ok": 0, "error": error[:500]})
        day = int(now // 86400)
        st.insert_events(
            db,
            [
                {
                    "key": f"watcher_health:0:channel_failed:{channel}:{day}",
                    "kind": "watcher_health",
                    "severity": "critical",
                    "org_id": 0,
                    "occurred_at": now,
                    "detected_at": now,
                    "payload": {
                        "organization": "makewatch",
                        "problem": "channel_failed",
                        "channel": channel,
                        "error": error[:500],
                        "exclude_channel": channel,
                    },
                }
            ],
        )

    await store.write(tx)
