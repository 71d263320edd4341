"""From stored events to outbox rows: load state, ``decide``, write it all in one transaction.

The decision (alert states, outbox rows, each event's reason, flood counters) commits in the
same transaction that marks the events it consumed as processed: a crash before the commit
leaves the events unprocessed (decided again next time), a crash after it leaves the outbox
rows to deliver. Nothing is decided twice, nothing is lost.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from alerts.engine import AlertState, Decision, FloodState, Planned, decide
from alerts.fingerprint import fingerprint
from alerts.policy import Policy
from alerts.silences import Silence
from watcher import store as st
from watcher.store import Store

if TYPE_CHECKING:
    from watcher.web.metrics import Metrics

log = logging.getLogger(__name__)

BATCH = 2000


@dataclass
class ProcessReport:
    events: int = 0
    notifications: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def outbox_payload(p: Planned) -> dict[str, Any]:
    """What the delivery loop turns back into a ``Notification`` (see alerts.delivery)."""
    return {
        "kind": p.kind,
        "phase": p.phase,
        "severity": p.severity,
        "reason": p.reason,
        "alert": {
            "fingerprint": p.fingerprint,
            "org_id": p.org_id,
            "team_id": p.team_id,
            "scenario_id": p.scenario_id,
            "count": p.count,
            "count_since_notice": p.count_since_notice,
            "first_seen": p.first_seen,
            "last_seen": p.last_seen,
            "payload": p.payload,
            "samples": p.samples,
            "held_back": p.items,
            "previous_notice_at": p.previous_notice_at,
        },
    }


def _load(db: Database, events: list[dict[str, Any]], now: float, policy: Policy) -> tuple[
    dict[str, AlertState], list[Silence], dict[str, FloodState]
]:
    fps = sorted({fingerprint(e, policy.alerts.group_by) for e in events})
    rows = list(db["alerts"].rows_where("state != 'resolved'"))
    if fps:
        rows += list(
            db["alerts"].rows_where(
                "state = 'resolved' AND fingerprint IN (SELECT value FROM json_each(?))", [json.dumps(fps)]
            )
        )
    alerts = {}
    for row in rows:
        decoded = st._decode("alerts", row)
        alerts[decoded["fingerprint"]] = AlertState.from_row(decoded)
    silences = [
        Silence.from_row(st._decode("silences", r) | {"matchers": json.loads(r["matchers_json"] or "{}")})
        for r in db["silences"].rows_where(
            "(expired_at IS NULL) AND ends_at > ?", [now]
        )
    ]
    flood = {
        key.removeprefix("flood:"): FloodState.from_dict(value)
        for key, value in st.get_watch_state(db, "flood:").items()
    }
    return alerts, silences, flood


def _write(db: Database, decision: Decision, events: list[dict[str, Any]], now: float) -> int:
    for alert in decision.alerts:
        row = alert.to_row()
        existing = next(iter(db["alerts"].rows_where("fingerprint = ?", [alert.fingerprint], limit=1)), None)
        encoded = st._encode("alerts", row)
        if existing:
            db["alerts"].update(existing["id"], encoded)
        else:
            db["alerts"].insert(encoded)
    ids = {
        r["fingerprint"]: r["id"]
        for r in db.query(
            "SELECT id, fingerprint FROM alerts WHERE fingerprint IN (SELECT value FROM json_each(?))",
            [json.dumps([p.fingerprint for p in decision.notifications if p.fingerprint])],
        )
    }
    by_key = {e["key"]: e for e in events}
    written = 0
    for p in decision.notifications:
        exclude = (p.payload or {}).get("exclude_channel")
        if exclude and exclude == p.channel:
            continue  # a failing channel is not told that it fails
        db["outbox"].insert(
            {
                "alert_id": ids.get(p.fingerprint) if p.fingerprint else None,
                "channel": p.channel,
                "kind": p.phase,
                "payload_json": json.dumps(outbox_payload(p), default=str),
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "dedup_key": p.dedup_key,
            },
            ignore=True,  # the same decision replayed never queues a message twice
        )
        written += 1
    for key, reason in decision.event_reasons.items():
        if key in by_key:
            db["events"].update(by_key[key]["id"], {"processed_at": now, "reason": reason})
    for key in by_key.keys() - decision.event_reasons.keys():
        db["events"].update(by_key[key]["id"], {"processed_at": now})
    if decision.flood:
        st.set_watch_state(db, {f"flood:{ch}": fs.to_dict() for ch, fs in decision.flood.items()}, now)
    return written


def _newly_held(before: dict[str, FloodState], after: dict[str, FloodState]) -> dict[str, int]:
    """Per channel, how many notices the flood cap held back in this decision."""
    out = {}
    for channel, fs in after.items():
        prev = before.get(channel)
        held_before = len(prev.held) if prev is not None and prev.hour_start == fs.hour_start else 0
        if len(fs.held) > held_before:
            out[channel] = len(fs.held) - held_before
    return out


async def process_events(
    store: Store, policy: Policy, now: float, *, metrics: Metrics | None = None
) -> ProcessReport:
    """Decide on every unprocessed event (and on time passing: group waits, flood hours).

    ``metrics`` counts the notices the flood cap held back (outcome "held"), once committed.
    """
    report = ProcessReport()

    def tx(db: Database) -> tuple[int, int, dict[str, str], dict[str, int]]:
        events = [
            st._decode("events", r)
            for r in db["events"].rows_where("processed_at IS NULL", order_by="id", limit=BATCH)
        ]
        alerts, silences, flood = _load(db, events, now, policy)
        decision = decide(events, alerts, silences, policy, now, sent_counts=flood)
        written = _write(db, decision, events, now)
        return len(events), written, decision.event_reasons, _newly_held(flood, decision.flood)

    while True:
        n, written, reasons, held = await store.write(tx)
        if metrics is not None:
            for channel, count in held.items():
                metrics.notification(channel, "held", count)
        report.events += n
        report.notifications += written
        for reason in reasons.values():
            report.reasons[reason] = report.reasons.get(reason, 0) + 1
        if n < BATCH:
            return report
