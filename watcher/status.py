"""``makewatch status``: what the store says right now (no call to Make)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds // 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _channel_lines(db: Database, now: float) -> list[str]:
    """Per channel: pending rows, the oldest one's age, the last error and when (its text
    is what alerts.delivery stored: a status and a short code, never a URL or token)."""
    pending = {
        r["channel"]: (r["n"], r["oldest"])
        for r in db.query(
            "SELECT channel, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox "
            "WHERE status = 'pending' GROUP BY channel"
        )
    }
    # SQLite: a bare column beside MAX() comes from the row holding the maximum.
    errors = {
        r["channel"]: (r["error"], r["at"])
        for r in db.query(
            "SELECT o.channel AS channel, d.error AS error, MAX(d.attempted_at) AS at "
            "FROM deliveries d JOIN outbox o ON o.id = d.outbox_id WHERE d.ok = 0 GROUP BY o.channel"
        )
    }
    states: dict[str, dict[str, Any]] = {}
    if db["watch_state"].exists():
        for r in db.query("SELECT key, value_json FROM watch_state WHERE key LIKE 'delivery:channel:%'"):
            states[r["key"][len("delivery:channel:") :]] = json.loads(r["value_json"])
    names = sorted(set(pending) | set(errors) | set(states))
    if not names:
        return []
    lines = ["channels:"]
    for name in names:
        n, oldest = pending.get(name, (0, None))
        state = states.get(name, {})
        error, at = errors.get(name, (None, None))
        if state.get("last_error_at") and (at is None or state["last_error_at"] >= at):
            error, at = state.get("last_error"), state["last_error_at"]
        line = f"  {name}: {n} pending"
        if oldest is not None:
            line += f", oldest {_age(now - oldest)}"
        if state.get("failing_since") is not None:
            line += f"; failing since {_when(state['failing_since'])}"
        if error:
            line += f"; last error {_when(at)}: {error}"
        lines.append(line)
    return lines


def status_report(db: Database, now: float) -> str:
    """Organizations (last cycle, failures, budget), open alerts, the outbox, silences."""
    lines: list[str] = []
    orgs = list(db["organizations"].rows_where(order_by="name")) if db["organizations"].exists() else []
    if not orgs:
        if not db["outbox"].exists() or not db["outbox"].count:
            return "No organization polled yet (run `makewatch once` or `makewatch run`)."
        lines.append("No organization polled yet.")
    for org in orgs:
        last = next(
            iter(db.query("SELECT * FROM cycles WHERE org_id = ? ORDER BY id DESC LIMIT 1", [org["id"]])), None
        )
        health = next(iter(db.query("SELECT * FROM org_health WHERE org_id = ?", [org["id"]])), None)
        scenarios = db.execute(
            "SELECT COUNT(*), SUM(is_active), SUM(is_invalid AND NOT is_active), SUM(dlq_count), "
            "SUM(pending_since IS NOT NULL) FROM scenarios WHERE org_id = ?",
            [org["id"]],
        ).fetchone()
        lines.append(f"{org['name']} (organization {org['id']}, plan {org['plan'] or '?'})")
        if last:
            state = "ok" if last["ok"] else f"FAILED: {last['error']}"
            lines.append(
                f"  last cycle {_when(last['started_at'])}: {state}; {last['requests']} requests "
                f"(budget {last['budget_per_minute']}/min)"
            )
        if health and health["consecutive_failures"]:
            lines.append(f"  failing for {health['consecutive_failures']} cycle(s): {health['last_error']}")
        total, active, off, dlq, pending = (v or 0 for v in scenarios)
        lines.append(
            f"  scenarios {total} ({active} active, {off} switched off by errors), "
            f"{dlq} incomplete executions, {pending} waiting to be read"
        )
        usage = json.loads(org["usage_json"]) if org.get("usage_json") else None
        if usage and usage.get("used_pct") is not None:
            lines.append(f"  quota {usage['used_pct']} % of {usage['operations_limit']} operations")
    open_alerts = list(
        db.query(
            "SELECT kind, severity, state, count, last_seen, payload_json FROM alerts "
            "WHERE state != 'resolved' ORDER BY last_seen DESC LIMIT 20"
        )
    )
    lines.append(f"open alerts: {len(open_alerts)}" + (" (latest 20)" if len(open_alerts) == 20 else ""))
    for a in open_alerts:
        p: dict[str, Any] = json.loads(a["payload_json"] or "{}")
        what = p.get("scenario_name") or p.get("hook_name") or p.get("organization") or ""
        lines.append(f"  [{a['severity']}] {a['kind']} {a['state']} x{a['count']}: {what} (last {_when(a['last_seen'])})")
    counts = dict(db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall())
    lines.append(
        f"outbox: {counts.get('pending', 0)} pending, {counts.get('sent', 0)} sent, {counts.get('parked', 0)} parked"
    )
    lines += _channel_lines(db, now)
    silences = db.execute(
        "SELECT COUNT(*) FROM silences WHERE expired_at IS NULL AND starts_at <= ? AND ends_at > ?", [now, now]
    ).fetchone()[0]
    lines.append(f"silences in force: {silences}")
    return "\n".join(lines)
