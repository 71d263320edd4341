"""Silent failures: the runs that should have happened and did not (issue 15).

Errors Make logs are found by reading logs. The failures that log nothing are found here,
from what makewatch already reads each cycle, at no extra API call:

* **overdue**: an active scheduled scenario (``scheduling.type`` indefinitely, daily,
  weekly or monthly) whose scheduled run is late by more than
  ``max(grace_s, interval x grace_factor)`` while its run counters did not move;
* **idle**: a webhook scenario silent far longer than usual at those hours of the week
  (learnt from its own runs, as counted from the same counters), or longer than a
  configured ``expect_every``;
* **volume**: a day's operations of a scenario (from the counters) or an organization (from
  its usage, read at the slow interval anyway) far below or above the same weekday's usual
  (median and MAD of the previous weeks).

The detectors are pure functions of the stored snapshot, the scenario as just listed, the
time and a rule; the poller stores what they return with the snapshot, in the same
transaction as their events (so a crash repeats nothing and loses nothing).

Make facts this leans on (make-api.md §2.3, §2.4): there is no last-run field, but every run
moves ``operations``/``centicredits`` of the scenario in the listing (a polling trigger
that finds nothing still costs one operation); ``nextExec`` is the next scheduled run, and
null for instant, on-demand or inactive scenarios. What Make shows in ``nextExec`` for a run
that is stuck (it keeps the missed time, or moves on without a run) is not documented: the
detector does not depend on it, it remembers the *earliest* scheduled time it saw that has
not been followed by a counter move.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from watcher.business_hours import BusinessHours
from watcher.config import parse_duration
from watcher.make.models import Scenario

__all__ = [
    "SCHEDULED_TYPES",
    "Activity",
    "DailyOps",
    "VolumeRule",
    "VolumeStep",
    "VolumeVerdict",
    "last_complete_day_everywhere",
    "usage_days",
    "utc_day",
    "volume_step",
    "volume_verdict",
    "BusinessHours",
    "IdleRule",
    "IdleStep",
    "OverdueRule",
    "OverdueStep",
    "idle_step",
    "is_webhook",
    "last_edit_iso",
    "overdue_step",
    "ran_since",
]

#: Scheduling types with a time at which a run is expected. ``immediately`` (webhooks),
#: ``on-demand``, ``once`` and ``yearly`` never become overdue (a yearly run is too rare to
#: expect by default, a once run is over once it ran).
SCHEDULED_TYPES = frozenset({"indefinitely", "daily", "weekly", "monthly"})


@dataclass(frozen=True)
class OverdueRule:
    """How late a scheduled run may be before it is overdue (one scenario's settings)."""

    enabled: bool = True
    grace_s: float = 300.0
    grace_factor: float = 1.5

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> OverdueRule:
        """From one scenario's effective ``[polling.silent]`` values (``SilentSettings.effective``)."""
        return cls(bool(values["overdue"]), float(values["grace_s"]), float(values["grace_factor"]))

    def allowance_s(self, scheduling_type: str | None, interval_s: float | None) -> float:
        """``max(grace_s, interval x grace_factor)``. The interval counts only for
        ``indefinitely`` (every N seconds): for daily, weekly and monthly it is not the run's
        period (1.5 days of grace would make a missed nightly run news the next evening)."""
        if scheduling_type == "indefinitely" and interval_s:
            return max(self.grace_s, float(interval_s) * self.grace_factor)
        return self.grace_s


@dataclass(frozen=True)
class OverdueStep:
    """What :func:`overdue_step` decided for one scenario at one listing.

    ``due_at``: the earliest scheduled run not yet followed by a run (stored);
    ``overdue_at``: the ``due_at`` of the open overdue episode, or None (stored);
    ``fire``: the episode opens now; ``resolved``: why an open episode ended ("ran", or
    "not expected": switched off, paused, unscheduled or excluded); ``late_s``: how late
    the due run is; ``allowance_s``: how late it may be.
    """

    due_at: float | None
    overdue_at: float | None
    fire: bool = False
    resolved: str | None = None
    late_s: float = 0.0
    allowance_s: float = 0.0


def ran_since(prev: Mapping[str, Any], sc: Scenario) -> bool:
    """Did the scenario run since the stored snapshot ``prev``? Its counters moved.

    Counters that fell to zero are a new billing period, not a run; fallen but not to zero,
    it ran after the reset.
    """
    moved = prev.get("operations") != sc.operations or prev.get("centicredits") != sc.centicredits
    return moved and (sc.operations > 0 or sc.centicredits > 0)


def last_edit_iso(sc: Scenario) -> str | None:
    """``lastEdit`` as the snapshot row keeps it (an edit may move the schedule)."""
    return sc.last_edit.isoformat() if sc.last_edit else None


def overdue_step(
    prev: Mapping[str, Any] | None,
    sc: Scenario,
    now: float,
    *,
    org_paused: bool,
    rule: OverdueRule,
) -> OverdueStep:
    """Is ``sc`` (as just listed) overdue, given its stored snapshot ``prev`` (None at first
    sight)? A scenario that is switched off (``isActive`` false: stopped by hand or
    deactivated by Make), paused, in a paused organization (one organization-level alert
    says that), not scheduled, or excluded by ``rule`` is never overdue.
    """
    next_exec = sc.next_exec.timestamp() if sc.next_exec else None
    expected = (
        rule.enabled
        and sc.is_active
        and not sc.is_invalid
        and not sc.is_paused
        and not org_paused
        and sc.scheduling_type in SCHEDULED_TYPES
        and not is_webhook(sc)
    )
    open_at = prev.get("overdue_at") if prev else None
    ran = prev is not None and ran_since(prev, sc)
    if not expected or ran:
        resolved = None if open_at is None else ("ran" if ran and expected else "not expected")
        return OverdueStep(next_exec if expected else None, None, resolved=resolved)

    due = prev.get("due_at") if prev else None
    edited = prev is not None and prev.get("last_edit") != last_edit_iso(sc)
    # Counters back to zero: a new billing period, which erased the runs between the last
    # listing and the reset; whether the remembered slot ran is unknown (a nightly run just
    # before the reset would be "overdue" for a day). An open episode stays open until a
    # run is seen.
    reset = prev is not None and open_at is None and not (sc.operations or sc.centicredits) and prev.get("operations") != sc.operations
    if due is None or edited or reset or (next_exec is not None and next_exec < due):
        # First sight, a schedule edited (its old slot is not expected any more), counters
        # reset, or a slot earlier than the one remembered: the run expected is nextExec. A
        # nextExec that moved *later* without a run keeps the missed slot.
        due = next_exec
    if due is None:
        return OverdueStep(None, None, resolved=None if open_at is None else "not expected")
    allowance = rule.allowance_s(sc.scheduling_type, sc.interval_s)
    late = now - due
    if open_at is not None:
        if due != open_at and late <= allowance:
            # Edited to a later slot while overdue: this episode is over.
            return OverdueStep(due, None, resolved="not expected", late_s=late, allowance_s=allowance)
        return OverdueStep(due, open_at, late_s=late, allowance_s=allowance)
    if late > allowance:
        return OverdueStep(due, due, fire=True, late_s=late, allowance_s=allowance)
    return OverdueStep(due, None, late_s=late, allowance_s=allowance)


# --- idle webhooks ---------------------------------------------------------------------------

HOURS_OF_WEEK = 168
WEEK_S = 7 * 86400.0
# No learnt idle alert before a scenario has this much history (a first week of data).
LEARNING_S = WEEK_S
# A bucket remembers about this many hours of observation: past it, its figures are halved,
# so a webhook whose traffic changed for good is learnt again within weeks.
MEMORY_H = 8.0
# Each hour's rate is learnt as if it had also been watched this long without a run: an
# hour seen only once or twice (the second week) is not trusted on a lucky busy hour, and a
# well-watched one (4 to 8 hours) is barely changed.
PRIOR_SEEN_S = 3600.0
# Runs seen after a gap between two listings longer than this (makewatch was stopped) are
# spread over the gap rather than put in its last hour.
SPREAD_AFTER_S = 7200.0


def is_webhook(sc: Scenario) -> bool:
    """Triggered by a hook: ``hookId`` set and no interval schedule. Make lists ``immediately``
    for these, though a live webhook scenario showed ``indefinitely`` without an interval
    (make-api.md §2.3), hence the test on the interval, not the type."""
    return sc.hook_id is not None and not sc.interval_s and sc.scheduling_type in (None, "immediately", "indefinitely")


@dataclass(frozen=True)
class IdleRule:
    """When a webhook scenario is idle (one scenario's settings)."""

    enabled: bool = True
    factor: float = 10.0
    expect_every_s: float | None = None
    business_hours: BusinessHours | None = None

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> IdleRule:
        hours = values.get("business_hours")
        every = values.get("expect_every")
        return cls(
            bool(values["idle"]),
            float(values["idle_factor"]),
            parse_duration(every) if every else None,
            BusinessHours.parse(hours, values.get("timezone") or "UTC") if hours else None,
        )


def _hour_slices(t0: float, t1: float) -> Iterator[tuple[int, float, float]]:
    """(hour of the week in UTC, start, end) of each clock-hour piece of (t0, t1]."""
    t = t0
    while t < t1:
        end = min(t1, (math.floor(t / 3600.0) + 1) * 3600.0)
        # 1970-01-01 was a Thursday: shift so that bucket 0 is Monday 00:00 UTC.
        yield int((t // 3600.0 + 72) % HOURS_OF_WEEK), t, end
        t = end


@dataclass
class Activity:
    """What makewatch learnt of one scenario's runs (kept in ``scenarios.activity_json``,
    about 3 KB): per hour of the week, the runs seen and the seconds watched."""

    since: float
    folded_to: float
    last_run_at: float | None = None
    idle_at: float | None = None  # last_run_at of an open idle episode
    runs: list[float] = field(default_factory=lambda: [0.0] * HOURS_OF_WEEK)
    seen_s: list[float] = field(default_factory=lambda: [0.0] * HOURS_OF_WEEK)
    # Runs counted from the logs read (``scenarios.runs_seen``) up to here, and runs credited
    # before their logs were read (see count_runs).
    logs_mark: int = 0
    ahead: int = 0

    def count_runs(self, runs_seen: int, at_most: int) -> int:
        """How many runs to credit for a listing whose counters moved, at most ``at_most``
        (its operations step: a run costs at least one).

        The logs read so far (``runs_seen``, exact but read a cycle or more later) tell how
        many; until they are read, a counter move counts as one run (the operations step is
        no count: several runs between two listings make one step). What was credited
        ahead is taken off what the logs tell later, so nothing counts twice; and logs read
        long after their runs (a tight budget) are not credited to this listing's hour
        beyond its step: such a spike would teach a rate that hour never had.
        """
        if runs_seen < self.logs_mark:  # (a stored count that went back: start again)
            self.logs_mark = runs_seen
        new, self.logs_mark = runs_seen - self.logs_mark, runs_seen
        if new - self.ahead >= 1:
            n, self.ahead = min(new - self.ahead, max(1, at_most)), 0
            return n
        self.ahead = max(0, self.ahead - new) + 1
        return 1

    @classmethod
    def from_json(cls, data: Any, now: float) -> Activity:
        if not isinstance(data, dict) or len(data.get("runs") or ()) != HOURS_OF_WEEK:
            return cls(since=now, folded_to=now)
        return cls(
            float(data["since"]), float(data["folded_to"]), data.get("last_run_at"), data.get("idle_at"),
            [float(x) for x in data["runs"]], [float(x) for x in data["seen_s"]],
            int(data.get("logs_mark") or 0), int(data.get("ahead") or 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since, "folded_to": self.folded_to, "last_run_at": self.last_run_at, "idle_at": self.idle_at,
            "runs": [round(x, 3) for x in self.runs], "seen_s": [round(x) for x in self.seen_s],
            "logs_mark": self.logs_mark, "ahead": self.ahead,
        }  # fmt: skip

    def fold(self, t1: float, runs: float, since: float | None = None) -> None:
        """Credit (folded_to, t1] as watched, with ``runs`` runs that happened after
        ``since`` (the listing before, which did not show them): they are spread over
        (since, t1] by time, a listing a minute or so ago putting them in the hour of
        ``t1``. Without ``since``, or after a gap longer than SPREAD_AFTER_S (makewatch was
        stopped), over the whole span.
        """
        t0 = self.folded_to
        if t1 <= t0:
            return
        lo = t0 if since is None or since <= t0 or t1 - since > SPREAD_AFTER_S else since
        for h, a, b in _hour_slices(t0, t1):
            self.seen_s[h] += b - a
            self.runs[h] += runs * max(0.0, b - max(a, lo)) / (t1 - lo)
            if self.seen_s[h] > MEMORY_H * 3600.0:
                self.seen_s[h] /= 2
                self.runs[h] /= 2
        self.folded_to = t1

    def expected_runs(self, t0: float, t1: float, hours: BusinessHours | None = None) -> float:
        """How many runs (t0, t1] usually holds, from the rate learnt at each hour of the
        week (an hour never watched counts for none; see PRIOR_SEEN_S), within ``hours``
        only when given."""
        total = 0.0
        for h, a, b in _hour_slices(t0, t1):
            if self.seen_s[h] > 0 and (hours is None or hours.contains(a)):
                total += self.runs[h] / (self.seen_s[h] + PRIOR_SEEN_S) * (b - a)
        return total


def _counted(hours: BusinessHours | None, t0: float, t1: float) -> float:
    """Seconds of (t0, t1] inside ``hours`` (all of them without), by clock-hour pieces."""
    if hours is None:
        return max(0.0, t1 - t0)
    return sum(b - a for _, a, b in _hour_slices(t0, t1) if hours.contains(a))


@dataclass(frozen=True)
class IdleStep:
    """What :func:`idle_step` decided: the profile to store (None: unchanged), whether an
    idle episode opens (``fire``, with ``expected`` runs missed and ``silent_s``) or ends
    (``resolved``: "ran" or "not expected")."""

    activity: Activity | None
    fire: bool = False
    resolved: str | None = None
    expected: float = 0.0
    silent_s: float = 0.0
    reason: str = ""
    episode_at: float = 0.0  # the last run before the silence: names the episode


def idle_step(
    prev: Mapping[str, Any] | None,
    sc: Scenario,
    now: float,
    *,
    org_paused: bool,
    rule: IdleRule,
    listed_before: float | None = None,
) -> IdleStep:
    """Learn from one listing of ``sc`` and say whether it went idle.

    A run is a counter move since the snapshot ``prev`` (how many: see
    :meth:`Activity.count_runs`). Candidates: webhook scenarios (see
    :func:`is_webhook`), and any scenario with ``expect_every``. Idle, with ``expect_every``:
    no run for that long (counting only ``business_hours`` when set). Idle, learnt: the runs
    usually seen since the last run reach ``factor`` (silent ``factor`` times longer than
    the usual gap at those hours of the week), never in the first week of data. A
    switched-off, paused or unlisted-for-idle scenario is never idle.
    """
    candidate = is_webhook(sc) or rule.expect_every_s is not None
    if not candidate:
        return IdleStep(None)
    act = Activity.from_json(prev.get("activity") if prev else None, now)
    ran = prev is not None and ran_since(prev, sc)
    expected_now = rule.enabled and sc.is_active and not sc.is_invalid and not sc.is_paused and not org_paused
    changed = prev is None or not prev.get("activity")
    if ran:
        # Silent time is folded in only with the run that ends it: an outage must not teach
        # the profile that those hours are quiet while it is being measured against them.
        if listed_before is None and prev:
            listed_before = prev.get("updated_at")  # (the listing before, when not given)
        step = sc.operations - int(prev.get("operations") or 0) if prev else 1
        runs = act.count_runs(int(prev.get("runs_seen") or 0) if prev else 0, step if step > 0 else sc.operations)
        act.fold(now, runs, listed_before)
        act.last_run_at = now
        changed = True
    elif not (sc.is_active and not sc.is_paused and not org_paused) and act.folded_to < now:
        # Switched off or paused: not watched, nothing learnt (written with the next change).
        act.folded_to = now
        act.last_run_at = None if act.last_run_at is None else now
    if act.idle_at is not None and (ran or not expected_now):
        episode, act.idle_at = act.idle_at, None
        return IdleStep(act, resolved="ran" if ran and expected_now else "not expected", episode_at=episode)
    if not expected_now or act.idle_at is not None or ran:
        return IdleStep(act if changed else None)
    last = act.last_run_at if act.last_run_at is not None else act.since
    silent_s = _counted(rule.business_hours, last, now)
    if rule.expect_every_s is not None:
        if silent_s > rule.expect_every_s:
            act.idle_at = last
            return IdleStep(act, fire=True, silent_s=silent_s, reason="expect_every", episode_at=last)
        return IdleStep(act if changed else None)
    if now - act.since < LEARNING_S:
        return IdleStep(act if changed else None)
    expected = act.expected_runs(last, now, rule.business_hours)
    if expected >= rule.factor:
        act.idle_at = last
        return IdleStep(act, fire=True, expected=expected, silent_s=silent_s, reason="learnt", episode_at=last)
    return IdleStep(act if changed else None)


# --- volume anomalies ------------------------------------------------------------------------

# A listing gap longer than this (makewatch was stopped) leaves that time uncovered: its
# operations are not put into one day, and a day watched less than DAY_COVERAGE is compared
# with nothing, nor is it a baseline.
VOLUME_GAP_S = 6 * 3600.0
DAY_COVERAGE = 0.9
# The day's operations are credited at most this often (the snapshot is written every cycle,
# the day totals need not be).
CREDIT_EVERY_S = 900.0
# Days of operations kept per scenario (a few weeks of the same weekday, and the digest's 14).
VOLUME_DAYS = 36
# MAD x this is the spread of a normal series (the MAD of a normal distribution is 0.6745 sigma).
MAD_SIGMA = 1.4826


@dataclass(frozen=True)
class VolumeRule:
    """When a day's operations are an anomaly (one scenario's or organization's settings):
    beyond ``factor`` times the median of the same weekday in the previous ``weeks`` weeks (at
    least ``min_weeks`` of them known), outside 3 robust sigmas of them, with a median of at
    least ``min_ops`` a day (a scenario that runs once a month has a median of 0: never)."""

    enabled: bool = True
    factor: float = 3.0
    min_ops: float = 50.0
    weeks: int = 4
    min_weeks: int = 3

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> VolumeRule:
        return cls(bool(values["volume"]), float(values["volume_factor"]), float(values["volume_min_ops"]))


@dataclass(frozen=True)
class VolumeVerdict:
    """``direction``: "drop", "spike" or None (normal); the figures it was judged on."""

    direction: str | None
    value: float
    median: float
    mad: float
    baseline: tuple[float, ...]


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def volume_verdict(days: Mapping[str, float], day: str, rule: VolumeRule) -> VolumeVerdict | None:
    """Judge ``days[day]`` (operations, by ISO date) against the same weekday of the previous
    weeks; None when there is not enough to judge on (or the check is off)."""
    if not rule.enabled or day not in days:
        return None
    d = date.fromisoformat(day)
    baseline = [days[k] for w in range(1, rule.weeks + 1) if (k := (d - timedelta(weeks=w)).isoformat()) in days]
    if len(baseline) < rule.min_weeks:
        return None
    value, med = float(days[day]), _median(baseline)
    mad = _median([abs(x - med) for x in baseline])
    if med < rule.min_ops:
        return None
    unusual = abs(value - med) > 3 * MAD_SIGMA * mad
    direction = None
    if unusual and value * rule.factor <= med:
        direction = "drop"
    elif unusual and value >= med * rule.factor:
        direction = "spike"
    return VolumeVerdict(direction, value, med, mad, tuple(baseline))


@dataclass
class DailyOps:
    """A scenario's operations per UTC day, from the counters of the listings (kept in
    ``scenarios.volume_json``, under 2 KB): ``ops`` and ``covered_s`` by ISO date; the
    counter and the time credited up to (``ops_mark``, ``t_mark``); the last day judged and
    the day of an open anomaly."""

    ops: dict[str, float] = field(default_factory=dict)
    covered_s: dict[str, float] = field(default_factory=dict)
    t_mark: float | None = None
    ops_mark: int = 0
    judged: str | None = None
    open_day: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> DailyOps:
        if not isinstance(data, dict):
            return cls()
        return cls(
            dict(data.get("ops") or {}), dict(data.get("covered_s") or {}), data.get("t_mark"),
            int(data.get("ops_mark") or 0), data.get("judged"), data.get("open_day"),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": {k: round(v, 1) for k, v in self.ops.items()},
            "covered_s": {k: round(v) for k, v in self.covered_s.items()},
            "t_mark": self.t_mark, "ops_mark": self.ops_mark, "judged": self.judged, "open_day": self.open_day,
        }  # fmt: skip

    def observe(self, now: float, counter: int, listing_gap_s: float) -> bool:
        """Credit the operations counted since the mark (at most every CREDIT_EVERY_S, and at
        each new day; a listing gap over VOLUME_GAP_S is left uncovered). True: changed."""
        if self.t_mark is None or listing_gap_s > VOLUME_GAP_S or counter < 0:
            self.t_mark, self.ops_mark = now, counter
            return True
        if now - self.t_mark < CREDIT_EVERY_S and utc_day(now) == utc_day(self.t_mark):
            return False
        # A counter that went down is a new billing period: what it shows was used since.
        self._credit(self.t_mark, now, counter - self.ops_mark if counter >= self.ops_mark else counter)
        self.t_mark, self.ops_mark = now, counter
        return True

    def _credit(self, t0: float, t1: float, ops: float) -> None:
        t = t0
        while t < t1:
            end = min(t1, (math.floor(t / 86400.0) + 1) * 86400.0)
            # Interned: every scenario's volume keeps up to VOLUME_DAYS of these twice, and
            # 10,000 scenarios' own copies of the same day strings would be MBs (issue 16).
            key = sys.intern(utc_day(t))
            self.ops[key] = self.ops.get(key, 0.0) + ops * (end - t) / (t1 - t0)
            self.covered_s[key] = self.covered_s.get(key, 0.0) + end - t
            t = end
        for old in sorted(self.ops)[:-VOLUME_DAYS]:
            self.ops.pop(old, None)
            self.covered_s.pop(old, None)

    def complete(self) -> dict[str, float]:
        """The days watched enough to be judged or be a baseline."""
        return {k: v for k, v in self.ops.items() if self.covered_s.get(k, 0.0) >= DAY_COVERAGE * 86400.0}


def utc_day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).date().isoformat()


def last_complete_day_everywhere(now: float) -> str:
    """The day after which ``now`` is the next day in every time zone (UTC-12 to UTC+14):
    an organization's usage days are cut in its own zone, and a day still running there
    must not be judged as a drop."""
    return utc_day(now - 12 * 3600.0 - 86400.0)


def usage_days(usage: Any, until: str) -> dict[str, float]:
    """An organization's daily usage (``UsageDay`` list) as operations (or credits, if more)
    by ISO date, up to ``until``; a day missing between two listed ones counts 0 (guess:
    make-api.md §5.3 does not say whether Make lists days without usage)."""
    listed = {d.day.isoformat(): float(max(d.operations, d.centicredits / 100)) for d in usage}
    if not listed:
        return {}
    day, out = date.fromisoformat(min(listed)), {}
    while (key := day.isoformat()) <= until:
        out[key] = listed.get(key, 0.0)
        day += timedelta(days=1)
    return out


@dataclass(frozen=True)
class VolumeStep:
    """What :func:`volume_step` decided: ``verdict`` of the day it judged (``day``), whether
    an anomaly opens (``fire``) or the open one ends (``resolved``)."""

    day: str | None = None
    verdict: VolumeVerdict | None = None
    fire: bool = False
    resolved: bool = False
    episode_day: str | None = None


def volume_step(state: DailyOps, days: Mapping[str, float], yesterday: str, rule: VolumeRule) -> VolumeStep:
    """Judge the day ``yesterday`` once (``state.judged``; ``days``: the complete days,
    operations by ISO date): an anomaly opens an episode (``state.open_day``); a normal day
    (or the check turned off) ends it. An organization's state is a DailyOps without days."""
    if state.judged is not None and state.judged >= yesterday:
        return VolumeStep()
    state.judged = yesterday
    verdict = volume_verdict(days, yesterday, rule)
    if verdict is not None and verdict.direction:
        if state.open_day is None:
            state.open_day = yesterday
            return VolumeStep(yesterday, verdict, fire=True, episode_day=yesterday)
        return VolumeStep(yesterday, verdict)
    if state.open_day is not None and (verdict is not None or not rule.enabled):
        episode, state.open_day = state.open_day, None
        return VolumeStep(yesterday, verdict, resolved=True, episode_day=episode)
    return VolumeStep(yesterday, verdict)
