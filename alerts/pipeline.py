"""From stored events to outbox rows: load state, ``decide``, write it all in one transaction.

The decision (alert states, outbox rows, each event's reason, flood counters) commits in the
same transaction that marks the events it consumed as processed: a crash before the commit
leaves the events unprocessed (decided again next time), a crash after it leaves the outbox
rows to deliver. Nothing is decided twice, nothing is lost.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from alerts.engine import INHIBITIONS, AlertState, Decision, FloodState, Planned, decide
from alerts.fingerprint import fingerprint
from alerts.policy import Policy
from alerts.silences import Silence, silences_at
from watcher import dialect
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


#: Loads the alerts a decision on ``events`` at ``now`` can touch (see :func:`load_alerts`).
AlertLoader = Callable[[Database, Sequence[Mapping[str, Any]], float, Policy], dict[str, AlertState]]

_INHIBITING_KINDS = sorted({source for source, _ in INHIBITIONS})


def load_alerts(
    db: Database, events: Sequence[Mapping[str, Any]], now: float, policy: Policy
) -> dict[str, AlertState]:
    """The alerts a decision on ``events`` at ``now`` can touch (alerts.engine,
    "Persistence"), by fingerprint; not every open alert, so that a tick costs what changes,
    not what is open. Each part is an indexed lookup: the events' fingerprints (resolved
    alerts too: they re-open), the open alerts of the events' scenarios (or, for an event
    without one, the organization's alerts without one), the open alerts due, and the open
    alerts of the inhibiting kinds (few: a deactivated scenario is an exception)."""
    fps = sorted({fingerprint(e, policy.alerts.group_by) for e in events})
    scenarios = sorted({e["scenario_id"] for e in events if e.get("scenario_id") is not None})
    orgs = sorted({e["org_id"] for e in events if e.get("scenario_id") is None and e.get("org_id") is not None})
    def open_in(column: str, values: list[Any], extra: str = "") -> tuple[str, list[Any]]:
        where, args = dialect.in_list(db, column, values)
        return f"state != 'resolved'{extra} AND {where}", args

    parts: list[tuple[str, list[Any]]] = [
        ("state != 'resolved' AND due_at <= ?", [now]),
        open_in("kind", _INHIBITING_KINDS),
    ]
    if fps:
        parts.append(dialect.in_list(db, "fingerprint", fps))
    if scenarios:
        parts.append(open_in("scenario_id", scenarios))
    if orgs:
        parts.append(open_in("org_id", orgs, " AND scenario_id IS NULL"))
    alerts: dict[str, AlertState] = {}
    for where, args in parts:
        for row in db["alerts"].rows_where(where, args):
            if row["fingerprint"] not in alerts:
                alerts[row["fingerprint"]] = AlertState.from_row(st._decode("alerts", row))
    return alerts


def _load(
    db: Database, events: list[dict[str, Any]], now: float, policy: Policy, load: AlertLoader
) -> tuple[dict[str, AlertState], list[Silence], dict[str, FloodState]]:
    alerts = load(db, events, now, policy)
    rows = db["silences"].rows_where("(expired_at IS NULL) AND ends_at > ?", [now])
    silences = silences_at(list(rows), policy.windows(), now)
    flood = {
        key.removeprefix("flood:"): FloodState.from_dict(value)
        for key, value in st.get_watch_state(db, "flood:").items()
    }
    return alerts, silences, flood


def _write(db: Database, decision: Decision, events: list[dict[str, Any]], now: float) -> int:
    # One statement per table, not sqlite-utils' per-row update (a lookup, a table_info and
    # a savepoint per row): a tick that re-opens thousands of alerts stays a fast transaction.
    if decision.alerts:
        rows = [st._encode("alerts", alert.to_row()) for alert in decision.alerts]
        columns = list(rows[0])
        names = ", ".join(f'"{c}"' for c in columns)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != "fingerprint")
        dialect.executemany(
            db,
            f"INSERT INTO alerts ({names}) VALUES ({', '.join('?' * len(columns))}) "  # noqa: S608 - column names from AlertState
            f"ON CONFLICT(fingerprint) DO UPDATE SET {updates}",
            [[row[c] for c in columns] for row in rows],
        )
    where, args = dialect.in_list(db, "fingerprint", [p.fingerprint for p in decision.notifications if p.fingerprint])
    ids = {r["fingerprint"]: r["id"] for r in db.query(f"SELECT id, fingerprint FROM alerts WHERE {where}", args)}  # noqa: S608 - fixed text
    by_key = {e["key"]: e for e in events}
    outbox = []
    for p in decision.notifications:
        exclude = (p.payload or {}).get("exclude_channel")
        if exclude and exclude == p.channel:
            continue  # a failing channel is not told that it fails
        outbox.append(
            [
                ids.get(p.fingerprint) if p.fingerprint else None,
                p.channel,
                p.phase,
                json.dumps(outbox_payload(p), default=str),
                now,
                now,
                p.dedup_key,
            ]
        )
    # The same decision replayed (or taken by two replicas) never queues a message twice:
    # dedup_key is unique. Not sorted by key (the ids keep the decision's order, which delivery
    # follows): writers are serialised, so concurrent inserts of the same keys cannot deadlock.
    dialect.executemany(
        db,
        "INSERT INTO outbox (alert_id, channel, kind, payload_json, status, attempts, "
        "next_attempt_at, created_at, dedup_key) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?) "
        "ON CONFLICT (dedup_key) DO NOTHING",
        outbox,
    )
    dialect.executemany(
        db,
        "UPDATE events SET processed_at = ?, reason = ? WHERE id = ?",
        [[now, reason, by_key[key]["id"]] for key, reason in decision.event_reasons.items() if key in by_key],
    )
    dialect.executemany(
        db,
        "UPDATE events SET processed_at = ? WHERE id = ?",
        [[now, by_key[key]["id"]] for key in sorted(by_key.keys() - decision.event_reasons.keys())],
    )
    written = len(outbox)
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


def process_batch(
    db: Database, policy: Policy, now: float, *, load: AlertLoader = load_alerts
) -> tuple[int, int, dict[str, str], dict[str, int]]:
    """Decide on up to :data:`BATCH` unprocessed events, inside the caller's transaction.

    Returns (events decided, outbox rows written, each event's reason, notices held back by
    the flood cap per channel). ``load`` picks the alerts to decide (tests compare it with
    loading every open alert)."""
    events = [
        st._decode("events", r)
        for r in db["events"].rows_where("processed_at IS NULL", order_by="id", limit=BATCH)
    ]
    alerts, silences, flood = _load(db, events, now, policy, load)
    decision = decide(events, alerts, silences, policy, now, sent_counts=flood)
    written = _write(db, decision, events, now)
    return len(events), written, decision.event_reasons, _newly_held(flood, decision.flood)


async def process_events(
    store: Store,
    policy: Policy,
    now: float,
    *,
    metrics: Metrics | None = None,
    load: AlertLoader = load_alerts,
) -> ProcessReport:
    """Decide on every unprocessed event (and on time passing: group waits, flood hours).

    ``metrics`` counts the notices the flood cap held back (outcome "held"), once committed.
    """
    report = ProcessReport()
    while True:
        n, written, reasons, held = await store.write(
            functools.partial(process_batch, policy=policy, now=now, load=load)
        )
        if metrics is not None:
            for channel, count in held.items():
                metrics.notification(channel, "held", count)
        report.events += n
        report.notifications += written
        for reason in reasons.values():
            report.reasons[reason] = report.reasons.get(reason, 0) + 1
        if n < BATCH:
            return report
