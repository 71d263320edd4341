"""The alert decision engine: events + current alert states → new states + notifications.

Pure (no I/O, no clock: ``now`` is passed in, epoch seconds) and deterministic: the same
inputs give the same :class:`Decision`. The shape follows Alertmanager's notification
pipeline (group → inhibit → silence → route → dedup → rate limit), with Sentry's "one
message per problem": events with the same :func:`~alerts.fingerprint.fingerprint` are one
alert that counts them.

Lifecycle of an alert (one row of the ``alerts`` table, :class:`AlertState`)::

    new event ──► pending ──(group_wait elapsed, or critical)──► firing ──(resolving event)──► resolved
                     │                                              │                            │
                     └──(resolving event)──► see below              └─ repeat notices            └─(new event)─► pending (re-opened)

A resolving event that comes before any channel was told:

* execution errors are *events*, not states: a burst that ended with a success before its
  first notice is still notified. The alert stays pending with ``recovered_at`` set; when its
  group wait is over, each channel gets ONE firing notice that says it already ran fine
  again (the payload carries ``recovered_at``), and the alert resolves with it (no separate
  "resolved" notice). A new failure before that notice continues the same episode (a
  scenario that fails every other run is one alert that counts its failures).
* every other kind (a state: quota, backlog, health, deactivation) resolves silently; so does
  an execution alert that is silenced, inhibited or has no route.

Flapping: an execution alert re-opened within ``group_interval_s`` of its resolution (a
scenario failing on and off) is told again after its group wait like a new one (a new
failure is news), but then a success does not resolve it at once: it resolves, with one
"resolved" notice, once ``group_interval_s`` passed without a new failure; meanwhile new
failures are repeats at most every ``group_interval_s``. So a scenario that fails every other
run costs a notice per group interval, not one per failure and none silently.

Notifications are per (alert, channel). Per channel:

* first notice ("firing", reason "first", or "reopened") once ``group_wait_s`` has passed since
  the alert opened (at once for a critical alert when ``critical_skips_group_wait``), and, for
  a re-opened alert, ``group_interval_s`` after the channel's previous notice (anti-flap);
* "firing" again (reason "escalated") when the severity rose or the kind changed, at most every
  ``group_interval_s``;
* "repeat" (reason "repeat interval elapsed", with ``count_since_notice``) when new
  occurrences came since the channel's last notice and ``repeat_interval_s`` has passed;
  nothing at all when nothing new happened;
* "resolved" once, to the channels that heard about the alert while it fired; an alert nobody
  was told about resolves silently.

Acknowledged (``acked_at`` set, by a person on the status page): no more notices of any
kind for the episode, reason "acknowledged", except its resolution, which the channels that
heard of it are still told. A re-opened alert (a new episode) starts unacknowledged.

Suppression, checked in this order once the group wait is over: *inhibited* (an execution
alert of a scenario whose ``scenario_deactivated`` alert is open), *silenced* (an active
:class:`~alerts.silences.Silence` matches), *no route* (no channel). A suppressed alert is
still counted; once an inhibition ends it notifies again only for an occurrence that comes
after it (``suppressed_count``). When a *silence* ends (a one-off one ran out or was expired,
a maintenance window closed) and the alert is still open with occurrences a channel was not
told of, each such channel gets ONE "firing" notice, reason "silence ended", whose payload's
``silence_ended`` names the silence (``AlertState.silenced_by``, kept while it held the
alert): "still failing after the maintenance window ... ended". An alert that resolves while
silenced resolves silently, unless the silence has ``notify_resolved``: then its resolution
is told as if it were not silenced (a "resolved" notice to the channels that heard of it, or
the one "failed, ran fine again" notice of an execution alert nobody was told of).

Flood cap: a channel with an hourly cap (``[alerts] max_per_hour``) gets at most that many
notices per clock hour (``floor(now / 3600)``); the rest are *held* (reason "flood-capped") in
its :class:`FloodState` and, at the first decision after the hour is over, ONE "summary"
notice lists them (kind, scenario, count); the alerts it lists count as notified on that
channel.

Idempotency contract (the caller's part)
----------------------------------------
The engine does not remember event keys. The caller passes only events not yet processed
(``events.processed_at IS NULL``: ``watcher.store.unprocessed_events``) and, in ONE
transaction with upserting ``Decision.alerts``, the outbox rows of
``Decision.notifications`` and ``Decision.flood``, sets ``processed_at`` on every key of
``Decision.event_reasons``. Defensively, the engine counts a key once per call and skips an
event whose ``processed_at`` is set (reason "already processed"), so re-feeding rows read
back from the ``events`` table changes nothing. ``tick``/``decide`` on the states they
returned, at the same ``now``, plan nothing new.

Timers
------
Without a new event, an alert changes only when a moment passes that its last decision
compared ``now`` with: its group wait, a channel's group or repeat interval, the quiet
group interval that ends flapping, a matching silence starting or ending, the end of the
clock hour in which the flood cap held it back (the summary then counts it as told). Each
decision stores the earliest of them as ``AlertState.due_at`` (None when there is none:
a resolved alert, or one that waits for its next occurrence); one decision is not a fixed
point, told on one channel and held on another (its next decision says why it is held),
so it is due at once. So the caller need not decide
every open alert at every tick, only those due; whatever changes an alert from outside must
make it due then: a new silence or an expired one (``watcher.silences``), an
acknowledgement (``watcher.acks``). Inhibition needs no timer: it starts and ends with
events of the same scenario, whose alerts are loaded with them.

Persistence (what goes where)
-----------------------------
* ``Decision.alerts`` → upsert into ``alerts`` by ``fingerprint`` with
  :meth:`AlertState.to_row` (``payload``, ``samples``, ``channels`` are JSON columns:
  ``payload_json``, ``samples_json``, ``channels_json``; ``opened_at``, ``episode``,
  ``resolved_at``, ``suppressed_count`` are plain columns; the columns that are not in
  schema v2 need a migration). Load with :meth:`AlertState.from_row` only what the decision
  can touch (see "Timers"): every alert whose fingerprint an incoming event has (a resolved
  one re-opens and keeps its anti-flap marks; a missing one is simply treated as new), the
  open alerts of the incoming events' scenarios (``execution_recovered`` resolves them all,
  a deactivation inhibits them), the open alerts that are due (``due_at <= now``), and the
  open alerts of the inhibiting kinds (:data:`INHIBITIONS`). Passing more is harmless:
  an alert that is not due comes out of the decision unchanged.
* ``Decision.notifications`` → one ``outbox`` row each (``channel``, ``kind`` = ``phase``,
  ``payload`` = :meth:`Planned.to_payload`, ``alert_id`` from the alert upserted with the same
  fingerprint; NULL for a summary). ``dedup_key`` is stable: use it as the receiver-side
  dedup id where the channel allows.
* ``Decision.flood`` → ``watch_state`` key ``flood:<channel>``, value
  :meth:`FloodState.to_dict`; pass them back as ``sent_counts`` (channel → FloodState).
* ``Decision.event_reasons`` → ``events.processed_at = now`` for each key (the reason may be
  logged or stored beside the event).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from alerts.fingerprint import EXECUTION_KINDS, fingerprint, normalize_message, resolve_kinds
from alerts.policy import Policy
from alerts.routing import ChannelRoute, route, severity_rank
from alerts.silences import Silence, active_silence
from watcher.events import SEVERITY as DEFAULT_SEVERITY

__all__ = [
    "FIRING",
    "HOUR_S",
    "PENDING",
    "REASONS",
    "RESOLVED",
    "SAMPLES_MAX",
    "SAMPLE_FIELDS",
    "AlertState",
    "ChannelMark",
    "Decision",
    "FloodState",
    "Planned",
    "decide",
    "labels",
    "sample_of",
    "tick",
]

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
SAMPLES_MAX = 5
#: What a sample keeps of an occurrence's payload: what differs from one occurrence to the
#: next, and what alerts.render's "recent occurrences" show (when, error, execution, DLQ
#: item, reason). A whole payload per sample was most of an alert's bytes, and of each
#: notice's, five times over (issue 16).
SAMPLE_FIELDS = (
    "timestamp",
    "created",
    "execution_id",
    "error_name",
    "error_message",
    "dlq_id",
    "reason",
    "reasons",
    "error",
    "problem",
)
HOUR_S = 3600.0

#: Every reason the engine gives, for an event (``Decision.event_reasons``), an alert
#: (``AlertState.reason``) or a notification (``Planned.reason``).
REASONS = (
    "first",
    "reopened",
    "escalated",
    "repeat interval elapsed",
    "resolved",
    "resolved before any notice",
    "recovered before notice",
    "flapping",
    "grouped",
    "waiting for group",
    "within group interval",
    "within repeat interval",
    "silenced",
    "silence ended",
    "inhibited",
    "flood-capped",
    "flood cap summary",
    "no route",
    "acknowledged",
    "disabled",
    "nothing to resolve",
    "stale",
    "already processed",
)

#: Which open alert inhibits which: (source kind, kinds it inhibits on the same scenario).
INHIBITIONS: tuple[tuple[str, frozenset[str]], ...] = (("scenario_deactivated", EXECUTION_KINDS),)

# When a channel cannot notify now, the reason that explains the most, first.
_BLOCKED_PRIORITY = (
    "acknowledged",
    "flood-capped",
    "within group interval",
    "within repeat interval",
    "waiting for group",
)


# --------------------------------------------------------------------------------------------
# State


@dataclass
class ChannelMark:
    """What a channel was last told about an alert (``AlertState.channels[channel]``)."""

    episode: int  # the alert's episode (it grows each time the alert re-opens)
    last_notified: float
    count_at_notice: int  # the alert's count when the channel was told
    severity: str
    kind: str
    phase: str  # firing | repeat | resolved | summary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelMark:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass
class AlertState:
    """One row of the ``alerts`` table: a problem (a fingerprint) and what was said about it.

    ``count``/``first_seen``/``last_seen`` cover the current episode (a re-opened alert starts
    again at 1); ``count_since_notice`` counts occurrences since the last notice on any
    channel (all of them before the first notice); ``samples`` holds the last
    :data:`SAMPLES_MAX` occurrences (:func:`sample_of` their payloads), ``payload`` the
    newest payload whole. ``opened_at`` is when the
    episode was detected (group_wait counts from it). ``suppressed_count`` is ``count`` when
    the alert was last silenced or inhibited: only later occurrences notify.
    """

    fingerprint: str
    kind: str
    severity: str
    org_id: int | None
    team_id: int | None = None
    scenario_id: int | None = None
    state: str = PENDING
    first_seen: float = 0.0
    last_seen: float = 0.0
    count: int = 0
    count_since_notice: int = 0
    last_notified: float | None = None
    reason: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    channels: dict[str, ChannelMark] = field(default_factory=dict)
    opened_at: float = 0.0
    episode: int = 1
    resolved_at: float | None = None
    suppressed_count: int = 0
    # An execution alert whose scenario ran fine again before anyone was told, or while it
    # flaps (see module doc).
    recovered_at: float | None = None
    # An execution alert that failed again within group_interval_s of its resolution.
    flapping: bool = False
    # A person acknowledged this episode (see module doc): no notices but the resolution.
    acked_at: float | None = None
    acked_by: str | None = None
    # When a decision without new events could next change this alert (see "Timers" in the
    # module doc); None: only an event, or a silence or ack written from outside, can.
    due_at: float | None = None
    # The silence that held it at its last decision (Silence.summary()), so that the notice
    # sent when that silence is over can say which one ended; None when not silenced.
    silenced_by: dict[str, Any] | None = None

    @property
    def is_open(self) -> bool:
        return self.state != RESOLVED

    def to_row(self) -> dict[str, Any]:
        """The ``alerts`` row (JSON columns decoded, store convention: ``payload`` for
        ``payload_json``, likewise ``samples`` and ``channels``). ``payload`` and ``samples``
        are the state's own (not copies: this is written at every change, and a deep copy
        cost more than the write); encode the row, do not modify it."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["channels"] = {ch: mark.to_dict() for ch, mark in sorted(self.channels.items())}
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AlertState:
        """From an ``alerts`` row as :meth:`to_row` gives it (unknown columns such as ``id`` or
        ``thread_ref`` are ignored; missing engine columns take their defaults)."""
        data = {k: row[k] for k in cls.__dataclass_fields__ if k in row and row[k] is not None}
        data["channels"] = {
            ch: mark if isinstance(mark, ChannelMark) else ChannelMark.from_dict(mark)
            for ch, mark in (row.get("channels") or {}).items()
        }
        data["payload"] = dict(row.get("payload") or {})
        data["samples"] = [dict(s) for s in row.get("samples") or ()]
        if row.get("silenced_by") is not None:
            data["silenced_by"] = dict(row["silenced_by"])
        data.setdefault("org_id", None)
        if row.get("last_notified") is None:
            data["last_notified"] = None
        return cls(**data)


@dataclass
class FloodState:
    """One channel's flood-cap counters for the clock hour starting at ``hour_start``.

    ``held`` lists what was held back this hour, one item per (fingerprint, phase), each a
    dict: ``fingerprint``, ``kind``, ``severity``, ``org_id``, ``org``, ``scenario_id``,
    ``scenario``, ``phase`` ("firing" or "resolved"), ``count``, ``episode``, ``held_at``.
    """

    hour_start: float
    sent: int = 0
    held: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FloodState:
        return cls(
            hour_start=float(data["hour_start"]),
            sent=int(data.get("sent", 0)),
            held=[dict(item) for item in data.get("held") or ()],
        )


@dataclass(frozen=True)
class Planned:
    """A notification to send: one outbox row.

    ``phase``: "firing" | "repeat" | "resolved" | "summary". For a summary, ``fingerprint`` is
    None, ``kind`` is "summary" and ``items`` lists what was held back (FloodState items).
    ``count`` is the alert's occurrences this episode, ``count_since_notice`` those since this
    channel's previous notice.
    """

    channel: str
    fingerprint: str | None
    phase: str
    reason: str
    severity: str
    kind: str
    org_id: int | None
    team_id: int | None
    scenario_id: int | None
    count: int
    count_since_notice: int
    first_seen: float | None
    last_seen: float | None
    created_at: float
    dedup_key: str
    payload: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    #: When this channel was last told of this episode (a repeat says "4 more since 09:00").
    previous_notice_at: float | None = None

    def to_payload(self) -> dict[str, Any]:
        """Everything a renderer needs, as JSON-able data (the outbox ``payload``)."""
        return asdict(self)


@dataclass
class Decision:
    """What :func:`decide` / :func:`tick` decided (see the module doc for persistence).

    ``alerts``: new or changed alert states, by fingerprint order. ``notifications``: to send,
    in order. ``event_reasons``: event key → why it did or did not notify. ``flood``: channel
    → its new :class:`FloodState`, only where it changed.
    """

    alerts: list[AlertState] = field(default_factory=list)
    notifications: list[Planned] = field(default_factory=list)
    event_reasons: dict[str, str] = field(default_factory=dict)
    flood: dict[str, FloodState] = field(default_factory=dict)


def labels(alert: AlertState) -> dict[str, Any]:
    """What routes and silences match on: kind, severity, ids, and names from the payload."""
    p = alert.payload
    return {
        "kind": alert.kind,
        "severity": alert.severity,
        "org_id": alert.org_id,
        "org": p.get("organization"),
        "team_id": alert.team_id,
        "scenario_id": alert.scenario_id,
        "scenario": p.get("scenario_name"),
        "error_name": p.get("error_name"),
        "error_message": p.get("error_message"),
    }


# --------------------------------------------------------------------------------------------
# Entry points


def decide(
    events: Sequence[Mapping[str, Any]],
    alerts: Mapping[str, AlertState],
    silences: Sequence[Silence],
    policy: Policy,
    now: float,
    sent_counts: Mapping[str, FloodState] | None = None,
) -> Decision:
    """Fold ``events`` into ``alerts`` and decide every notice due at ``now``.

    ``events``: rows of the ``events`` table (dicts), in any order: they are applied by
    ``(occurred_at, key)``. ``alerts``: current states by fingerprint (not modified): at
    least those the module doc's "Persistence" lists; every alert decided gets its
    ``due_at`` (module doc, "Timers").
    ``sent_counts``: each capped channel's :class:`FloodState` (absent = nothing sent this
    hour). Ends with the same time-driven decisions as :func:`tick`.
    """
    run = _Run(alerts, silences, policy, now, sent_counts or {})
    run.roll_flood()
    for event in sorted(events, key=lambda e: (float(e.get("occurred_at") or 0.0), e["key"])):
        run.apply(event)
    run.evaluate_all()
    return run.decision()


def tick(
    alerts: Mapping[str, AlertState],
    silences: Sequence[Silence],
    policy: Policy,
    now: float,
    sent_counts: Mapping[str, FloodState] | None = None,
) -> Decision:
    """Time-driven decisions, no new events: pending groups whose wait is over fire, repeat
    and escalation notices come due, and hours that ended send their flood-cap summary."""
    return decide((), alerts, silences, policy, now, sent_counts)


# --------------------------------------------------------------------------------------------
# One decision


@dataclass
class _Result:
    sent: list[str] = field(default_factory=list)  # reasons of the notices sent
    blocked: str | None = None  # why nothing (more) was sent, when so


class _Run:
    def __init__(
        self,
        alerts: Mapping[str, AlertState],
        silences: Sequence[Silence],
        policy: Policy,
        now: float,
        sent_counts: Mapping[str, FloodState],
    ) -> None:
        self.original = alerts
        self.alerts: dict[str, AlertState] = {fp: copy.deepcopy(a) for fp, a in alerts.items()}
        self.silences = silences
        self.policy = policy
        self.now = float(now)
        self.hour = math.floor(self.now / HOUR_S) * HOUR_S
        self.flood_in = sent_counts
        self.flood: dict[str, FloodState] = {
            ch: copy.deepcopy(fs) for ch, fs in sent_counts.items()
        }
        self.notifications: list[Planned] = []
        self.reasons: dict[str, str] = {}
        # key -> (fingerprint, episode, opened) for occurrences; resolving events get a reason
        self.occurrences: dict[str, tuple[str, int, bool]] = {}
        self.results: dict[str, _Result] = {}
        self._due: float | None = None  # the timer of the alert being decided (_before)

    # --- flood cap ---------------------------------------------------------------------

    def roll_flood(self) -> None:
        """Close every channel hour that is over: one summary of what it held back."""
        for channel in sorted(self.flood):
            fs = self.flood[channel]
            if fs.hour_start >= self.hour:
                continue
            if fs.held:
                self._summary(channel, fs)
            self.flood[channel] = FloodState(hour_start=self.hour)

    def _summary(self, channel: str, fs: FloodState) -> None:
        items = sorted(fs.held, key=lambda i: (i["held_at"], i["fingerprint"], i["phase"]))
        severity = max((i["severity"] for i in items), key=severity_rank)
        self.notifications.append(
            Planned(
                channel=channel,
                fingerprint=None,
                phase="summary",
                reason="flood cap summary",
                severity=severity,
                kind="summary",
                org_id=None,
                team_id=None,
                scenario_id=None,
                count=sum(int(i["count"]) for i in items),
                count_since_notice=sum(int(i["count"]) for i in items),
                first_seen=fs.hour_start,
                last_seen=fs.hour_start + HOUR_S,
                created_at=self.now,
                dedup_key=f"summary|{channel}|{fs.hour_start:.0f}",
                items=copy.deepcopy(items),
            )
        )
        # The summary told the channel about every alert it lists: they count as notified.
        for item in items:
            alert = self.alerts.get(item["fingerprint"])
            if alert is None or item["phase"] == "resolved":
                continue
            if alert.is_open and alert.episode == item["episode"]:
                alert.channels[channel] = self._mark(alert, "summary")
                _refresh(alert)

    def _flood_state(self, channel: str) -> FloodState:
        fs = self.flood.get(channel)
        if fs is None or fs.hour_start < self.hour:
            fs = self.flood[channel] = FloodState(hour_start=self.hour)
        return fs

    # --- events ------------------------------------------------------------------------

    def apply(self, event: Mapping[str, Any]) -> None:
        key = str(event["key"])
        if key in self.reasons or key in self.occurrences:
            return  # counted once per call
        if event.get("processed_at") is not None:
            self.reasons[key] = "already processed"
            return
        kind = str(event.get("kind") or "")
        if kind == "execution_warning" and not self.policy.alerts.warnings_enabled:
            self.reasons[key] = "disabled"
            return
        targets = resolve_kinds(event)
        if targets is not None:
            self.reasons[key] = self._resolve_by(event, targets)
            return
        self._occur(key, event)

    def _resolve_by(self, event: Mapping[str, Any], targets: frozenset[str]) -> str:
        occurred = float(event.get("occurred_at") or 0.0)
        if event.get("kind") == "execution_recovered":
            found = [
                a
                for fp, a in sorted(self.alerts.items())
                if a.is_open
                and a.kind in targets
                and a.org_id == event.get("org_id")
                and a.scenario_id == event.get("scenario_id")
            ]
        else:
            alert = self.alerts.get(fingerprint(event, self.policy.alerts.group_by))
            found = [alert] if alert is not None and alert.is_open and alert.kind in targets else []
        if not found:
            return "nothing to resolve"
        # A success older than the newest failure does not mean it recovered.
        fresh = [a for a in found if occurred >= a.last_seen]
        for alert in fresh:
            if alert.kind not in EXECUTION_KINDS:
                # The resolved notice shows the state at resolution (queue 0/50, not 45/50).
                now_state = {k: v for k, v in (event.get("payload") or {}).items() if k != "recovered"}
                alert.payload = {**alert.payload, **now_state}
            alert.payload = {**alert.payload, "resolved_at": occurred}
            self._resolve(alert, occurred)
        return "resolved" if fresh else "stale"

    def _untold_execution_alert(self, alert: AlertState) -> bool:
        """An execution alert nobody was told about yet, that someone must still be told of:
        not silenced, not inhibited, with a route."""
        if alert.kind not in EXECUTION_KINDS:
            return False
        if any(m.episode == alert.episode for m in alert.channels.values()):
            return False
        lab = labels(alert)
        silence = active_silence(self.silences, lab, self.now)
        if (silence is not None and not silence.notify_resolved) or not route(lab, self.policy):
            return False
        return not self._inhibited(alert)

    def _inhibited(self, alert: AlertState) -> bool:
        for source, inhibited in INHIBITIONS:
            if alert.kind in inhibited and any(
                other.is_open
                and other.kind == source
                and other.org_id == alert.org_id
                and other.scenario_id == alert.scenario_id
                for other in self.alerts.values()
            ):
                return True
        return False

    def _resolve(self, alert: AlertState, occurred: float | None = None) -> None:
        untold = self._untold_execution_alert(alert)
        if untold or (alert.flapping and alert.kind in EXECUTION_KINDS):
            # An error is an event: it is still told, with the news that it ran fine again;
            # a flapping alert waits for a quiet group interval before it resolves.
            if alert.recovered_at is None:  # the first run that went fine again
                alert.recovered_at = self.now if occurred is None else occurred
            alert.payload = {**alert.payload, "recovered_at": alert.recovered_at}
            alert.reason = "recovered before notice" if untold else "flapping"
            return
        self._close(alert)

    def _close(self, alert: AlertState) -> None:
        """Resolve ``alert`` now: one "resolved" notice to each channel that heard of it."""
        alert.state = RESOLVED
        alert.flapping = False
        alert.recovered_at = None
        alert.resolved_at = self.now
        told = sorted(
            ch
            for ch, mark in alert.channels.items()
            if mark.episode == alert.episode and mark.phase != "resolved"
        )
        silence = active_silence(self.silences, labels(alert), self.now)
        silenced = silence is not None and not silence.notify_resolved
        sent = False
        for channel in told:
            if silenced:
                alert.channels[channel].phase = "resolved"
                continue
            outcome = self._send(alert, channel, "resolved", "resolved", final_when_held=True)
            sent = sent or outcome == "resolved"
        if not told:
            alert.reason = "resolved before any notice"
        elif silenced:
            alert.reason = "silenced"
        else:
            alert.reason = "resolved" if sent else "flood-capped"
        _refresh(alert)

    def _occur(self, key: str, event: Mapping[str, Any]) -> None:
        fp = fingerprint(event, self.policy.alerts.group_by)
        kind = str(event.get("kind") or "")
        severity = str(event.get("severity") or DEFAULT_SEVERITY.get(kind, "error"))
        occurred = float(event.get("occurred_at") or 0.0)
        detected = event.get("detected_at")
        opened_at = min(self.now, float(detected)) if detected is not None else self.now
        payload = dict(event.get("payload") or {})
        alert = self.alerts.get(fp)
        opened = alert is None or not alert.is_open
        if alert is None:
            alert = self.alerts[fp] = AlertState(
                fingerprint=fp,
                kind=kind,
                severity=severity,
                org_id=event.get("org_id"),
                team_id=event.get("team_id"),
                scenario_id=event.get("scenario_id"),
                first_seen=occurred,
                last_seen=occurred,
                opened_at=opened_at,
            )
        elif alert.is_open:
            alert.recovered_at = None  # failing again before anyone was told it recovered
        else:
            # Failing again soon after it resolved: it flaps (see the module doc).
            gap = self.policy.alerts.group_interval_s
            alert.flapping = (
                kind in EXECUTION_KINDS
                and alert.resolved_at is not None
                and self.now - alert.resolved_at < gap
            )
            alert.episode += 1
            alert.state = PENDING
            alert.kind, alert.severity = kind, severity
            alert.first_seen = alert.last_seen = occurred
            alert.count = alert.suppressed_count = 0
            alert.samples = []
            alert.opened_at = opened_at
            alert.resolved_at = None
            alert.reason = ""
            alert.acked_at = alert.acked_by = None  # a new episode: nobody is on it yet
            alert.silenced_by = None
        alert.count += 1
        alert.first_seen = min(alert.first_seen, occurred)
        if occurred >= alert.last_seen or alert.count == 1:
            alert.last_seen = occurred
            alert.payload = payload
            alert.kind = kind  # a state alert takes its newest kind (paused → deactivated)
        if severity_rank(severity) > severity_rank(alert.severity):
            alert.severity = severity
        alert.team_id = alert.team_id if alert.team_id is not None else event.get("team_id")
        alert.samples = _add_sample(alert.samples, payload)
        _refresh(alert)
        self.occurrences[key] = (fp, alert.episode, opened)

    # --- time-driven decisions ---------------------------------------------------------

    def evaluate_all(self) -> None:
        inhibitors: set[tuple[str, Any, Any]] = set()
        for alert in self.alerts.values():
            for source, inhibited in INHIBITIONS:
                if alert.is_open and alert.kind == source:
                    for kind in inhibited:
                        inhibitors.add((kind, alert.org_id, alert.scenario_id))
        held = self._held_firing()
        for fp in sorted(self.alerts):
            alert = self.alerts[fp]
            if not alert.is_open:
                alert.due_at = None  # only an event re-opens it
                continue
            self._due = held.get((fp, alert.episode))
            self.results[fp] = self._evaluate(alert, inhibitors)
            alert.due_at = self._due if alert.is_open else None

    def _before(self, moment: float) -> bool:
        """``now < moment``; a moment still to come is a timer of the alert being decided
        (``AlertState.due_at`` is the earliest): once it passes, the same decision may come
        out otherwise. A moment already past stays past, so it needs no timer."""
        if self.now < moment:
            if self._due is None or moment < self._due:
                self._due = moment
            return True
        return False

    def _held_firing(self) -> dict[tuple[str, int], float]:
        """(fingerprint, episode) → the end of the hour in which the flood cap held back a
        firing notice of it: the hour's summary will count it as told (a timer, even when the
        alert itself would wait for nothing, e.g. acknowledged since)."""
        out: dict[tuple[str, int], float] = {}
        for fs in self.flood.values():
            for item in fs.held:
                if item["phase"] == "firing":
                    key = (item["fingerprint"], int(item["episode"]))
                    out[key] = min(out.get(key, math.inf), fs.hour_start + HOUR_S)
        return out

    def _silenced(self, lab: Mapping[str, Any]) -> Silence | None:
        """:func:`active_silence` for the alert being decided, with the timers it implies:
        a matching silence that starts later, or ends later (an alert silenced with no
        route, for one, says "no route" once the silence is over). Of several in force, the
        one that ends last (the alert is told when the last of them is over)."""
        found: Silence | None = None
        for silence in self.silences:
            if silence.matches(lab) and not self._before(silence.starts_at):
                if self._before(silence.ends_at) and (found is None or silence.ends_at > found.ends_at):
                    found = silence
        return found

    def _evaluate(self, alert: AlertState, inhibitors: set[tuple[str, Any, Any]]) -> _Result:
        alerts_cfg = self.policy.alerts
        lab = labels(alert)
        routes = route(lab, self.policy)
        skip = alerts_cfg.critical_skips_group_wait and alert.severity == "critical"

        def wait(r: ChannelRoute | None) -> float:
            if skip:
                return 0.0
            return alerts_cfg.group_wait_s if r is None else r.group_wait_s

        group_wait = min((wait(r) for r in routes), default=wait(None))
        if self._before(alert.opened_at + group_wait):
            waiting = alert.recovered_at is not None
            alert.reason = "recovered before notice" if waiting else "waiting for group"
            return _Result(blocked="waiting for group")
        alert.state = FIRING

        if (alert.kind, alert.org_id, alert.scenario_id) in inhibitors:
            return self._suppress(alert, "inhibited")
        silence = self._silenced(lab)
        # A silence with notify_resolved lets through the one notice of an alert that ran
        # fine again (the recovered_at path); everything else it holds.
        released = silence is not None and silence.notify_resolved and alert.recovered_at is not None
        if silence is not None and not released:
            alert.silenced_by = silence.summary()
            return self._suppress(alert, "silenced")
        ended = alert.silenced_by if silence is None else None
        alert.silenced_by = None
        if not routes:
            alert.reason = "no route"
            return _Result(blocked="no route")

        result = _Result()
        if alert.count <= alert.suppressed_count and not released and ended is None:
            return result  # nothing new since it was last silenced or inhibited
        blocked: list[str] = []
        for r in routes:
            mark = alert.channels.get(r.channel)
            if alert.acked_at is not None:
                blocked.append("acknowledged")  # someone is on it: only the resolution is told
                continue
            if ended is not None and not released:
                # The silence is over: one notice of what it held back, at once (no repeat
                # interval: the channel missed it), to each channel not told of it all.
                if mark is not None and mark.episode == alert.episode and alert.count <= mark.count_at_notice:
                    continue
                outcome = self._send(alert, r.channel, "firing", "silence ended", note={"silence_ended": ended})
                if outcome == "silence ended":
                    result.sent.append(outcome)
                else:
                    blocked.append(outcome)
                continue
            if mark is None or mark.episode != alert.episode:
                if self._before(alert.opened_at + wait(r)):
                    blocked.append("waiting for group")
                    continue
                if (
                    mark is not None
                    and alert.kind not in EXECUTION_KINDS  # a new failure is news (flapping)
                    and self._before(mark.last_notified + r.group_interval_s)
                ):
                    blocked.append("within group interval")
                    continue
                phase, reason = "firing", "reopened" if alert.episode > 1 else "first"
            elif severity_rank(alert.severity) > severity_rank(mark.severity) or (
                alert.kind != mark.kind
            ):
                if self._before(mark.last_notified + r.group_interval_s):
                    blocked.append("within group interval")
                    continue
                phase, reason = "firing", "escalated"
            elif alert.count <= mark.count_at_notice:
                continue  # nothing new since this channel was told
            elif self._before(mark.last_notified + self._repeat_after(alert, r)):
                blocked.append("within repeat interval")
                continue
            else:
                phase, reason = "repeat", "repeat interval elapsed"
            outcome = self._send(alert, r.channel, phase, reason)
            if outcome == reason:
                result.sent.append(reason)
            else:
                blocked.append(outcome)
        if blocked:
            result.blocked = min(blocked, key=_BLOCKED_PRIORITY.index)
        if result.sent:
            alert.reason = result.sent[0]
            if result.blocked:
                # Told on one channel, held on another: the next decision, with nothing to
                # send, says why it is held. Due at once, as when every tick decided it.
                self._due = self.now
        elif result.blocked:
            alert.reason = result.blocked
        all_told = all(
            (m := alert.channels.get(r.channel)) is not None and m.episode == alert.episode
            for r in routes
        )
        if alert.recovered_at is not None and all_told:
            if not alert.flapping:
                # Every channel heard "failed, ran fine again": that notice was the resolution.
                for r in routes:
                    alert.channels[r.channel].phase = "resolved"
                alert.state = RESOLVED
                alert.resolved_at = self.now
            elif not self._before(alert.recovered_at + min(r.group_interval_s for r in routes)):
                self._close(alert)  # quiet for a group interval: the flapping is over
                return result
        _refresh(alert)
        return result

    @staticmethod
    def _repeat_after(alert: AlertState, r: ChannelRoute) -> float:
        """How long after a channel's notice new occurrences are notified again.

        New incomplete executions are news (each is a run whose data waits for a person), so
        they are told at most every ``group_interval_s``; other alerts repeat at most every
        ``repeat_interval_s``.
        """
        if alert.kind == "incomplete_executions" or alert.flapping:
            return r.group_interval_s
        return max(r.repeat_interval_s, r.group_interval_s)

    def _suppress(self, alert: AlertState, reason: str) -> _Result:
        alert.reason = reason
        alert.suppressed_count = alert.count
        if alert.recovered_at is not None:
            alert.state = RESOLVED  # it ran fine again while suppressed: nothing to tell
            alert.resolved_at = self.now
            alert.recovered_at = None
        return _Result(blocked=reason)

    # --- sending -----------------------------------------------------------------------

    def _mark(self, alert: AlertState, phase: str) -> ChannelMark:
        return ChannelMark(
            episode=alert.episode,
            last_notified=self.now,
            count_at_notice=alert.count,
            severity=alert.severity,
            kind=alert.kind,
            phase=phase,
        )

    def _send(
        self,
        alert: AlertState,
        channel: str,
        phase: str,
        reason: str,
        *,
        final_when_held: bool = False,
        note: Mapping[str, Any] | None = None,
    ) -> str:
        """Plan one notice, or hold it under the flood cap; returns ``reason`` or
        "flood-capped". A held "resolved" notice is final (the summary carries it); a held
        firing notice is tried again at the next decision and summarised at the hour's end.
        ``note`` is added to this notice's payload only (not to the alert's)."""
        cap = self.policy.alerts.cap_for(channel)
        if cap is not None:
            fs = self._flood_state(channel)
            if fs.sent >= cap:
                self._before(fs.hour_start + HOUR_S)  # the cap lifts when the hour is over
                self._hold(fs, alert, "resolved" if phase == "resolved" else "firing")
                if final_when_held:
                    alert.channels[channel] = self._mark(alert, phase)
                return "flood-capped"
            fs.sent += 1
        mark = alert.channels.get(channel)
        since, previous = alert.count, None
        if mark is not None and mark.episode == alert.episode:
            since, previous = alert.count - mark.count_at_notice, mark.last_notified
        self.notifications.append(
            Planned(
                channel=channel,
                fingerprint=alert.fingerprint,
                phase=phase,
                reason=reason,
                severity=alert.severity,
                kind=alert.kind,
                org_id=alert.org_id,
                team_id=alert.team_id,
                scenario_id=alert.scenario_id,
                count=alert.count,
                count_since_notice=since,
                first_seen=alert.first_seen,
                last_seen=alert.last_seen,
                created_at=self.now,
                dedup_key=f"{alert.fingerprint}|{channel}|{alert.episode}|{phase}|{alert.count}",
                payload={**copy.deepcopy(alert.payload), **copy.deepcopy(dict(note or {}))},
                samples=copy.deepcopy(alert.samples),
                previous_notice_at=previous,
            )
        )
        alert.channels[channel] = self._mark(alert, phase)
        return reason

    def _hold(self, fs: FloodState, alert: AlertState, phase: str) -> None:
        lab = labels(alert)
        item = {
            "fingerprint": alert.fingerprint,
            "kind": alert.kind,
            "severity": alert.severity,
            "org_id": alert.org_id,
            "org": lab["org"],
            "scenario_id": alert.scenario_id,
            "scenario": lab["scenario"],
            "phase": phase,
            "count": alert.count,
            "episode": alert.episode,
        }
        for held in fs.held:
            if held["fingerprint"] == alert.fingerprint and held["phase"] == phase:
                held.update(item)
                return
        fs.held.append({**item, "held_at": self.now})

    # --- result ------------------------------------------------------------------------

    def decision(self) -> Decision:
        reasons = dict(self.reasons)
        first_of: dict[tuple[str, int], str] = {}
        for key, (fp, episode, opened) in self.occurrences.items():
            alert = self.alerts[fp]
            result = self.results.get(fp)
            if alert.episode != episode or result is None:
                reasons[key] = "resolved"  # resolved later in this same batch
                continue
            first = first_of.setdefault((fp, episode), key) == key
            if result.sent:
                reasons[key] = result.sent[0] if first else "grouped"
            elif result.blocked == "waiting for group":
                reasons[key] = "waiting for group" if opened else "grouped"
            else:
                reasons[key] = result.blocked or "grouped"
        changed = [
            alert for fp, alert in sorted(self.alerts.items()) if self.original.get(fp) != alert
        ]
        flood = {ch: fs for ch, fs in sorted(self.flood.items()) if self.flood_in.get(ch) != fs}
        return Decision(
            alerts=changed, notifications=self.notifications, event_reasons=reasons, flood=flood
        )


def sample_of(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What one occurrence adds to its alert (:data:`SAMPLE_FIELDS` of its payload): the rest
    (organization, scenario, links) is the alert's ``payload`` already."""
    return {k: payload[k] for k in SAMPLE_FIELDS if k in payload}


def _add_sample(samples: list[dict[str, Any]], payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The last :data:`SAMPLES_MAX` occurrences, keeping distinct errors the longest: when
    full, the oldest sample whose error (name and normalised message) another sample repeats
    goes first, so one alert grouping several wordings shows each of them."""
    out = [*samples, sample_of(payload)]
    while len(out) > SAMPLES_MAX:
        keys = [_sample_key(s) for s in out]
        repeated = next((i for i, k in enumerate(keys) if keys.count(k) > 1), 0)
        del out[repeated]
    return out


def _sample_key(sample: Mapping[str, Any]) -> tuple[str, str]:
    return (str(sample.get("error_name") or ""), normalize_message(sample.get("error_message")))


def _refresh(alert: AlertState) -> None:
    """Recompute the row's summary columns from the channel marks."""
    marks = [m for m in alert.channels.values() if m.episode == alert.episode]
    told = max((m.count_at_notice for m in marks), default=0)
    alert.count_since_notice = alert.count - told if marks else alert.count
    alert.last_notified = max((m.last_notified for m in alert.channels.values()), default=None)
