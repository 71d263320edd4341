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


def status_report(db: Database, now: float) -> str:
    """Organizations (last cycle, failures, budget), open alerts, the outbox, silences."""
    lines: list[str] = []
    orgs = list(db["organizations"].rows_where(order_by="name")) if db["organizations"].exists() else []
    if not orgs:
        return "No organization polled yet (run `makewatch once` or `makewatch run`)."
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
    silences = db.execute(
        "SELECT COUNT(*) FROM silences WHERE expired_at IS NULL AND starts_at <= ? AND ends_at > ?", [now, now]
    ).fetchone()[0]
    lines.append(f"silences in force: {silences}")
    return "\n".join(lines)
