"""Silences in the store: add, list, expire (behind ``makewatch silence ...`` and the status
page's forms, which both check a new silence with :func:`silence_problem`).

Adding or expiring a silence makes the open alerts it matches due (``alerts.due_at``) in the
same transaction: the alert tick decides only alerts with new events or a timer due
(alerts.engine, "Timers"), and a silence is news to the alerts it matches. A maintenance
window (``add_window``) makes them due when its next occurrence starts; from then on each
decision of a matching alert keeps the window's next start or end as a timer.

``list_windows`` gives the windows in force or coming, stored and configured (``[[silences]]``,
marked ``from_config``: they are read from the settings, never stored).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from alerts.engine import AlertState, labels
from alerts.silences import (
    MAX_DURATION_S,
    WEEKDAYS,
    Silence,
    Window,
    org_matches,
    parse_clock,
    parse_weekdays,
)
from watcher import dialect
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


def _matchers(
    scenario_id: int | None, org: str | None, kind: str | None, error_contains: str | None
) -> dict[str, Any]:
    """The matchers given (a silence's or a window's), in the order they are shown."""
    given = {"scenario_id": scenario_id, "org": org or None, "kind": kind or None,
             "error_contains": error_contains or None}
    return {k: v for k, v in given.items() if v is not None}


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
    matchers = _matchers(scenario_id, org, kind, error_contains)
    silence = Silence(id="new", matchers=matchers, starts_at=now, ends_at=now + duration_s, reason=reason)  # validates
    row = {
        "matchers_json": json.dumps(matchers),
        "starts_at": now,
        "ends_at": now + duration_s,
        "reason": reason,
        "created_by": created_by,
        "created_at": now,
    }
    def tx(db: Any) -> int:
        silence_id = db["silences"].insert(row).last_pk
        mark_matching_due(db, silence, now)
        return silence_id

    return store.write_sync(tx)


def mark_matching_due(db: Any, silence: Silence, at: float) -> int:
    """Make every open alert ``silence`` matches due at ``at`` (or keep an earlier due time);
    returns how many. Inside the caller's transaction."""
    where, args = "state != 'resolved'", []
    wanted = silence.matchers.get("scenario_id")
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        where, args = where + " AND scenario_id = ?", [wanted]
    kinds = silence.matchers.get("kind")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        kind_in, kind_args = dialect.in_list(db, "kind", kinds)
        where, args = f"{where} AND {kind_in}", [*args, *kind_args]
    ids = []
    for r in db.query(
        f"SELECT id, kind, severity, org_id, team_id, scenario_id, payload_json FROM alerts WHERE {where}",  # noqa: S608 - fixed text, values bound
        args,
    ):
        alert = AlertState(
            fingerprint="",
            kind=r["kind"],
            severity=r["severity"],
            org_id=r["org_id"],
            team_id=r["team_id"],
            scenario_id=r["scenario_id"],
            payload=json.loads(r["payload_json"] or "{}"),
        )
        if silence.matches(labels(alert)):
            ids.append(r["id"])
    if ids:
        id_in, id_args = dialect.in_list(db, "id", ids)
        db.execute(
            f"UPDATE alerts SET due_at = CASE WHEN due_at < ? THEN due_at ELSE ? END WHERE {id_in}",  # noqa: S608 - fixed text
            [at, at, *id_args],
        )
    return len(ids)


def list_silences(store: Store, now: float, *, include_ended: bool = False) -> list[dict[str, Any]]:
    where = "1 = 1" if include_ended else "expired_at IS NULL AND ends_at > ?"
    args: list[Any] = [] if include_ended else [now]
    rows = store.read_sync(lambda db: [dict(r) for r in db["silences"].rows_where(where, args, order_by="id")])
    for row in rows:
        row["matchers"] = json.loads(row.pop("matchers_json") or "{}")
    return rows


def expire_silence(store: Store, silence_id: int, now: float) -> bool:
    """End a silence now; False if there is no such silence in force."""

    def tx(db: Any) -> bool:
        row = next(iter(db["silences"].rows_where("id = ? AND expired_at IS NULL", [silence_id])), None)
        if row is None:
            return False
        db.execute(
            # As SQLite's MIN(ends_at, now): a window's NULL end stays NULL.
            "UPDATE silences SET expired_at = ?, ends_at = CASE WHEN ends_at > ? THEN ? ELSE ends_at END WHERE id = ?",
            [now, now, now, silence_id],
        )
        mark_matching_due(db, Silence.from_row(row), now)  # as it was: it may end before it began
        return True

    return store.write_sync(tx)


def add_window(
    store: Store,
    *,
    now: float,
    weekdays: str,
    start: str,
    end: str,
    timezone: str,
    reason: str,
    name: str = "",
    duration_s: float = MAX_DURATION_S,
    scenario_id: int | None = None,
    org: str | None = None,
    kind: str | None = None,
    error_contains: str | None = None,
    notify_resolved: bool = False,
    created_by: str = "",
) -> int:
    """Record a maintenance window (``weekdays`` ``"sun,mon"``, ``HH:MM`` times) in force from
    now for ``duration_s`` (a year by default) or until expired; returns its id. ValueError
    for a bad weekday, time, zone or no matcher."""
    matchers = _matchers(scenario_id, org, kind, error_contains)
    days = parse_weekdays(weekdays)
    row = {
        "matchers_json": json.dumps(matchers),
        "starts_at": now,
        "ends_at": now + duration_s,
        "reason": reason,
        "created_by": created_by,
        "created_at": now,
        "weekdays": ",".join(WEEKDAYS[d] for d in days),
        "start_time": f"{parse_clock(start):%H:%M}",
        "end_time": f"{parse_clock(end):%H:%M}",
        "timezone": timezone,
        "name": name,
        "notify_resolved": int(notify_resolved),
    }
    Window.from_row({**row, "id": "new"})  # validates

    def tx(db: Any) -> int:
        window_id = db["silences"].insert(row).last_pk
        found = Window.from_row({**row, "id": window_id}).silence_at(now)
        if found is not None:
            mark_matching_due(db, found, max(now, found.starts_at))
        return window_id

    return store.write_sync(tx)


def next_windows(
    store: Store, settings: Settings | None, now: float
) -> list[tuple[Window, Silence, bool]]:
    """Every window with an occurrence in force or to come: ``(window, that occurrence,
    from_config)``, stored ones first (by id), then the ``[[silences]]`` of ``settings``."""
    from watcher.status import windows_ahead

    return store.read_sync(lambda db: windows_ahead(db, settings, now))
