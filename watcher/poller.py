"""Detection: one polling cycle of one Make organization, inside its API budget.

A cycle (``OrgPoller.poll_once``):

1. every ``usage_interval_s``: the organization (plan, license, counters; sizes the budget),
   its daily usage (quota crossings and the exhaustion forecast) and its hooks (backlogs);
2. the inventory: every scenario (one call per 100), diffed with the stored snapshot. State
   transitions (deactivated, reactivated, paused) become events at once; a scenario whose
   ``operations``/``centicredits`` counters, ``dlqCount``, ``isActive`` or ``isinvalid`` moved
   is marked *pending* (its logs must be read). Snapshot, events and pending marks commit in
   one transaction;
3. logs (and DLQs where ``dlqCount`` rose) of pending scenarios, highest priority first, then
   the safety sweep (active scenarios not read for ``sweep_interval_s``), as far as this
   cycle's share of the budget goes; the rest stays pending for the next cycle. Each
   scenario's new events, its advanced cursor and its cleared pending mark commit together.

So a crash at any point loses nothing (the pending mark or the old cursor is still there)
and repeats nothing (event keys are unique).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlite_utils import Database

from alerts.routing import scope_matches
from watcher import analytics as an
from watcher import events as ev
from watcher import silent
from watcher import store as st
from watcher.clock import Clock
from watcher.config import OrganizationSettings, PollingSettings, budget_per_minute
from watcher.leases import LeaseLost
from watcher.logs import ContextLog
from watcher.make import MakeApiError, MakeClient, Organization, Scenario
from watcher.make.client import SCENARIO_PAGE_SIZE
from watcher.make.models import Hook, UsageDay, imt_sort_key
from watcher.orgs import calibrate
from watcher.reads import DEACTIVATED, choose_reads, priority, read_cost, round_robin_s, signals_of
from watcher.steps import StepProfile
from watcher.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
# A scenario's effective [polling.silent] values and the rules built from them.
SilentRules = tuple[dict[str, Any], silent.OverdueRule, silent.IdleRule]

# Our clock and Make's may disagree a little: a baseline starts this much earlier, so that a
# run Make stamps just before our "now" is not lost (at worst an error from the last minute
# before the first start is reported).
BASELINE_SKEW_S = 60.0
# At most this share of a cycle's budget goes to listing scenarios (see _inventory_due).
INVENTORY_SHARE = 0.1
# Poll again after the time the last cycle's requests take of the budget, times this.
ADAPTIVE_HEADROOM = 1.25
# How many of those errors a deactivation notice shows.
DEACTIVATION_ERRORS = 3
# How far before its cursor a scenario's logs are read again (see _read_scenario).
LOG_OVERLAP_S = 600.0
# A failed cycle (5xx, HTML, malformed JSON, timeouts) is tried again after this, doubling
# per failure up to the cap (and never later than poll_interval_s): a 2-minute API outage
# costs about 2 minutes of detection, not several poll intervals.
FAILURE_BACKOFF_S, FAILURE_BACKOFF_MAX_S = 5.0, 30.0
# The organization, its usage and its hooks are cheap (2 + one per team requests): they are
# read as often as this share of the budget allows, but not more often than every
# USAGE_MIN_INTERVAL_S, nor less often than polling.usage_interval_s. (Usage moves slowly: at
# a twentieth of the budget these reads were what made makewatch's round at 1,000 scenarios
# on Core longer than a round-robin's; at 1.5 % they come every 9 minutes there.) Near a quota threshold
# or with a webhook queue half way to its alert, a larger share, down to NEAR_INTERVAL_S.
USAGE_SHARE, USAGE_MIN_INTERVAL_S = 0.015, 300.0
NEAR_USAGE_SHARE, NEAR_INTERVAL_S = 0.2, 60.0
# "Near": within this many percentage points below the next quota threshold, or a queue at
# this share of hook_backlog_ratio.
NEAR_QUOTA_POINTS, NEAR_HOOK_SHARE = 5.0, 0.5
# In-app notifications read at most this many at a time (newer than the last seen).
NOTICES_PER_READ = 100
# A webhook queue that rose at this many reads of the hooks in a row while its scenario did
# not run raises hook_backlog before the ratio (its consumer is stuck).
HOOK_RISING_READS = 3
# Make's rate-limit window is 60 s: a rate-limit pause longer than this means something
# else is wrong (another integration hammering the organization): watcher_health says so.
RATE_LIMITED_HEALTH_S = 120.0


@dataclass
class CycleReport:
    """What one cycle of one organization did."""

    org: str
    requests: int = 0
    budget_per_minute: int = 0
    scenarios: int = 0
    logs_read: int = 0
    dlqs_read: int = 0
    carried_over: int = 0
    events: Counter[str] = field(default_factory=Counter)
    # Logs reads by why they were chosen ("band:signals|floor|likelihood|sweep", and
    # "signal:partial|dlq|state" for the signals they carried), and the failures each found:
    # bench/detect.py prints each signal's precision and recall from them.
    reads: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)  # reads that found a new failure
    found: Counter[str] = field(default_factory=Counter)  # new failures found
    analytics_rose: int = 0  # scenarios marked pending by Enterprise analytics
    notified: int = 0  # scenarios marked pending by an in-app notification
    error: str | None = None
    # Whether trying again soon may help (an outage), or not (a rejected token).
    retryable: bool = True

    @property
    def ok(self) -> bool:
        return self.error is None


# One dict per distinct (type, interval), shared by every snapshot (read-only): a dict per
# scenario was 2.6 MB of a 10,000-scenario organization's rows kept in memory (issue 16).
_SCHEDULINGS: dict[tuple[Any, Any], dict[str, Any]] = {}


def _scheduling(kind: Any, interval: Any) -> dict[str, Any]:
    """A snapshot's ``scheduling``, shared with the other snapshots of the same schedule."""
    key = (kind, interval)
    shared = _SCHEDULINGS.get(key)
    if shared is None:
        shared = _SCHEDULINGS[key] = {"type": kind, "interval": interval}
    return shared


def _snapshot_row(sc: Scenario, org_id: int, now: float) -> dict[str, Any]:
    return {
        "id": sc.id,
        "org_id": org_id,
        "team_id": sc.team_id,
        "name": sc.name,
        "is_active": int(sc.is_active),
        "is_invalid": int(sc.is_invalid),
        "is_paused": int(sc.is_paused),
        "dlq_count": sc.dlq_count,
        "operations": sc.operations,
        "centicredits": sc.centicredits,
        "transfer": sc.transfer,
        "hook_id": sc.hook_id,
        "scheduling": _scheduling(sc.scheduling_type, sc.interval_s),
        "next_exec": sc.next_exec.isoformat() if sc.next_exec else None,
        "last_edit": silent.last_edit_iso(sc),
        "updated_at": now,
    }


def _scenario_from_row(row: dict[str, Any]) -> Scenario:
    """A stored snapshot as a Scenario (for building events of a scenario read later)."""
    return Scenario.parse(
        {
            "id": row["id"],
            "name": row.get("name"),
            "teamId": row.get("team_id"),
            "hookId": row.get("hook_id"),
            "isActive": bool(row.get("is_active")),
            "isinvalid": bool(row.get("is_invalid")),
            "isPaused": bool(row.get("is_paused")),
            "dlqCount": row.get("dlq_count") or 0,
            "operations": row.get("operations") or 0,
            "centicredits": row.get("centicredits") or 0,
        }
    )


def _moved(prev: dict[str, Any], sc: Scenario) -> list[str]:
    """Why a scenario's logs must be read: which signals moved since the last snapshot.

    A counter that went down means a new billing period: it counts as moved too.
    """
    reasons = []
    if prev.get("operations") != sc.operations or prev.get("centicredits") != sc.centicredits:
        reasons.append("counters")
    if prev.get("dlq_count") != sc.dlq_count:
        reasons.append("dlq")
    if bool(prev.get("is_active")) != sc.is_active or bool(prev.get("is_invalid")) != sc.is_invalid:
        reasons.append("state")
    return reasons


def daily_rate(usage: list[UsageDay]) -> float:
    """Average daily use over the last 7 days of data, in operations (or credits, if more)."""
    days = sorted(usage, key=lambda d: d.day)[-7:]
    if not days:
        return 0.0
    return sum(max(d.operations, d.centicredits / 100) for d in days) / len(days)


def usage_summary(info: Organization, usage: list[UsageDay], now: float) -> dict[str, Any]:
    """What the digest shows of an organization's quota (stored in its row's ``usage``)."""
    limit = info.license.operations if info.license else None
    used = max(info.operations_used, math.ceil(info.centicredits_used / 100))
    rate = daily_rate(usage)
    exhaust_at = now + max((limit or 0) - used, 0) / rate * 86400 if limit and rate > 0 else None
    return {
        "operations_used": used,
        "operations_limit": limit,
        "used_pct": round(100.0 * used / limit, 1) if limit else None,
        "daily_rate": round(rate, 1),
        "forecast_exhausted_at": exhaust_at,
        "last_reset": info.last_reset.timestamp() if info.last_reset else None,
        "next_reset": info.next_reset.timestamp() if info.next_reset else None,
        "is_paused": info.is_paused,
        "days": [{"date": d.day.isoformat(), "operations": d.operations, "centicredits": d.centicredits} for d in sorted(usage, key=lambda d: d.day)[-31:]],
        "updated_at": now,
    }


def quota_event(
    org_settings: OrganizationSettings,
    info: Organization,
    usage: list[UsageDay],
    thresholds: tuple[int, ...],
    reported: dict[str, Any],
    now: float,
    *,
    standing: bool,
) -> tuple[ev.Event | None, dict[str, Any]]:
    """The highest quota threshold newly crossed in this period, with a forecast.

    Returns the event (or None) and the new "reported" state. Credits (centicredits / 100)
    and operations are both counted; the larger share wins.
    """
    limit = info.license.operations if info.license else None
    period = info.last_reset.isoformat() if info.last_reset else "current"
    if reported.get("period") != period:
        reported = {"period": period, "level": 0}
    if not limit:
        return None, reported
    used = max(info.operations_used, math.ceil(info.centicredits_used / 100))
    pct = 100.0 * used / limit
    crossed = [t for t in thresholds if pct >= t and t > reported["level"]]
    if not crossed:
        return None, reported
    level = max(crossed)
    rate = daily_rate(usage)
    remaining = max(limit - used, 0)
    exhaust_at = now + remaining / rate * 86400 if rate > 0 else None
    next_reset = info.next_reset.timestamp() if info.next_reset else None
    severity = "critical" if level >= 100 else ("error" if level >= 90 else "warning")
    payload = {
        "organization": org_settings.name,
        "threshold_pct": level,
        "used": used,
        "limit": limit,
        "used_pct": round(pct, 1),
        "daily_rate": round(rate, 1),
        "forecast_exhausted_at": exhaust_at,
        "next_reset": next_reset,
        "exhausts_before_reset": bool(exhaust_at and next_reset and exhaust_at < next_reset),
        "standing": standing,
        "usage_url": ev.usage_link(ev.ui_base(org_settings.api_base_url), org_settings.organization_id),
    }
    event = ev.Event(
        "quota", f"quota:{info.id}:{period}:{level}", info.id, now, payload, severity=severity
    )
    return event, {"period": period, "level": level}


class OrgPoller:
    """Polls one organization; state lives in the store, so a new instance resumes."""

    def __init__(
        self,
        org: OrganizationSettings,
        client: MakeClient,
        store: Store,
        polling: PollingSettings,
        clock: Clock,
    ) -> None:
        self.org = org
        self.client = client
        self.store = store
        self.polling = polling
        self.clock = clock
        self.org_id = org.organization_id
        self.ui = ev.ui_base(org.api_base_url)
        #: Log records of this organization carry ``org`` (a field of JSON log lines).
        self.log = ContextLog(log, org=org.name)
        self.info: Organization | None = None
        self._cycle_start_requests = 0
        self._usage: dict[str, Any] | None = None
        # The planned time to the next cycle (see next_interval_s); a cycle's budget is its share.
        self.interval_s = polling.poll_interval_s
        self._failures = 0  # consecutive failed cycles (their backoff)
        self.scenario_page_size = SCENARIO_PAGE_SIZE
        # The organization's scenario snapshots and cursors as stored, kept between cycles so
        # that a cycle reads none of them back (a 10,000-scenario organization reloaded them
        # all twice a cycle). Loaded at the first cycle; updated after each commit; dropped
        # when a write fails, so the database stays the truth.
        self._rows: dict[int, dict[str, Any]] | None = None
        self._cursors: dict[tuple[int, str], dict[str, Any]] = {}
        # Today's error counts from Enterprise analytics (watcher.analytics), in memory only:
        # a new process starts with a baseline read.
        self._analytics = an.ErrorCounts()
        self._analytics_off_until = 0.0
        # The in-app notification hint (polling.notifications): the last notice seen (None:
        # not read yet, "" an empty feed), in memory only.
        self._notice_id: str | None = None
        self._notices_at = 0.0
        self._notices_off_until = 0.0
        # The silent checks' settings per scenario (see _silent_rules): (team id, name) and
        # the settings of the rules they match, shared by every scenario matching the same.
        self._rule_cache: dict[int, tuple[tuple[int | None, str], SilentRules]] = {}
        self._rule_sets: dict[tuple[int, ...], SilentRules] = {}

    # --- the cycle --------------------------------------------------------------------

    async def poll_once(self) -> CycleReport:
        """One full cycle; never raises for Make's or the network's failures."""
        report = CycleReport(self.org.name)
        started = self.clock.time()
        start_requests = self._cycle_start_requests = self.client.requests_sent
        try:
            await self._cycle(report)
        except MakeApiError as exc:
            report.error = str(exc)
            # Any failure but a rejected token is tried again soon: even an HTML 403 may be a
            # passing Cloudflare hiccup, and a cycle that fails costs a request or two.
            report.retryable = not exc.is_auth_error
            self.log.warning("organization %s: cycle failed: %s", self.org.name, exc)
            await self._record_failure(exc, report)
        finally:
            report.requests = self.client.requests_sent - start_requests
            report.budget_per_minute = self.client.limiter.per_window
        await self._rate_limit_health(report)
        await self._record_cycle(report, started)
        return report

    def next_interval_s(self, report: CycleReport) -> float:
        """When to poll again: as soon as the budget allows, within the configured bounds.

        A cycle that cost R requests at B requests per minute can repeat every R / B minutes
        (with a quarter of headroom), so a quiet organization is listed every
        ``min_poll_interval_s`` and detection latency drops, while a busy one keeps to
        ``poll_interval_s``. The interval chosen also sizes the next cycle's share of the budget.
        """
        lo, hi = self.polling.min_interval_s, self.polling.poll_interval_s
        self._failures = 0 if report.ok else self._failures + 1
        if not report.ok and report.retryable:
            backoff = FAILURE_BACKOFF_S * 2 ** (self._failures - 1)
            self.interval_s = min(hi, FAILURE_BACKOFF_MAX_S, backoff)
        elif not report.ok or report.budget_per_minute <= 0:
            self.interval_s = hi
        else:
            wanted = report.requests / report.budget_per_minute * 60.0 * ADAPTIVE_HEADROOM
            self.interval_s = min(hi, max(lo, wanted))
        return self.interval_s

    async def _record_cycle(self, report: CycleReport, started: float) -> None:
        row = {
            "org_id": self.org_id,
            "started_at": started,
            "finished_at": self.clock.time(),
            "requests": report.requests,
            "budget_per_minute": report.budget_per_minute,
            "ok": int(report.ok),
            "error": report.error,
            "events": sum(report.events.values()),
        }
        try:
            await self.store.write(lambda db: db["cycles"].insert(row))
        except LeaseLost:
            raise  # another replica holds the organization now: stop, not a statistics hiccup
        except Exception:  # statistics must never fail a cycle
            self.log.exception("organization %s: could not record cycle statistics", self.org.name)

    async def _cycle(self, report: CycleReport) -> None:
        now = self.clock.time()
        prefix = f"org:{self.org_id}:"
        org_row, ws = await self.store.read(
            lambda db: (st.get_organization(db, self.org_id), st.get_watch_state(db, prefix))
        )
        first_start = org_row is None
        new_events: list[ev.Event] = []
        ws_updates: dict[str, Any] = {}

        usage_at = ws.get(prefix + "usage_at", 0.0)
        if self.info is None and not first_start:
            self._restore_info(ws.get(prefix + "info"))
        if self.info is None or first_start or now - usage_at >= self._usage_interval(ws):
            self.info = await calibrate(self.client, self.org)
            new_events += await self._usage_and_hooks(ws, ws_updates, now, first_start)
            ws_updates[prefix + "usage_at"] = now
            ws_updates[prefix + "info"] = self.info.raw
        info = self.info

        rows: list[dict[str, Any]] = []
        cursors: list[dict[str, Any]] = []
        if self._inventory_due(ws, ws_updates, first_start):
            before = self.client.requests_sent
            scenarios = await self.client.list_scenarios(organization_id=self.org_id, page_size=self.scenario_page_size)
            if self.org.teams:
                scenarios = [s for s in scenarios if s.team_id in self.org.teams]
            report.scenarios = len(scenarios)
            ws_updates[prefix + "inventory"] = {"at": now, "pages": self.client.requests_sent - before, "skipped": 0}
            stored = await self._scenario_rows()
            last_cycle = org_row["updated_at"] if org_row else None
            rows, cursors, diff_events = self._diff(
                scenarios, stored, now, first_start, last_cycle, ws, ws_updates, info
            )
            new_events += diff_events
        health = await self._health_ok(now, ws, ws_updates, new_events)

        org_update = {
            "id": self.org_id,
            "name": self.org.name,
            "base_url": self.org.api_base_url,
            "plan": info.plan,
            "api_limit": info.license.api_limit if info.license else None,
            "license": info.license.raw if info.license else None,
            "updated_at": now,
        }
        if self._usage is not None:
            org_update["usage"] = self._usage

        self._name_teams(new_events)
        await self._name_hook_scenarios(new_events, rows)

        def commit(db: Database) -> int:
            n = st.record_progress(db, [e.row(now) for e in new_events], cursors, rows, health)
            st.upsert_organization(db, org_update)
            st.set_watch_state(db, ws_updates, now)
            return n

        await self._write_rows(commit, rows, cursors)
        report.events.update(e.kind for e in new_events)

        await self._analytics_signal(report, now)
        await self._notices_hint(report, now)
        await self._read_pending(report, now)

    def _inventory_due(self, ws: dict[str, Any], ws_updates: dict[str, Any], first_start: bool) -> bool:
        """List the scenarios every cycle, unless the listing would eat more than
        :data:`INVENTORY_SHARE` of the cycle's budget: then every few cycles, leaving the rest
        for log reads.

        With 10,000 scenarios on a Core plan, 11 list pages of a 30-request cycle cost
        more than they tell when every scenario runs (and moves its counters) every cycle:
        listed every other cycle (a quarter of the budget at most), the inventory took 18 % of
        the requests and 17 of 910 failures were still unread after 8 hours of drain; every
        fourth cycle (a tenth), none (bench/detect.py --regime c --drain-hours 8).
        Deactivations are then seen a few cycles later. A
        listing is never put off while the budget would sit idle: when what is pending fits
        in the cycle beside the listing, it is listed (the pace follows the listing's real
        cost, not a cheap cycle's).
        """
        key = f"org:{self.org_id}:inventory"
        last = ws.get(key)
        if first_start or not last:
            return True
        budget = budget_per_minute(self.org, self.info.license.api_limit if self.info and self.info.license else None)
        cycle_budget = max(1.0, budget * self.interval_s / 60)
        every = max(1, math.ceil(last.get("pages", 1) / (INVENTORY_SHARE * cycle_budget)))
        skipped = int(last.get("skipped", 0))
        if skipped + 1 >= every:
            return True
        if self._rows is not None:
            pending = sum(read_cost(r) for r in self._rows.values() if r.get("pending_since") is not None)
            if pending + last.get("pages", 1) <= cycle_budget:
                return True
        ws_updates[key] = {**last, "skipped": skipped + 1}
        return False

    # --- the snapshots kept in memory -------------------------------------------------

    async def _scenario_rows(self) -> dict[int, dict[str, Any]]:
        """The stored snapshot of every scenario of the organization, by id (see _rows)."""
        if self._rows is None:
            self._rows, self._cursors = await self.store.read(
                lambda db: (st.get_scenarios(db, self.org_id), st.get_cursors(db, self.org_id))
            )
            for row in self._rows.values():
                sched = row.get("scheduling")
                if isinstance(sched, dict) and sched.keys() == {"type", "interval"}:
                    row["scheduling"] = _scheduling(sched["type"], sched["interval"])
        return self._rows

    async def _write_rows(
        self, commit: Callable[[Database], T], rows: list[dict[str, Any]], cursors: list[dict[str, Any]]
    ) -> T:
        """Run ``commit`` (which writes ``rows`` and ``cursors``), then apply them to the
        snapshots in memory; a failed write drops those, to be read again."""
        try:
            result = await self.store.write(commit)
        except BaseException:
            self._rows = None
            raise
        if self._rows is not None:
            for row in rows:
                kept = self._rows.get(row["id"])
                if kept is None:
                    # The row itself, not a copy: the caller built it for this write only (a
                    # first listing's 10,000 rows were held twice at the cycle's peak).
                    self._rows[row["id"]] = row
                else:
                    kept.update(row)
            for cur in cursors:
                key = (cur["scenario_id"], cur["stream"])
                kept_cur = self._cursors.get(key)
                self._cursors[key] = cur if kept_cur is None else {**kept_cur, **cur}
        return result

    # --- Enterprise analytics ----------------------------------------------------------

    async def _analytics_signal(self, report: CycleReport, now: float) -> None:
        """Mark pending, with the signal "analytics", the scenarios whose error count of
        today rose since the last read (watcher.analytics); Enterprise organizations only,
        at most every minute and a tenth of the budget. A 401/403 turns it off for an hour
        (logged once); any other failure waits for the next read: it is only a hint."""
        lic = self.info.license if self.info else None
        if not self.polling.analytics or lic is None or not an.has_analytics(lic.raw) or now < self._analytics_off_until:
            return
        state = self._analytics
        rows = await self._scenario_rows()
        pages = len(rows) // an.PAGE_SIZE + 1
        budget = budget_per_minute(self.org, lic.api_limit)
        if now - state.read_at < max(an.ANALYTICS_INTERVAL_S, pages * 60.0 / (an.ANALYTICS_SHARE * budget)):
            return
        today = an.utc_day(now)
        rose: set[int] = set()
        try:
            if state.day is not None and state.day != today:
                # The day turned: its last minutes' errors are in yesterday's count only.
                before = await self.client.organization_analytics(self.org_id, date_from=state.day, date_to=state.day, page_size=an.PAGE_SIZE)
                rose |= state.rose(before)[0]
                state = an.ErrorCounts(today, {}, state.read_at)
            entries = await self.client.organization_analytics(self.org_id, date_from=today, date_to=today, page_size=an.PAGE_SIZE)
        except MakeApiError as exc:
            if exc.is_auth_error or exc.status in (401, 403):
                self._analytics_off_until = now + 3600.0
                self.log.warning("organization %s: analytics not readable (%s); not used for an hour", self.org.name, exc)
            else:
                self.log.info("organization %s: analytics not read: %s", self.org.name, exc)
            return
        up, counts = state.rose(entries)
        if state.day is not None:  # (a first read is the baseline)
            rose |= up
        self._analytics = an.ErrorCounts(today, counts, now)
        # (a scenario not listed yet is not marked: the next inventory sees it)
        report.analytics_rose = await self._mark_pending([sid for sid in sorted(rose) if sid in rows], "analytics", now)

    async def _notices_hint(self, report: CycleReport, now: float) -> None:
        """With ``polling.notifications``: the token owner's in-app notices newer than the
        last one seen ("Encountered error in <name> scenario"), at most every minute; the
        scenarios of this organization with that name are marked pending with the hint
        "notified". The feed is per user, names a scenario only by name, lags and misses
        some failures (make-api.md 11.1): a hint, never the record. The first read is a
        baseline; a 401/403 turns it off for an hour (logged once)."""
        if not self.polling.notifications or now < self._notices_off_until or now - self._notices_at < an.ANALYTICS_INTERVAL_S:
            return
        try:
            notices = await self.client.notifications(since_id=self._notice_id or None, limit=NOTICES_PER_READ)
        except MakeApiError as exc:
            if exc.status in (401, 403):
                self._notices_off_until = now + 3600.0
                self.log.warning("organization %s: in-app notifications not readable (%s); not used for an hour", self.org.name, exc)
            else:
                self.log.info("organization %s: in-app notifications not read: %s", self.org.name, exc)
            return
        first, self._notices_at = self._notice_id is None, now
        if notices:
            self._notice_id = notices[-1].id
        elif first:
            self._notice_id = ""  # an empty feed is a baseline too
        if first:
            return
        names = {n.scenario_name for n in notices if n.scenario_name}
        if not names:
            return
        rows = await self._scenario_rows()
        report.notified = await self._mark_pending([sid for sid, row in sorted(rows.items()) if row.get("name") in names], "notified", now)

    async def _mark_pending(self, ids: list[int], signal: str, now: float) -> int:
        """Mark the scenarios ``ids`` pending with ``signal`` among their reasons (a signal
        that came from outside the inventory: analytics, a notification); returns how many."""
        rows = await self._scenario_rows()
        marks = []
        for sid in ids:
            row = rows[sid]
            old = (row.get("pending_reason") or "").split(",") if row.get("pending_since") else []
            reason = ",".join(sorted({r for r in [*old, signal] if r}))
            marks.append({"id": sid, "pending_since": row.get("pending_since") or now, "pending_reason": reason})
        if marks:
            await self._write_rows(lambda db: st.upsert_scenarios(db, marks), marks, [])
        return len(marks)

    # --- usage, quota, hooks ------------------------------------------------------------

    def _restore_info(self, raw: Any) -> None:
        """The organization as last read (stored with the cycle), so that a new process
        (``makewatch once`` from cron) keeps to ``usage_interval_s`` instead of re-reading
        the organization, its usage and its hooks at every start."""
        if not isinstance(raw, dict):
            return
        try:
            info = Organization.parse(raw)
        except Exception:  # a stored copy that no longer parses: read it again
            self.log.debug("organization %s: stored organization unreadable; reading it", self.org.name)
            return
        api_limit = info.license.api_limit if info.license else None
        self.client.limiter.set_limit(budget_per_minute(self.org, api_limit))
        self.info = info

    def _usage_interval(self, ws: dict[str, Any]) -> float:
        """How long between reads of the organization, usage and hooks (see USAGE_SHARE)."""
        hi = self.polling.usage_interval_s
        teams = self.org.teams or (self.info.team_ids if self.info else ())
        cost = 2 + len(teams)
        budget = max(1, self.client.limiter.per_window)
        near = bool(ws.get(f"org:{self.org_id}:usage_near"))
        share, floor = (NEAR_USAGE_SHARE, NEAR_INTERVAL_S) if near else (USAGE_SHARE, USAGE_MIN_INTERVAL_S)
        return min(hi, max(floor, cost * 60.0 / (share * budget)))

    async def _usage_and_hooks(
        self, ws: dict[str, Any], ws_updates: dict[str, Any], now: float, first_start: bool
    ) -> list[ev.Event]:
        assert self.info is not None
        out: list[ev.Event] = []
        prefix = f"org:{self.org_id}:"
        try:
            usage = await self.client.organization_usage(self.org_id)
        except MakeApiError as exc:
            if exc.retryable:
                raise
            self.log.warning("organization %s: usage not readable: %s", self.org.name, exc)
            usage = []
            if exc.status in (401, 403):
                out.append(self._scope_missing("organizations:read", exc, now))
        self._usage = usage_summary(self.info, usage, now)
        before = ws.get(prefix + "quota", {})
        quota, reported = quota_event(
            self.org, self.info, usage, self.polling.quota_thresholds, before, now, standing=first_start
        )
        ws_updates[prefix + "quota"] = reported
        used_pct = self._usage.get("used_pct")
        near = used_pct is not None and any(
            t > reported.get("level", 0) and used_pct >= t - NEAR_QUOTA_POINTS
            for t in self.polling.quota_thresholds
        )
        if before.get("level") and before.get("period") != reported.get("period"):
            # A new billing period: the quota alert of the last one is over.
            out.append(
                ev.Event(
                    "quota",
                    f"quota:{self.org_id}:{before.get('period')}:reset",
                    self.org_id,
                    now,
                    {"organization": self.org.name, "recovered": True, "previous_level_pct": before["level"]},
                    severity="info",
                )
            )
        if quota:
            out.append(quota)

        if self.info.is_paused != bool(ws.get(prefix + "paused", {}).get("paused", False)):
            seq = int(ws.get(prefix + "paused", {}).get("seq", 0)) + 1
            ws_updates[prefix + "paused"] = {"paused": self.info.is_paused, "seq": seq}
            kind = "scenario_paused" if self.info.is_paused else "scenario_unpaused"
            payload = {
                "organization": self.org.name,
                "scope": "organization",
                "standing": first_start,
                "reason": "operations or credits exhausted, or a subscription problem",
            }
            out.append(ev.Event(kind, f"{kind}:{self.org_id}:org:{seq}", self.org_id, now, payload))

        teams = self.org.teams or self.info.team_ids
        # The counters of the scenarios behind the hooks, as last listed (no call to Make).
        ops = {sid: r.get("operations") for sid, r in (await self._scenario_rows()).items()}
        for team_id in teams:
            try:
                hooks = await self.client.list_hooks(team_id)
            except MakeApiError as exc:
                if exc.retryable:
                    raise
                self.log.warning("organization %s: hooks of team %s not readable: %s", self.org.name, team_id, exc)
                if exc.status in (401, 403):
                    out.append(self._scope_missing("hooks:read", exc, now))
                    break
                continue
            for hook in hooks:
                event = self._hook_backlog(hook, ws, ws_updates, now, ops.get(hook.scenario_id) if hook.scenario_id else None)
                if event:
                    out.append(event)
                ratio = hook.queue_ratio
                if ratio is not None and ratio >= NEAR_HOOK_SHARE * self.polling.hook_backlog_ratio:
                    near = True
        ws_updates[prefix + "usage_near"] = near
        out += self._org_volume(usage, ws, ws_updates, now)
        return out

    def _org_volume(self, usage: list[UsageDay], ws: dict[str, Any], ws_updates: dict[str, Any], now: float) -> list[ev.Event]:
        """The organization's last complete day of operations against the same weekday of
        the previous weeks, from the usage just read (watcher.silent.volume_step)."""
        key = f"org:{self.org_id}:volume"
        state = silent.DailyOps.from_json(ws.get(key))
        day = silent.last_complete_day_everywhere(now)
        days = silent.usage_days(usage, day)
        values = self.polling.silent.effective({"org_id": self.org_id, "org": self.org.name})
        assert self.info is not None
        # A paused organization's drop is its scenario_paused alert, not a second one.
        values["volume"] = values["volume"] and not self.info.is_paused
        vol = silent.volume_step(state, days, day, silent.VolumeRule.from_settings(values))
        ws_updates[key] = {"judged": state.judged, "open_day": state.open_day}
        if not (vol.fire or vol.resolved) or not vol.episode_day:
            return []
        facts = ev.volume_facts(vol.verdict, day, days) if vol.verdict else {}
        return [ev.org_volume_event(self.org_id, self.org.name, self.ui, vol.episode_day, now, facts, resolved=vol.resolved)]

    async def _name_hook_scenarios(self, events: list[ev.Event], rows: list[dict[str, Any]]) -> None:
        """Name the scenario behind each backlogged hook, from the inventory just listed or
        the stored one (no extra call to Make)."""
        wanted = {e.scenario_id for e in events if e.kind == "hook_backlog" and e.scenario_id}
        if not wanted:
            return
        names = await self.store.read(lambda db: st.scenario_names(db, wanted))
        names.update({r["id"]: r["name"] for r in rows if r.get("id") in wanted and r.get("name")})
        for e in events:
            if e.kind == "hook_backlog" and names.get(e.scenario_id):
                e.payload.setdefault("scenario_name", names[e.scenario_id])

    def _name_teams(self, events: list[ev.Event]) -> list[ev.Event]:
        """Add the team's name to events (Make's organization lists its teams' names)."""
        teams = (self.info.raw.get("teams") if self.info else None) or []
        names = {t.get("id"): t.get("name") for t in teams if isinstance(t, dict)}
        for e in events:
            if e.team_id is not None and names.get(e.team_id):
                e.payload.setdefault("team_name", str(names[e.team_id]))
        return events

    def _scope_missing(self, scope: str, exc: MakeApiError, now: float) -> ev.Event:
        """A read the token is not allowed to make: reported once per scope (by its key)."""
        payload = {
            "organization": self.org.name,
            "problem": "scope_missing",
            "scope": scope,
            "error": str(exc),
            "status": exc.status,
        }
        return ev.Event("watcher_health", f"watcher_health:{self.org_id}:scope_missing:{scope}", self.org_id, now, payload)

    def _hook_backlog(
        self, hook: Hook, ws: dict[str, Any], ws_updates: dict[str, Any], now: float, scenario_ops: Any = None
    ) -> ev.Event | None:
        """One event per backlog episode: over the ratio, then back under 90 % of it.

        Earlier: a queue that rose at HOOK_RISING_READS reads in a row while the scenario
        behind it did not run (its operations counter, ``scenario_ops``, did not move) is a
        stuck consumer; that episode ends when the queue goes down.
        """
        key = f"org:{self.org_id}:hook:{hook.id}"
        state = ws.get(key, {"over": False, "episode": 0})
        ratio = hook.queue_ratio
        threshold = self.polling.hook_backlog_ratio
        if ratio is None:
            return None
        count, last = hook.queue_count, state.get("last")
        rises = int(state.get("rises", 0))
        if last is not None and count > last:
            rises += 1
            if rises == 1:
                state = {**state, "ops": scenario_ops}
        elif last is not None and count < last:
            rises = 0
        state = {**state, "last": count, "rises": rises}
        ws_updates[key] = state
        if ratio >= threshold and not state["over"]:
            state = {**state, "over": True, "early": False, "episode": state["episode"] + 1}
            ws_updates[key] = state
            return ev.hook_event(self.org_id, self.org.name, hook, now, str(state["episode"]), threshold, ui=self.ui)
        if ratio < threshold * 0.9 and state["over"]:
            ws_updates[key] = {**state, "over": False}
            episode = f"{state['episode']}:cleared"
            return ev.hook_event(self.org_id, self.org.name, hook, now, episode, threshold, cleared=True, ui=self.ui)
        if state.get("early") and not state["over"] and rises == 0 and last is not None and count < last:
            ws_updates[key] = {**state, "early": False}
            episode = f"{state['episode']}:cleared"
            return ev.hook_event(self.org_id, self.org.name, hook, now, episode, threshold, cleared=True, ui=self.ui)
        stuck = hook.scenario_id is not None and scenario_ops is not None and scenario_ops == state.get("ops")
        if rises >= HOOK_RISING_READS and stuck and not state["over"] and not state.get("early"):
            state = {**state, "early": True, "episode": state["episode"] + 1}
            ws_updates[key] = state
            return ev.hook_event(self.org_id, self.org.name, hook, now, str(state["episode"]), threshold, ui=self.ui, rising=True)
        return None

    # --- inventory diff -------------------------------------------------------------------

    def _diff(
        self,
        scenarios: list[Scenario],
        stored: dict[int, dict[str, Any]],
        now: float,
        first_start: bool,
        last_cycle: float | None,
        ws: dict[str, Any],
        ws_updates: dict[str, Any],
        info: Organization,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[ev.Event]]:
        rows: list[dict[str, Any]] = []
        cursors: list[dict[str, Any]] = []
        out: list[ev.Event] = []
        org_name = self.org.name
        backfill_s = self.polling.backfill_s if first_start else 0.0
        # The listing before this one (every stored snapshot was taken by it or earlier).
        listed_before = (ws.get(f"org:{self.org_id}:inventory") or {}).get("at")
        for sc in scenarios:
            prev = stored.get(sc.id)
            row = _snapshot_row(sc, self.org_id, now)
            if prev is None:
                # First sight. On first start the past is the baseline (or `backfill` of it);
                # a scenario created since the last cycle has only new runs.
                since = (now - BASELINE_SKEW_S - backfill_s) if first_start else (last_cycle or now) - BASELINE_SKEW_S
                row |= {"first_seen_at": now, "last_checked_at": now, "state_seq": 0, "runs_seen": 0, "errors_seen": 0, "error_score": 0.0}
                if not first_start or backfill_s > 0:
                    row |= {"pending_since": now, "pending_reason": "new"}
                # The baseline is also a floor: no later re-read turns what came before into events.
                floor = {"last_ts_ms": int(since * 1000), "floor_ms": int(since * 1000), "updated_at": now}
                cursors.append({"scenario_id": sc.id, "stream": "logs", **floor})
                cursors.append({"scenario_id": sc.id, "stream": "dlqs", **floor})
                seq = 0
                if sc.is_invalid and not sc.is_active:
                    seq += 1
                    out.append(ev.state_event("scenario_deactivated", self.org_id, org_name, self.ui, sc, now, standing=first_start, seq=seq))
                if sc.is_paused and not info.is_paused:
                    seq += 1
                    out.append(ev.state_event("scenario_paused", self.org_id, org_name, self.ui, sc, now, standing=first_start, seq=seq))
                if sc.dlq_count > 0 and first_start:
                    out.append(ev.dlq_backlog_event(self.org_id, org_name, self.ui, sc, now, []))
                row["state_seq"] = seq
                self._silent(None, sc, row, now, info, out, listed_before)
                rows.append(row)
                continue

            seq = int(prev.get("state_seq") or 0)
            was_active, was_paused = bool(prev.get("is_active")), bool(prev.get("is_paused"))
            transitions = []
            if was_active and not sc.is_active and sc.is_invalid:
                transitions.append("scenario_deactivated")
            elif not was_active and sc.is_active:
                transitions.append("scenario_reactivated")
            if not was_paused and sc.is_paused and not info.is_paused:
                transitions.append("scenario_paused")
            elif was_paused and not sc.is_paused and not info.is_paused:
                transitions.append("scenario_unpaused")
            deactivated: list[str] = []
            for kind in transitions:
                seq += 1
                if kind == "scenario_deactivated":
                    # Said with its cause: the event comes from the read of its last runs, at
                    # once (see _read_scenario); the pending mark carries it over a crash.
                    deactivated.append(f"{DEACTIVATED}{seq}")
                    continue
                out.append(ev.state_event(kind, self.org_id, org_name, self.ui, sc, now, standing=False, seq=seq))
            if sc.dlq_count == 0 and (prev.get("dlq_count") or 0) > 0:
                seq += 1
                out.append(
                    ev.Event(
                        "incomplete_executions",
                        f"incomplete_executions:{self.org_id}:{sc.id}:cleared:{seq}",
                        self.org_id,
                        now,
                        {"organization": org_name, "scenario_name": sc.name, "dlq_count": 0, "cleared": True},
                        severity="info",
                        team_id=sc.team_id,
                        scenario_id=sc.id,
                    )
                )
            row["state_seq"] = seq
            reasons = _moved(prev, sc)
            step = sc.operations - int(prev.get("operations") or 0)
            if step > 0:
                # A step no usual run makes hints at a failed run (watcher.steps).
                profile = StepProfile.from_json(prev.get("steps"))
                hint = profile.observe(step, None if listed_before is None else now - listed_before, sc.interval_s)
                if hint:
                    reasons.append(hint)
                    if not prev.get("hint_step"):
                        row["hint_step"] = step
                row["steps"] = profile.to_json()
            reasons += deactivated
            if reasons:
                old = (prev.get("pending_reason") or "").split(",") if prev.get("pending_since") else []
                if "dlq" in reasons and sc.dlq_count < (prev.get("dlq_count") or 0):
                    reasons.remove("dlq")  # fewer DLQs: nothing new to read there
                    reasons.append("logs")
                merged = sorted({r for r in old + reasons if r})
                row |= {"pending_since": prev.get("pending_since") or now, "pending_reason": ",".join(merged)}
            self._silent(prev, sc, row, now, info, out, listed_before)
            # Only what changed is written: most of a big inventory did not move.
            changed = {k: v for k, v in row.items() if k != "updated_at" and prev.get(k) != v}
            if changed:
                rows.append({"id": sc.id, **changed, "updated_at": now})
        return rows, cursors, out

    def _labels(self, sc: Scenario) -> dict[str, Any]:
        """What ``[[polling.silent.rules]]`` match a scenario on."""
        return {"org_id": self.org_id, "org": self.org.name, "team_id": sc.team_id, "scenario_id": sc.id, "scenario": sc.name}

    def _silent_rules(self, sc: Scenario) -> SilentRules:
        """The silent checks' settings of ``sc`` (``[polling.silent]`` and its rules), kept
        per scenario while its team and name stay the same: matching every rule and parsing
        business hours for each of 10,000 scenarios at every listing was a third of a
        cycle's CPU. Scenarios that match the same rules share one copy: a copy per scenario
        was 12 MB of a 10,000-scenario organization's memory (issue 16)."""
        key = (sc.team_id, sc.name)
        hit = self._rule_cache.get(sc.id)
        if hit is None or hit[0] != key:
            labels = self._labels(sc)
            rules = self.polling.silent.rules
            matched = tuple(i for i, r in enumerate(rules) if scope_matches(r.org, r.team_id, r.scenario, labels))
            shared = self._rule_sets.get(matched)
            if shared is None:
                values = self.polling.silent.effective(labels)
                shared = self._rule_sets[matched] = (values, silent.OverdueRule.from_settings(values), silent.IdleRule.from_settings(values))
            hit = self._rule_cache[sc.id] = (key, shared)
        return hit[1]

    def _silent(
        self,
        prev: dict[str, Any] | None,
        sc: Scenario,
        row: dict[str, Any],
        now: float,
        info: Organization,
        out: list[ev.Event],
        listed_before: float | None = None,
    ) -> None:
        """The silent-failure checks of one listed scenario (watcher.silent): their state
        goes into the snapshot ``row``, their events into ``out``; no call to Make.
        ``listed_before``: when the organization was listed before (a snapshot's
        ``updated_at`` is when it last changed)."""
        values, overdue_rule, rule = self._silent_rules(sc)
        step = silent.overdue_step(prev, sc, now, org_paused=info.is_paused, rule=overdue_rule)
        row |= {"due_at": step.due_at, "overdue_at": step.overdue_at}
        if step.fire:
            assert step.overdue_at is not None
            out.append(ev.overdue_event(self.org_id, self.org.name, self.ui, sc, step, step.overdue_at, now, standing=prev is None))
        elif step.resolved and prev is not None:
            out.append(ev.overdue_event(self.org_id, self.org.name, self.ui, sc, step, float(prev["overdue_at"]), now, standing=False))

        idle = silent.idle_step(prev, sc, now, org_paused=info.is_paused, rule=rule, listed_before=listed_before)
        if idle.activity is not None:
            row["activity"] = idle.activity.to_json()
        if idle.fire:
            facts = {
                "last_run_at": idle.activity.last_run_at if idle.activity else None,
                "silent_s": round(idle.silent_s),
                "expected_runs": round(idle.expected, 1),
                "basis": idle.reason,
                "expect_every_s": rule.expect_every_s,
                "business_hours": values.get("business_hours"),
                "hook_id": sc.hook_id,
            }
            out.append(ev.silent_event("scenario_idle", self.org_id, self.org.name, self.ui, sc, idle.episode_at, now, facts))
        elif idle.resolved:
            out.append(ev.silent_event("scenario_idle", self.org_id, self.org.name, self.ui, sc, idle.episode_at, now, {"hook_id": sc.hook_id}, resolved=idle.resolved))

        daily = silent.DailyOps.from_json((prev or {}).get("volume"))
        gap = now - float(listed_before or now) if prev else 0.0
        if daily.observe(now, sc.operations, gap):
            # Switched off, paused, or in a paused organization: its volume says nothing new
            # (the state's own alert does), and an open anomaly ends.
            watched = sc.is_active and not sc.is_paused and not info.is_paused
            vrule = silent.VolumeRule.from_settings({**values, "volume": values["volume"] and watched})
            vol = silent.volume_step(daily, daily.complete(), silent.utc_day(now - 86400.0), vrule)
            row["volume"] = daily.to_json()
            if (vol.fire or vol.resolved) and vol.episode_day:
                facts = ev.volume_facts(vol.verdict, vol.day or vol.episode_day, daily.ops) if vol.verdict else {}
                facts["scope"] = "scenario"
                at = datetime.fromisoformat(vol.episode_day).replace(tzinfo=UTC).timestamp()
                out.append(ev.silent_event("volume_anomaly", self.org_id, self.org.name, self.ui, sc, at, now, facts, resolved="normal" if vol.resolved else None))

    # --- pending reads ------------------------------------------------------------------

    async def _read_pending(self, report: CycleReport, now: float) -> None:
        all_rows = await self._scenario_rows()
        cursors = self._cursors
        pending = [r for r in all_rows.values() if r.get("pending_since") is not None]
        pending_ids = {r["id"] for r in pending}
        sweep = sorted(
            (
                r
                for r in all_rows.values()
                if r["id"] not in pending_ids
                and r.get("is_active")
                and now - (r.get("last_checked_at") or 0) >= self.polling.sweep_interval_s
            ),
            key=lambda r: (r.get("last_checked_at") or 0, r["id"]),
        )
        budget = budget_per_minute(self.org, self.info.license.api_limit if self.info and self.info.license else None)
        cycle_budget = max(1, int(budget * self.interval_s / 60))
        # This cycle's share of the budget. The limiter's window (60 s + a 1 s margin) may still
        # hold the previous cycle's requests: those slots free up within a second, so the reads
        # wait briefly there rather than being given up (which would halve the real budget).
        allowance = cycle_budget - (self.client.requests_sent - self._cycle_start_requests)
        active = sum(1 for r in all_rows.values() if r.get("is_active"))
        bands = choose_reads(pending, now, allowance, priority, round_robin_s(active, budget), self.interval_s)
        chosen = [row for _, row in bands]
        band_of = {row["id"]: band for band, row in bands}
        cost = sum(read_cost(r) for r in chosen)
        for row in sweep:
            if cost + 1 > allowance:
                break
            chosen.append(row)
            band_of[row["id"]] = "sweep"
            cost += 1
        report.carried_over = len(pending) - sum(1 for r in chosen if r["id"] in pending_ids)

        sem = asyncio.Semaphore(self.polling.concurrency)

        async def one(row: dict[str, Any]) -> None:
            async with sem:
                labels = [f"band:{band_of[row['id']]}", *(f"signal:{t}" for t in signals_of(row))]
                found = await self._read_scenario(row, cursors, report, now)
                report.reads.update(labels)
                if found:
                    report.hits.update(labels)
                    report.found.update({label: found for label in labels})

        results = await asyncio.gather(*(one(r) for r in chosen), return_exceptions=True)
        for r in results:
            if isinstance(r, MakeApiError) and (r.is_auth_error or r.status is None):
                raise r
            if isinstance(r, BaseException) and not isinstance(r, MakeApiError):
                raise r

    async def _read_scenario(
        self,
        row: dict[str, Any],
        cursors: dict[tuple[int, str], dict[str, Any]],
        report: CycleReport,
        now: float,
    ) -> int:
        """Read one pending scenario's logs (and DLQs); returns how many new failures."""
        sid = row["id"]
        sc = _scenario_from_row(row)
        reason = row.get("pending_reason") or ""
        cur = cursors.get((sid, "logs")) or {"last_ts_ms": int((now - BASELINE_SKEW_S) * 1000)}
        try:
            # Re-read a little before the cursor: a long run may be listed after a shorter one
            # that started later (the imtId carries a time, not an arrival order). Entries
            # already recorded are dropped by their unique event keys.
            overlap_ms = int(LOG_OVERLAP_S * 1000) if cur.get("last_imt_id") else 0
            floor_ms = int(cur.get("floor_ms") or 0)
            entries = await self.client.list_scenario_logs(
                sid, since_ms=max(floor_ms, int(cur.get("last_ts_ms") or 0) - overlap_ms)
            )
            # Before the baseline is history (backfill = "none"), should Make ignore `from`.
            entries = [e for e in entries if e.timestamp_ms >= floor_ms]
            report.logs_read += 1
            dlqs = []
            dcur = cursors.get((sid, "dlqs")) or {"last_ts_ms": int((now - BASELINE_SKEW_S) * 1000)}
            scope_events: list[ev.Event] = []
            if "dlq" in reason:
                try:
                    dlqs = await self.client.list_dlqs(sid)
                    report.dlqs_read += 1
                except MakeApiError as exc:
                    if exc.status not in (401, 403):
                        raise
                    scope_events.append(self._scope_missing("dlqs:read", exc, now))
        except MakeApiError as exc:
            if exc.status == 404:
                # The scenario was deleted between the inventory and this read.
                self.log.info("organization %s: scenario %s is gone (404); dropping its pending read", self.org.name, sid, extra={"scenario": sid})
                gone = {"id": sid, "pending_since": None, "pending_reason": None}
                await self._write_rows(lambda db: st.upsert_scenarios(db, [gone]), [gone], [])
                return 0
            self.log.warning("organization %s: scenario %s not read: %s", self.org.name, sid, exc, extra={"scenario": sid})
            raise

        events: list[ev.Event] = list(scope_events)
        status = row.get("last_run_status")
        last_error_at = row.get("last_error_at")
        errors = 0
        cursor_key = imt_sort_key(cur["last_imt_id"]) if cur.get("last_imt_id") else None
        for entry in entries:
            if cursor_key is not None and imt_sort_key(entry.imt_id) <= cursor_key:
                # In the overlap: only a failure that was not listed at the last read is new.
                e = ev.execution_event(self.org_id, self.org.name, self.ui, sc, entry)
                if e and (e.kind == "execution_error" or self.polling.warnings):
                    events.append(e)
                continue
            if entry.looks_like_check_run:
                # Should Make list check runs after all (its docs and practice disagree on
                # showCheckRuns), an empty poll is not a recovery: it did no work.
                continue
            if entry.status == 1 and (status == 3 or (status == 2 and self.polling.warnings)):
                events.append(ev.recovered_event(self.org_id, self.org.name, self.ui, sc, entry))
            e = ev.execution_event(self.org_id, self.org.name, self.ui, sc, entry)
            if e and (e.kind == "execution_error" or self.polling.warnings):
                events.append(e)
            if entry.status == 3:
                errors += 1
                last_error_at = entry.timestamp.timestamp()
            if entry.status in (1, 3) or (entry.status == 2 and status != 3):
                status = entry.status  # a warning after an error does not end the failure
        for token in reason.split(","):
            if token.startswith(DEACTIVATED):
                events.append(self._deactivation(sc, row, entries, int(token.removeprefix(DEACTIVATED)), now))
        new_cursors = []
        if entries and (cursor_key is None or imt_sort_key(entries[-1].imt_id) > cursor_key):
            last = entries[-1]
            new_cursors.append(
                {"scenario_id": sid, "stream": "logs", "last_imt_id": last.imt_id, "last_ts_ms": last.timestamp_ms, "updated_at": now}
            )
        if dlqs:
            floor_ms = int(dcur.get("last_ts_ms") or 0)
            fresh = [d for d in dlqs if d.created and d.created.timestamp() * 1000 > floor_ms and not d.resolved]
            live_sc = Scenario.parse({**sc.raw, "dlqCount": row.get("dlq_count") or 0})
            events += [ev.dlq_event(self.org_id, self.org.name, self.ui, live_sc, d) for d in fresh]
            newest = max((int(d.created.timestamp() * 1000) for d in dlqs if d.created), default=floor_ms)
            new_cursors.append({"scenario_id": sid, "stream": "dlqs", "last_ts_ms": max(newest, floor_ms), "updated_at": now})
        score = float(row.get("error_score") or 0.0) * 0.5 + errors
        new_runs = sum(1 for e in entries if cursor_key is None or imt_sort_key(e.imt_id) > cursor_key)
        update = {
            "runs_seen": int(row.get("runs_seen") or 0) + new_runs,
            "errors_seen": int(row.get("errors_seen") or 0) + errors,
            "id": sid,
            "pending_since": None,
            "pending_reason": None,
            "last_checked_at": now,
            "last_run_status": status,
            "last_error_at": last_error_at,
            "error_score": score,
        }
        if row.get("hint_step"):
            update["hint_step"] = None
            if errors == 0:
                # A false hint: that step is one of this scenario's usual runs after all.
                profile = StepProfile.from_json(row.get("steps"))
                profile.learn(int(row["hint_step"]))
                update["steps"] = profile.to_json()
        self._name_teams(events)

        def commit(db: Database) -> list[ev.Event]:
            new = st.new_event_keys(db, [e.key for e in events])
            fresh = [e for e in events if e.key in new]
            st.record_progress(db, [e.row(now) for e in fresh], new_cursors, [update])
            return fresh

        written = await self._write_rows(commit, [update], new_cursors)
        report.events.update(e.kind for e in written)
        return sum(1 for e in written if e.kind == "execution_error")

    def _deactivation(
        self, sc: Scenario, row: dict[str, Any], entries: list[Any], seq: int, now: float
    ) -> ev.Event:
        """Make switched ``sc`` off: the event names the errors that made it do so (the last
        failed runs of this read, the overlap before the cursor included)."""
        event = ev.state_event("scenario_deactivated", self.org_id, self.org.name, self.ui, sc, now, standing=False, seq=seq)
        errors = [e for e in entries if e.status == 3][-DEACTIVATION_ERRORS:]
        team_id = sc.team_id
        event.payload["errors"] = [
            {
                "error_name": e.error_name,
                "error_message": e.error_message,
                "timestamp": e.timestamp.isoformat(),
                "execution_id": e.id,
                "run_url": ev.run_link(self.ui, team_id, sc.id, e.id),
            }
            for e in errors
        ]
        if errors:
            last = errors[-1]
            event.payload.update(
                {"error_name": last.error_name, "error_message": last.error_message, "run_url": event.payload["errors"][-1]["run_url"]}
            )
        event.payload["dlq_count"] = row.get("dlq_count") or 0
        return event

    # --- health -------------------------------------------------------------------------

    async def _health_ok(
        self, now: float, ws: dict[str, Any], ws_updates: dict[str, Any], out: list[ev.Event]
    ) -> list[dict[str, Any]]:
        prefix = f"org:{self.org_id}:"
        health = ws.get(prefix + "health", {"failures": 0, "reported": False, "seq": 0})
        if health.get("reported"):
            seq = health["seq"]
            out.append(
                ev.Event(
                    "watcher_health",
                    f"watcher_health:{self.org_id}:recovered:{seq}",
                    self.org_id,
                    now,
                    {"organization": self.org.name, "problem": health.get("problem"), "recovered": True},
                    severity="info",
                )
            )
        ws_updates[prefix + "health"] = {"failures": 0, "reported": False, "seq": health.get("seq", 0)}
        return [{"org_id": self.org_id, "consecutive_failures": 0, "last_ok_at": now, "unreachable_reported": 0}]

    async def _rate_limit_health(self, report: CycleReport) -> None:
        """Make kept answering 429 for longer than its 60 s window explains: say so once, and
        say when it is over (the pause itself is bounded in the client)."""
        now = self.clock.time()
        key = f"org:{self.org_id}:rate_limited"
        since = self.client.rate_limited_since
        long = since is not None and now - since >= RATE_LIMITED_HEALTH_S
        try:
            state = (await self.store.read(lambda db: st.get_watch_state(db, key))).get(key) or {}
        except Exception:
            self.log.exception("organization %s: could not read rate-limit state", self.org.name)
            return
        reported, seq = bool(state.get("reported")), int(state.get("seq", 0))
        if long == reported or (not long and since is not None):
            return  # nothing new (still limited but already told, or not yet long enough)
        payload: dict[str, Any] = {"organization": self.org.name, "problem": "rate_limited"}
        if long:
            seq += 1
            payload |= {"since": since, "error": f"Make has answered 429 for {now - since:.0f} s"}
            event = ev.Event("watcher_health", f"watcher_health:{self.org_id}:rate_limited:{seq}", self.org_id, now, payload)
        else:
            payload["recovered"] = True
            event = ev.Event("watcher_health", f"watcher_health:{self.org_id}:rate_limited:{seq}:ok", self.org_id, now, payload, severity="info")

        def commit(db: Database) -> None:
            st.record_progress(db, [event.row(now)], [], [])
            st.set_watch_state(db, {key: {"reported": long, "seq": seq}}, now)

        await self.store.write(commit)
        report.events[event.kind] += 1

    async def _record_failure(self, exc: MakeApiError, report: CycleReport) -> None:
        now = self.clock.time()
        prefix = f"org:{self.org_id}:"
        ws = await self.store.read(lambda db: st.get_watch_state(db, prefix + "health"))
        health = ws.get(prefix + "health", {"failures": 0, "reported": False, "seq": 0})
        failures = int(health.get("failures", 0)) + 1
        problem = None
        if exc.status == 401:
            problem = "token_rejected"
        elif exc.status == 403 and exc.code != "HTML":
            problem = "access_denied"
        elif failures >= self.polling.unreachable_after_cycles:
            problem = "unreachable"
        events = []
        reported = bool(health.get("reported"))
        seq = int(health.get("seq", 0))
        if problem and not reported:
            seq += 1
            reported = True
            events.append(
                ev.Event(
                    "watcher_health",
                    f"watcher_health:{self.org_id}:{problem}:{seq}",
                    self.org_id,
                    now,
                    {
                        "organization": self.org.name,
                        "problem": problem,
                        "failures": failures,
                        "error": str(exc),
                        "status": exc.status,
                    },
                )
            )
        new_state = {"failures": failures, "reported": reported, "seq": seq, "problem": problem or health.get("problem")}
        health_row = {
            "org_id": self.org_id,
            "consecutive_failures": failures,
            "last_error": str(exc)[:500],
            "last_error_at": now,
            "unreachable_reported": int(reported),
        }

        def commit(db: Database) -> None:
            st.record_progress(db, [e.row(now) for e in events], [], [], [health_row])
            st.set_watch_state(db, {prefix + "health": new_state}, now)

        await self.store.write(commit)
        report.events.update(e.kind for e in events)
