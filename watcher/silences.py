"""Silences in the store: add, list, expire (behind ``makewatch silence ...`` and the status
page's forms, which both check a new silence with :func:`silence_problem`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from alerts.silences import MAX_DURATION_S, Silence, org_matches
from watcher.store import Store

if TYPE_CHECKING:
    from watcher.config import Settings


def silence_problem(
    settings: Settings, *, seconds: float, org: str | None, kind: str | None, reason: str
) -> tuple[str, str] | None:
    """``(field, message)`` when a new silence would do nothing, or not what was meant; else
    None. ``field`` is ``for``, ``reason``, ``kind`` or ``org`` (the CLI's option names)."""
    from alerts.policy import ALERT_KINDS

    if seconds <= 0:
        return "for", "must be longer than 0, such as 30m, 2h or 7d"
    if seconds > MAX_DURATION_S:
        return "for", "must be at most 365d"
    if not reason.strip():
        return "reason", "must not be empty: say why (it is shown in the digest and `silence list`)"
    if kind is not None and kind not in ALERT_KINDS:
        return "kind", f"unknown kind {kind!r}; expected one of: {', '.join(ALERT_KINDS)}"
    if org is not None:
        if not org.strip():
            return "org", "must not be empty"
        if not any(org_matches(org, o.organization_id, o.name) for o in settings.organizations):
            known = ", ".join(f"{o.name} ({o.organization_id})" for o in settings.organizations)
            return "org", f"{org!r} matches no configured organization; configured: {known}"
    return None


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
