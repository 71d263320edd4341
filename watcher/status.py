"""What the state file says right now (no call to Make), as data and as ``makewatch status``.

The functions returning data (:func:`org_statuses`, :func:`channel_statuses`,
:func:`open_alerts`, :func:`outbox_counts`, :func:`silences_in_force`) are shared by the
CLI's text (:func:`status_report`), the web status page, ``/healthz`` and ``/metrics``, so
that every surface tells the same story. Each takes a ``Database`` inside a read
transaction (``store.read(lambda db: ...)``) and reads no clock: ``now`` is passed in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database

from watcher import dialect

__all__ = [
    "ChannelStatus",
    "OrgStatus",
    "channel_statuses",
    "open_alerts",
    "org_statuses",
    "outbox_counts",
    "silences_in_force",
    "windows_ahead",
    "status_report",
    "when",
]

CHANNEL_STATE_PREFIX = "delivery:channel:"  # alerts.delivery.STATE_PREFIX (no import: one-way flow)


@dataclass(frozen=True)
class ChannelStatus:
    """One channel's queue: pending rows, the oldest one's creation time, the current run of
    failures and the last error (its text is what alerts.delivery stored: a status and a
    short code, never a URL or token)."""

    name: str
    pending: int = 0
    oldest_at: float | None = None
    parked: int = 0
    failing_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None

    def oldest_age_s(self, now: float) -> float | None:
        return None if self.oldest_at is None else max(0.0, now - self.oldest_at)


@dataclass(frozen=True)
class OrgStatus:
    """One organization as the store knows it: its last cycle, failures, scenarios, quota."""

    id: int
    name: str
    plan: str | None
    last_cycle: dict[str, Any] | None  # the cycles row: started_at, finished_at, ok, error, requests, budget_per_minute
    last_ok_at: float | None  # end of the last successful cycle
    consecutive_failures: int
    last_error: str | None
    scenarios: int
    active: int
    switched_off: int
    incomplete: int
    pending_reads: int
    quota_pct: float | None
    operations_limit: int | None


def _one(db: Database, sql: str, args: list[Any]) -> dict[str, Any] | None:
    return next((dict(r) for r in db.query(sql, args)), None)


def org_statuses(db: Database) -> list[OrgStatus]:
    """Every organization polled at least once, by name."""
    if not db["organizations"].exists():
        return []
    out = []
    for org in db["organizations"].rows_where(order_by="name"):
        oid = org["id"]
        last = _one(db, "SELECT * FROM cycles WHERE org_id = ? ORDER BY id DESC LIMIT 1", [oid])
        ok = db.execute("SELECT MAX(finished_at) FROM cycles WHERE org_id = ? AND ok = 1", [oid]).fetchone()[0]
        health = _one(db, "SELECT * FROM org_health WHERE org_id = ?", [oid]) or {}
        total, active, off, dlq, pending = (
            v or 0
            for v in db.execute(
                # CASE, not a boolean summed: PostgreSQL has no SUM of a boolean.
                "SELECT COUNT(*), SUM(is_active), "
                "SUM(CASE WHEN is_invalid = 1 AND is_active = 0 THEN 1 ELSE 0 END), SUM(dlq_count), "
                "SUM(CASE WHEN pending_since IS NOT NULL THEN 1 ELSE 0 END) FROM scenarios WHERE org_id = ?",
                [oid],
            ).fetchone()
        )
        usage = json.loads(org["usage_json"]) if org.get("usage_json") else None
        out.append(
            OrgStatus(
                id=oid,
                name=org["name"],
                plan=org["plan"],
                last_cycle=last,
                last_ok_at=ok,
                consecutive_failures=health.get("consecutive_failures") or 0,
                last_error=health.get("last_error"),
                scenarios=total,
                active=active,
                switched_off=off,
                incomplete=dlq,
                pending_reads=pending,
                quota_pct=(usage or {}).get("used_pct"),
                operations_limit=(usage or {}).get("operations_limit"),
            )
        )
    return out


def channel_statuses(db: Database) -> list[ChannelStatus]:
    """Every channel that has outbox rows or a delivery state, by name."""
    pending = {
        r["channel"]: (r["n"], r["oldest"])
        for r in db.query(
            "SELECT channel, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox "
            "WHERE status = 'pending' GROUP BY channel"
        )
    }
    parked = dict(db.execute("SELECT channel, COUNT(*) FROM outbox WHERE status = 'parked' GROUP BY channel").fetchall())
    # The error of each channel's latest failed attempt (on a tie, the latest row wins).
    errors = {
        r["channel"]: (r["error"], r["at"])
        for r in db.query(
            "SELECT o.channel AS channel, d.error AS error, d.attempted_at AS at "
            "FROM deliveries d JOIN outbox o ON o.id = d.outbox_id JOIN ("
            " SELECT o2.channel AS channel, MAX(d2.attempted_at) AS at FROM deliveries d2"
            " JOIN outbox o2 ON o2.id = d2.outbox_id WHERE d2.ok = 0 GROUP BY o2.channel"
            ") latest ON latest.channel = o.channel AND latest.at = d.attempted_at "
            "WHERE d.ok = 0 ORDER BY d.id"
        )
    }
    states: dict[str, dict[str, Any]] = {}
    if db["watch_state"].exists():
        for r in db.query("SELECT key, value_json FROM watch_state WHERE key LIKE 'delivery:channel:%'"):
            states[r["key"][len(CHANNEL_STATE_PREFIX) :]] = json.loads(r["value_json"])
    out = []
    for name in sorted(set(pending) | set(errors) | set(states) | set(parked)):
        n, oldest = pending.get(name, (0, None))
        state = states.get(name, {})
        error, at = errors.get(name, (None, None))
        if state.get("last_error_at") and (at is None or state["last_error_at"] >= at):
            error, at = state.get("last_error"), state["last_error_at"]
        out.append(
            ChannelStatus(
                name=name,
                pending=n,
                oldest_at=oldest,
                parked=parked.get(name, 0),
                failing_since=state.get("failing_since"),
                last_error=error,
                last_error_at=at,
                last_ok_at=state.get("last_ok_at"),
            )
        )
    return out


def open_alerts(db: Database, limit: int | None = None) -> list[dict[str, Any]]:
    """Alerts not resolved, newest first, ``payload`` decoded."""
    sql = "SELECT * FROM alerts WHERE state != 'resolved' ORDER BY last_seen DESC, id DESC"
    rows = [dict(r) for r in db.query(sql + (f" LIMIT {int(limit)}" if limit else ""))]
    for row in rows:
        row["payload"] = json.loads(row.pop("payload_json", None) or "{}")
    return rows


def outbox_counts(db: Database) -> dict[str, int]:
    """Outbox rows by status (pending, sent, parked)."""
    counts = dict(db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall())
    return {k: counts.get(k, 0) for k in ("pending", "sent", "parked")}


def silences_in_force(db: Database, now: float) -> list[dict[str, Any]]:
    """One-off silences active at ``now``, ``matchers`` decoded, soonest to end first (the
    maintenance windows are :func:`windows_ahead`'s: a stored window's row spans its whole
    validity, not an occurrence)."""
    windows = "timezone IS NULL AND " if "timezone" in db["silences"].columns_dict else ""
    rows = [
        dict(r)
        for r in db.query(
            f"SELECT * FROM silences WHERE {windows}expired_at IS NULL AND starts_at <= ? AND ends_at > ? "
            "ORDER BY ends_at, id",
            [now, now],
        )
    ]
    for row in rows:
        row["matchers"] = json.loads(row.pop("matchers_json", None) or "{}")
    return rows


def windows_ahead(db: Database, settings: Any, now: float) -> list[tuple[Any, Any, bool]]:
    """Every maintenance window with an occurrence in force or to come: ``(window, that
    occurrence as a Silence, from_config)``, stored ones first (by id), then those of
    ``settings`` (``[[silences]]``; None: stored ones only)."""
    from alerts.policy import Policy
    from alerts.silences import Window

    out: list[tuple[Any, Any, bool]] = []
    if "timezone" in db["silences"].columns_dict:
        for row in db["silences"].rows_where(
            "expired_at IS NULL AND ends_at > ? AND timezone IS NOT NULL", [now], order_by="id"
        ):
            try:
                window = Window.from_row(dict(row))
            except (ValueError, KeyError):
                continue
            found = window.silence_at(now)
            if found is not None:
                out.append((window, found, False))
    if settings is not None:
        for window in Policy.from_settings(settings).windows():
            found = window.silence_at(now)
            if found is not None:
                out.append((window, found, True))
    return out


# --- the text of `makewatch status` -----------------------------------------------------------


def when(ts: float | None) -> str:
    """Epoch seconds as ``2026-09-21 14:13:20 UTC`` (the zone always shown), or "never"."""
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3.5 h``: a duration short enough for a table cell."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds // 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _channel_lines(channels: list[ChannelStatus], now: float) -> list[str]:
    if not channels:
        return []
    lines = ["channels:"]
    for c in channels:
        line = f"  {c.name}: {c.pending} pending"
        if c.oldest_at is not None:
            line += f", oldest {age(now - c.oldest_at)}"
        if c.failing_since is not None:
            line += f"; failing since {when(c.failing_since)}"
        if c.last_error:
            line += f"; last error {when(c.last_error_at)}: {c.last_error}"
        lines.append(line)
    return lines


def lease_lines(db: Database, now: float) -> list[str]:
    """Who holds what, on PostgreSQL with replicas (watcher.replicas): each replica with its
    heartbeat and leases, then any lease nobody holds. Nothing on SQLite (no leases)."""
    if not db["leases"].exists():
        return []
    leases = list(db.query("SELECT name, holder, generation, expires_at FROM leases ORDER BY name"))
    if not leases:
        return []
    if dialect.engine(db) == dialect.POSTGRES:
        # Leases and heartbeats are stamped by the database server's clock: compare with it,
        # not with this machine's (which may be skewed).
        now = float(db.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
    names = {f"org:{r['id']}": r["name"] for r in db.query("SELECT id, name FROM organizations")}
    replicas = {r["id"]: r for r in db.query("SELECT id, heartbeat_at FROM replicas ORDER BY id")}

    def label(name: str) -> str:
        return f"{name} ({names[name]})" if name in names else name

    held: dict[str, list[str]] = {}
    free: list[str] = []
    for lease in leases:
        if lease["holder"] and (lease["expires_at"] or 0) > now:
            held.setdefault(lease["holder"], []).append(label(lease["name"]))
        else:
            was = f", last held by {lease['holder']}" if lease["holder"] else ""
            free.append(f"{label(lease['name'])}{was}")
    live = [rid for rid, r in replicas.items() if rid in held or (r["heartbeat_at"] or 0) > now - 120]
    lines = [f"replicas: {len(held)} holding leases, {len(live)} seen in the last 2 minutes"]
    for rid in sorted(set(held) | set(live)):
        beat = replicas.get(rid, {}).get("heartbeat_at")
        seen = f"heartbeat {max(0, round(now - beat))} s ago" if beat else "no heartbeat"
        lines.append(f"  {rid} ({seen}): " + (", ".join(held.get(rid, [])) or "holds nothing (standby)"))
    if free:
        lines.append("  held by nobody: " + "; ".join(free))
    return lines


def status_report(db: Database, now: float) -> str:
    """Organizations (last cycle, failures, budget), open alerts, the outbox, silences."""
    lines: list[str] = []
    orgs = org_statuses(db)
    if not orgs:
        if not db["outbox"].exists() or not db["outbox"].count:
            return "No organization polled yet (run `makewatch once` or `makewatch run`)."
        lines.append("No organization polled yet.")
    for org in orgs:
        last = org.last_cycle
        lines.append(f"{org.name} (organization {org.id}, plan {org.plan or '?'})")
        if last:
            state = "ok" if last["ok"] else f"FAILED: {last['error']}"
            lines.append(
                f"  last cycle {when(last['started_at'])}: {state}; {last['requests']} requests "
                f"(budget {last['budget_per_minute']}/min)"
            )
        if org.consecutive_failures:
            lines.append(f"  failing for {org.consecutive_failures} cycle(s): {org.last_error}")
        lines.append(
            f"  scenarios {org.scenarios} ({org.active} active, {org.switched_off} switched off by errors), "
            f"{org.incomplete} incomplete executions, {org.pending_reads} waiting to be read"
        )
        if org.quota_pct is not None:
            lines.append(f"  quota {org.quota_pct} % of {org.operations_limit} operations")
    alerts = open_alerts(db, limit=20)
    lines.append(f"open alerts: {len(alerts)}" + (" (latest 20)" if len(alerts) == 20 else ""))
    for a in alerts:
        p = a["payload"]
        what = p.get("scenario_name") or p.get("hook_name") or p.get("organization") or ""
        lines.append(f"  [{a['severity']}] {a['kind']} {a['state']} x{a['count']}: {what} (last {when(a['last_seen'])})")
    counts = outbox_counts(db)
    lines.append(f"outbox: {counts['pending']} pending, {counts['sent']} sent, {counts['parked']} parked")
    lines += _channel_lines(channel_statuses(db), now)
    lines.append(f"silences in force: {len(silences_in_force(db, now))}")
    lines += lease_lines(db, now)
    return "\n".join(lines)
