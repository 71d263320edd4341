"""Silences in the store: add, list, expire (behind ``makewatch silence ...``)."""

from __future__ import annotations

import json
from typing import Any

from alerts.silences import Silence
from watcher.store import Store


def add_silence(
    store: Store,
    *,
    now: float,
    duration_s: float,
    reason: str,
    scenario_id: int | None = None,
    org: str | None = None,
    kind: str | None = None,
    error_contains: str | None = None,
    created_by: str = "",
) -> int:
    """Record a silence starting now; returns its id. At least one matcher is required."""
    matchers: dict[str, Any] = {}
    if scenario_id is not None:
        matchers["scenario_id"] = scenario_id
    if org:
        matchers["org"] = org
    if kind:
        matchers["kind"] = kind
    if error_contains:
        matchers["error_contains"] = error_contains
    Silence(id="new", matchers=matchers, starts_at=now, ends_at=now + duration_s, reason=reason)  # validates
    row = {
        "matchers_json": json.dumps(matchers),
        "starts_at": now,
        "ends_at": now + duration_s,
        "reason": reason,
        "created_by": created_by,
        "created_at": now,
    }
    return store.write_sync(lambda db: db["silences"].insert(row).last_pk)


def list_silences(store: Store, now: float, *, include_ended: bool = False) -> list[dict[str, Any]]:
    where = "1" if include_ended else "expired_at IS NULL AND ends_at > ?"
    args: list[Any] = [] if include_ended else [now]
    rows = store.read_sync(lambda db: [dict(r) for r in db["silences"].rows_where(where, args, order_by="id")])
    for row in rows:
        row["matchers"] = json.loads(row.pop("matchers_json") or "{}")
    return rows


def expire_silence(store: Store, silence_id: int, now: float) -> bool:
    """End a silence now; False if there is no such silence in force."""

    def tx(db: Any) -> bool:
        found = db.execute(
            "UPDATE silences SET expired_at = ?, ends_at = MIN(ends_at, ?) WHERE id = ? AND expired_at IS NULL",
            [now, now, silence_id],
        ).rowcount
        return bool(found)

    return store.write_sync(tx)
