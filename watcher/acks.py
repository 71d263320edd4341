"""Acknowledging an alert: "someone is on it" (behind the status page's Acknowledge button).

An acknowledged alert gets no more notices until it resolves; its resolution is still told
(alerts.engine). Only an open alert can be acknowledged; the one who did and when are kept on
the alert row and shown on the status page.
"""

from __future__ import annotations

from typing import Any

from watcher.store import Store

__all__ = ["MAX_BY_LENGTH", "acknowledge"]

MAX_BY_LENGTH = 100


async def acknowledge(store: Store, alert_id: int, by: str, now: float) -> bool:
    """Record that ``by`` acknowledged alert ``alert_id`` at ``now``; False if it is not open
    (resolved, unknown) or already acknowledged."""
    who = " ".join(by.split())[:MAX_BY_LENGTH] or "someone"

    def tx(db: Any) -> bool:
        return bool(
            db.execute(
                # Due now: the alert tick decides only alerts with news (alerts.engine, "Timers").
                "UPDATE alerts SET acked_at = ?, acked_by = ?, due_at = CASE WHEN due_at < ? THEN due_at ELSE ? END "
                "WHERE id = ? AND state != 'resolved' AND acked_at IS NULL",
                [now, who, now, now, alert_id],
            ).rowcount
        )

    return await store.write(tx)
