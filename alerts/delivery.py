"""Draining the outbox: send each pending row on its channel, record every attempt.

At-least-once: a row is marked sent in the same transaction that records the successful
attempt, right after the channel accepted it. The one window for a duplicate is a crash between
the channel's acceptance and that commit; nothing is ever lost (a row stays pending until a
success is recorded) and a row recorded as sent is never sent again. The window is kept to the
commit itself: a notifier session (alerts.notify.base) returns from ``send`` at the channel's
acceptance, and its close-down (SMTP's QUIT, the socket's close) comes after the pass's last
commit, not before each.

Each channel is drained by a task of its own, over one session (one SMTP connection for the
whole pass instead of one per message), so a slow channel does not hold the others' rows;
rows are still tried and committed one at a time per channel. A pass may be given a budget
(``budget_s``): it then starts no new row after that many seconds and reports the rest as
``deferred``, so that the service decides on new events before it goes on (their notices
queue behind the backlog, but on every channel at once, and their group waits start on time).

Order is kept **per alert and channel**, not per channel: a repeat or a resolution threads
under (or updates) the first notice of its alert, so while a row of alert A waits for a retry,
the later rows of A on that channel wait behind it. Rows of other alerts on the same channel
go ahead; summary rows (no alert) are independent. One failing message never stalls the rest.

A channel that is down as a whole (refused connections, a 5xx on everything) must not be
hammered with one request per pending row. The rule, per channel:

- a transient failure that follows a success (the channel worked a moment ago) may be that
  message's bad luck: the pass goes on with the channel's next row of another alert, a probe;
- a second transient failure in a row (no success between, whichever rows) says the channel
  is down: it is blocked until its own backoff ends (``RetryPolicy.delay`` of its run of
  consecutive failures, so at most about a minute), and then one row is tried again;
- a rate limit (Slack's 429 with ``Retry-After``) blocks the whole channel until then:
  Slack asked us to slow down, not to try another message.

So a dead channel costs one request per backoff period (at most two when it has just failed),
whatever is queued, and a channel that works again is drained in the pass that sees it work.

Backoff: exponential with jitter, 15 s then 30 s, capped at :data:`TRANSIENT_MAX_S` (60 s);
a ``Retry-After`` is honoured up to :data:`RETRY_AFTER_MAX_S` (5 minutes): a longer one (a
broken proxy, an HTTP date far ahead) would hold alerts for hours, so we try again after 5
minutes and let the channel say so again. A restart retries at once (:func:`release_backoff`).

Per channel, ``watch_state["delivery:channel:<name>"]`` keeps when its current run of
failures began (``failing_since``), its last error and when, and whether that outage was
reported. A channel failing for :data:`CHANNEL_FAILING_AFTER_S` (10 minutes) raises one
``watcher_health`` event (problem ``channel_failing``, ``exclude_channel`` = that channel, so
the others are told, not it), and its first success afterwards a ``recovered`` one that
resolves the alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from alerts.notify.base import DeliveryError, Notification, Notifier, NotifierSession
from watcher import store as st
from watcher.store import Store

__all__ = [
    "CHANNEL_FAILING_AFTER_S",
    "RETRY_AFTER_MAX_S",
    "TRANSIENT_MAX_S",
    "DeliveryReport",
    "RetryPolicy",
    "channel_states",
    "deliver_due",
    "release_backoff",
]

if TYPE_CHECKING:
    from watcher.web.metrics import Metrics

log = logging.getLogger(__name__)

# Transient failures are retried after at most about a minute: an alert is worth little once
# it is late, and one retry a minute does not hurt a channel that is down.
TRANSIENT_MAX_S = 60.0
# The longest Retry-After honoured; see the module docstring.
RETRY_AFTER_MAX_S = 300.0
# A channel failing this long is reported on the other channels (watcher_health).
CHANNEL_FAILING_AFTER_S = 600.0
STATE_PREFIX = "delivery:channel:"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``base_s * 2**(n-1)`` capped at ``max_s``, the wait
    drawn between half of that and all of it; ``Retry-After`` bounded by ``retry_after_max_s``."""

    base_s: float = 15.0
    max_s: float = TRANSIENT_MAX_S
    retry_after_max_s: float = RETRY_AFTER_MAX_S

    def delay(self, attempts: int, rng: random.Random) -> float:
        cap = min(self.max_s, self.base_s * 2 ** min(max(0, attempts - 1), 30))
        return cap / 2 + rng.uniform(0, cap / 2)

    def wait(self, attempts: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones."""
        backoff = self.delay(attempts, rng)
        if retry_after_s is None:
            return backoff
        return min(self.retry_after_max_s, max(backoff, retry_after_s))


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    parked: int = 0
    waiting: int = 0  # not due yet: backoff, a blocked channel, an earlier row of the alert
    deferred: int = 0  # due, left for the next pass when the pass's budget was spent
    errors: list[str] = field(default_factory=list)


def _notification(row: Mapping[str, Any], thread_refs: Mapping[str, Any]) -> Notification:
    data = json.loads(row["payload_json"])
    return Notification(
        outbox_id=row["id"],
        channel=row["channel"],
        kind=data["kind"],
        phase=data["phase"],
        severity=data["severity"],
        reason=data["reason"],
        alert=data["alert"],
        thread_ref=thread_refs.get(row["channel"]),
    )


def _pending_rows(db: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in db.query("SELECT * FROM outbox WHERE status = 'pending' ORDER BY id")]


def _thread_refs(db: Database, alert_id: int | None) -> dict[str, Any]:
    """The alert's thread references as stored *now* (another row may just have added one)."""
    if alert_id is None:
        return {}
    row = next(iter(db.query("SELECT thread_ref_json FROM alerts WHERE id = ?", [alert_id])), None)
    if not row or not row["thread_ref_json"]:
        return {}
    refs = json.loads(row["thread_ref_json"])
    return refs if isinstance(refs, dict) else {}


def channel_states(db: Database) -> dict[str, dict[str, Any]]:
    """Each channel's delivery state (``failing_since``, ``failures``, ``blocked_until``,
    ``last_error``, ``last_error_at``, ``last_ok_at``, ``reported``), by channel name."""
    return {k[len(STATE_PREFIX) :]: v for k, v in st.get_watch_state(db, STATE_PREFIX).items()}


async def release_backoff(store: Store, now: float) -> int:
    """Make every pending row due now and unblock every channel (once, when the worker starts).

    A restart is often the fix (a new token, a network back): waiting out a backoff computed
    by the previous process helps nobody. Returns how many rows became due earlier.
    """

    def tx(db: Database) -> int:
        n = db.execute(
            "UPDATE outbox SET next_attempt_at = ? WHERE status = 'pending' AND next_attempt_at > ?",
            [now, now],
        ).rowcount
        states = channel_states(db)
        st.set_watch_state(
            db,
            {STATE_PREFIX + name: {**s, "blocked_until": None} for name, s in states.items() if s.get("blocked_until")},
            now,
        )
        return n

    return await store.write(tx)


async def deliver_due(
    store: Store,
    notifiers: Mapping[str, Notifier],
    now: float,
    *,
    rng: random.Random | None = None,
    policy: RetryPolicy | None = None,
    metrics: Metrics | None = None,
    budget_s: float | None = None,
) -> DeliveryReport:
    """One pass over the outbox: send every row that is due, in order per alert and channel.

    Each channel is drained in a task of its own, over one session of its notifier (one SMTP
    connection for the pass), so a slow channel does not hold the others' rows. ``budget_s``
    (wall-clock seconds) bounds the pass: once it is spent, a channel that has made an attempt
    starts no further row, and those rows are counted in ``DeliveryReport.deferred``, due at
    once in the next pass; a send in flight is never cut short (that could repeat it). None:
    the pass goes on until every due row was tried.

    ``metrics`` counts each outcome by channel: sent, failed (to be retried), parked.
    """
    rng = rng or random.Random()
    policy = policy or RetryPolicy()
    report = DeliveryReport()
    rows, states = await store.read(lambda db: (_pending_rows(db), channel_states(db)))
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_channel.setdefault(row["channel"], []).append(row)
    loop = asyncio.get_running_loop()
    deadline = None if budget_s is None else loop.time() + budget_s
    pass_ = _Pass(store, now, rng, policy, metrics, report, deadline)
    await _all_or_first_error(
        [
            asyncio.create_task(
                pass_.channel(channel, notifiers.get(channel), channel_rows, states.get(channel, {})),
                name=f"deliver:{channel}",
            )
            for channel, channel_rows in by_channel.items()
        ]
    )
    return report


async def _all_or_first_error(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task; the first to fail (a crash, not a DeliveryError) cancels the others
    and its exception is raised as is (a StateFileError must reach the service loop as such)."""
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t for t in tasks if t in done and not t.cancelled() and t.exception()), None)
        if failed is not None:
            raise failed.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class _Pass:
    """What the channels' tasks of one pass share: the store, the time, the report."""

    store: Store
    now: float
    rng: random.Random
    policy: RetryPolicy
    metrics: Metrics | None
    report: DeliveryReport
    deadline: float | None

    async def channel(
        self, channel: str, notifier: Notifier | None, rows: list[dict[str, Any]], state: dict[str, Any]
    ) -> None:
        """Send ``channel``'s due rows, one after the other, each committed as soon as it was
        accepted (before the session's close-down)."""
        store, now, report = self.store, self.now, self.report
        loop = asyncio.get_running_loop()
        held: set[int] = set()  # alerts with an earlier row still pending on this channel
        tried = False
        async with contextlib.AsyncExitStack() as stack:
            session: NotifierSession | None = None
            for row in rows:
                alert_id = row["alert_id"]
                if (
                    (alert_id is not None and alert_id in held)
                    or (state.get("blocked_until") or 0) > now
                    or (row["next_attempt_at"] or 0) > now
                ):
                    report.waiting += 1
                    if alert_id is not None:
                        held.add(alert_id)  # a later row of this alert never overtakes this one
                    continue
                if notifier is None:
                    await _park(store, row, now, f"channel {channel!r} is not configured")
                    report.parked += 1
                    _count(self.metrics, channel, "parked")
                    continue
                if tried and self.deadline is not None and loop.time() >= self.deadline:
                    report.deferred += 1  # due now: the next pass, after a new decision
                    if alert_id is not None:
                        held.add(alert_id)
                    continue
                tried = True
                if session is None:
                    session = await stack.enter_async_context(notifier.session())
                refs = await store.read(lambda db, a=alert_id: _thread_refs(db, a))
                check = getattr(store, "check_lease", None)
                if check is not None:
                    # A replica that lost the alerts lease while paused must not send what
                    # its successor sends: look right before the message leaves.
                    await check()
                try:
                    ref = await session.send(_notification(row, refs))
                except DeliveryError as exc:
                    state = await self._failed(channel, row, exc, state)
                    if alert_id is not None:
                        held.add(alert_id)
                    continue
                state = await _mark_sent(store, row, now, ref, state)
                report.sent += 1
                _count(self.metrics, channel, "sent")
        # A channel blocked all pass long has made no attempt, yet may have failed long enough.
        if _outage_to_report(state, now):
            await store.write(lambda db: _report_outage(db, channel, state, now))

    async def _failed(
        self, channel: str, row: Mapping[str, Any], exc: DeliveryError, state: dict[str, Any]
    ) -> dict[str, Any]:
        """Park the row (permanent) or schedule its retry; the channel's new state."""
        store, now, report = self.store, self.now, self.report
        attempts = (row["attempts"] or 0) + 1
        if exc.permanent:
            await _park(store, row, now, exc.message, attempts=attempts)
            report.parked += 1
            _count(self.metrics, channel, "parked")
            report.errors.append(f"{channel}: {exc.message}")
            log.error("channel %s: outbox row %s parked: %s", channel, row["id"], exc.message, extra={"channel": channel})
            return state
        wait = self.policy.wait(attempts, exc.retry_after_s, self.rng)
        state = await _retry_later(store, row, now, exc, attempts, now + wait, state, self.policy, self.rng)
        report.retried += 1
        _count(self.metrics, channel, "failed")
        log.warning(
            "channel %s: outbox row %s failed (attempt %d), retry in %.0f s: %s",
            channel, row["id"], attempts, wait, exc.message,
            extra={"channel": channel},
        )
        return state


def _count(metrics: Metrics | None, channel: str, outcome: str) -> None:
    if metrics is not None:
        metrics.notification(channel, outcome)


def _outage_to_report(state: Mapping[str, Any], now: float) -> bool:
    since = state.get("failing_since")
    return since is not None and not state.get("reported") and now - since >= CHANNEL_FAILING_AFTER_S


def _health_event(channel: str, since: float, now: float, *, recovered: bool, error: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "organization": "makewatch",
        "problem": "channel_failing",
        "channel": channel,
        "failing_since": since,
        "exclude_channel": channel,
    }
    if recovered:
        payload["recovered"] = True
    else:
        payload["error"] = (error or "")[:500]
    return {
        # One event per outage (its start names it), and one recovery per outage.
        "key": f"watcher_health:0:channel_failing:{channel}:{since:.3f}" + (":recovered" if recovered else ""),
        "kind": "watcher_health",
        "severity": "info" if recovered else "critical",
        "org_id": 0,
        "occurred_at": now,
        "detected_at": now,
        "payload": payload,
    }


def _report_outage(db: Database, channel: str, state: dict[str, Any], now: float) -> None:
    since = float(state["failing_since"])
    st.insert_events(db, [_health_event(channel, since, now, recovered=False, error=state.get("last_error"))])
    state["reported"] = True
    st.set_watch_state(db, {STATE_PREFIX + channel: state}, now)
    log.error(
        "channel %s: failing for %.0f minutes: %s", channel, (now - since) / 60, state.get("last_error"),
        extra={"channel": channel},
    )


async def _mark_sent(
    store: Store, row: Mapping[str, Any], now: float, ref: Any, state: Mapping[str, Any]
) -> dict[str, Any]:
    channel = row["channel"]

    def tx(db: Database) -> dict[str, Any]:
        db["outbox"].update(
            row["id"],
            {"status": "sent", "sent_at": now, "attempts": (row["attempts"] or 0) + 1, "last_error": None},
        )
        db["deliveries"].insert({"outbox_id": row["id"], "attempted_at": now, "ok": 1, "error": None})
        if ref and row["alert_id"] is not None:
            # Read-modify-write in this transaction: merge into the references as stored now,
            # never a copy read before another channel's send added its own.
            refs = _thread_refs(db, row["alert_id"])
            if channel not in refs:
                # Keep the first message's reference: later notices thread under (or update) it.
                refs[channel] = ref
                db["alerts"].update(row["alert_id"], {"thread_ref_json": json.dumps(refs)})
        new = {**state, "failing_since": None, "failures": 0, "blocked_until": None, "reported": False,
               "last_ok_at": now}
        if state.get("reported") and state.get("failing_since") is not None:
            since = float(state["failing_since"])
            st.insert_events(db, [_health_event(channel, since, now, recovered=True, error=None)])
            log.warning("channel %s: delivering again after %.0f minutes", channel, (now - since) / 60, extra={"channel": channel})
        if new != state:
            st.set_watch_state(db, {STATE_PREFIX + channel: new}, now)
        return new

    return await store.write(tx)


async def _retry_later(
    store: Store,
    row: Mapping[str, Any],
    now: float,
    exc: DeliveryError,
    attempts: int,
    at: float,
    state: Mapping[str, Any],
    policy: RetryPolicy,
    rng: random.Random,
) -> dict[str, Any]:
    error = exc.message[:500]
    failures = int(state.get("failures") or 0) + 1
    blocked_until = state.get("blocked_until")
    if exc.retry_after_s is not None:
        blocked_until = at  # rate limited: the whole channel waits as asked (bounded)
    elif failures >= 2:
        blocked_until = now + policy.delay(failures - 1, rng)  # down: no request per row
    new = {
        **state,
        "failing_since": state.get("failing_since") if state.get("failing_since") is not None else now,
        "failures": failures,
        "blocked_until": blocked_until,
        "last_error": error,
        "last_error_at": now,
    }

    def tx(db: Database) -> None:
        db["outbox"].update(row["id"], {"attempts": attempts, "next_attempt_at": at, "last_error": error})
        db["deliveries"].insert({"outbox_id": row["id"], "attempted_at": now, "ok": 0, "error": error})
        st.set_watch_state(db, {STATE_PREFIX + row["channel"]: new}, now)

    await store.write(tx)
    return new


async def _park(
    store: Store, row: Mapping[str, Any], now: float, error: str, *, attempts: int | None = None
) -> None:
    """Give up on a row, and raise a watcher_health event so other channels hear of it."""
    channel = row["channel"]

    def tx(db: Database) -> None:
        db["outbox"].update(
            row["id"],
            {"status": "parked", "attempts": attempts or row["attempts"] or 0, "last_error": error[:500]},
        )
        db["deliveries"].insert({"outbox_id": row["id"], "attempted_at": now, "ok": 0, "error": error[:500]})
        state = channel_states(db).get(channel, {})
        st.set_watch_state(db, {STATE_PREFIX + channel: {**state, "last_error": error[:500], "last_error_at": now}}, now)
        day = int(now // 86400)
        st.insert_events(
            db,
            [
                {
                    "key": f"watcher_health:0:channel_failed:{channel}:{day}",
                    "kind": "watcher_health",
                    "severity": "critical",
                    "org_id": 0,
                    "occurred_at": now,
                    "detected_at": now,
                    "payload": {
                        "organization": "makewatch",
                        "problem": "channel_failed",
                        "channel": channel,
                        "error": error[:500],
                        "exclude_channel": channel,
                    },
                }
            ],
        )

    await store.write(tx)
