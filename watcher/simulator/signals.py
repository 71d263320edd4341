"""The cheap signals Make gives besides the logs, simulated with their imperfections.

A monitor should spend a logs read on a scenario only when something hints at trouble. Make
offers three hints beyond the scenario list's ``dlqCount``/``isinvalid`` (which stay exact):

- **Enterprise analytics** (``GET /analytics/{organizationId}``, make-api.md §11.2):
  executions, errors and operations per scenario over a timeframe. Here they are counted from
  this module's run ledger (every run the world materialised, check runs included), but
  *late*: a run is counted only once ``analytics_lag_s`` has passed since it (default 5 min;
  a guess: Make's aggregation delay is undocumented), and, with ``analytics_whole_days``
  (the default), a timeframe covers whole UTC days, however precise its bounds (a guess:
  the docs speak of dates and the dashboard of days).
- **The in-app notification feed** (``GET /notifications``, §11.1): one
  "Encountered error in <name> scenario" notice per failed run, except that
  ``notification_missing_share`` of them (default 20 %) never appear, each appears
  ``notification_lag_min_s``..``notification_lag_max_s`` after its run (default 30-120 s,
  uniform), and a scenario gets at most one notice per ``notification_period_s`` (default
  300 s: Make e-mails the first error at once and the next ones as a 5-minute digest (§8); we
  guess the feed behaves alike). The period is Make's decision, the loss comes after it: a
  notice that went missing still silences its scenario for the period. The subject names the
  scenario by name only, as it was at the time of the run; two scenarios may share one.
  Notification ids are assigned in order of appearance, so they grow with ``created``.
- **Operations per run**: with ``ops_spread`` > 0 a full run's operations vary per run (a
  mean-one log-normal factor of standard deviation ``ops_spread`` on ``operations_per_run``,
  as the number of bundles varies), and ``late_failure_share`` of failed runs fail at their
  last module, so they consume a full run's operations and the counter's step looks normal.
  Both default to 0, which keeps every existing seed's runs as they were; a scenario's own
  value (``Scenario.ops_spread``/``late_failure_share``, None by default) overrides the knob.

Everything here is synchronous, free of I/O and deterministic: each decision about a failed
run uses its own random stream (seed, scenario id, execution id), each operation count the
stream of its run (seed, scenario id, run index). HTTP lives in
:mod:`watcher.simulator.signal_routes`.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from watcher.simulator.world import LogRow, Organization, Scenario, World

_DAY_S = 86_400
# Analytics data are kept a year (make-api.md §11.2); runs older than this (and a day) go.
RUN_RETENTION_S = 367 * _DAY_S
# How long notices stay in the feed: undocumented; 30 days (guess).
NOTICE_RETENTION_S = 30 * _DAY_S
# The first notification id: ids are BigInt strings on Make (§11.1); any start will do.
FIRST_NOTICE_ID = 41_000_000

NOTICE_FATES = ("shown", "missing", "throttled")


@dataclass
class SignalKnobs:
    """Imperfection knobs of the signals (see the module docstring). Times in seconds."""

    analytics_lag_s: float = 300.0
    analytics_whole_days: bool = True
    # How errorRate is written: "percent" (12.5) or "fraction" (0.125); Make's unit is unknown.
    analytics_error_rate_unit: str = "percent"
    # Organizations with analytics access besides the Enterprise ones.
    analytics_org_ids: list[int] = field(default_factory=list)
    notification_missing_share: float = 0.2
    notification_lag_min_s: float = 30.0
    notification_lag_max_s: float = 120.0
    notification_period_s: float = 300.0
    ops_spread: float = 0.0
    late_failure_share: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    def update(self, data: dict[str, Any]) -> None:
        """Apply a partial update (``{"reset": true}`` first restores the defaults); raise
        ValueError on an unknown knob or a value out of range, changing nothing then."""
        if not isinstance(data, dict):
            raise ValueError("expected an object of knobs")
        new = SignalKnobs() if data.get("reset") else SignalKnobs(**self.to_json())
        names = {f.name for f in fields(self)}
        for key, value in data.items():
            if key == "reset":
                continue
            if key not in names:
                raise ValueError(f"unknown signal knob {key!r}")
            setattr(new, key, _checked(key, value))
        if new.notification_lag_min_s > new.notification_lag_max_s:
            raise ValueError("notification_lag_min_s must not exceed notification_lag_max_s")
        for f in fields(self):
            setattr(self, f.name, getattr(new, f.name))


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


_SHARES = ("notification_missing_share", "late_failure_share")


def _checked(key: str, value: Any) -> Any:
    if key == "analytics_whole_days":
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        return value
    if key == "analytics_error_rate_unit":
        if value not in ("percent", "fraction"):
            raise ValueError(f"{key} must be 'percent' or 'fraction'")
        return value
    if key == "analytics_org_ids":
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ValueError(f"{key} must be a list of organization ids")
        return list(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number")
    if value < 0 or (key in _SHARES and value > 1):
        raise ValueError(f"{key} must be {'between 0 and 1' if key in _SHARES else '>= 0'}")
    return float(value)


class RunRecord(NamedTuple):
    """One run in the analytics ledger (check runs included); a tuple, as there is one per run."""

    ts_ms: int
    status: int
    operations: int
    check: bool


@dataclass
class Notice:
    """What Make decided for one failed run: a notice ``shown`` in the feed (from
    ``created_t`` on, with ``id`` set then), ``missing`` (never shown) or ``throttled``
    (its scenario had one in the last ``notification_period_s``)."""

    scenario_id: int
    org_id: int
    execution_id: str
    run_t: float
    created_t: float
    subject: str
    fate: str
    id: str | None = None
    read_t: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "scenarioId": self.scenario_id,
            "organizationId": self.org_id,
            "executionId": self.execution_id,
            "runT": self.run_t,
            "createdT": self.created_t,
            "subject": self.subject,
            "fate": self.fate,
            "id": self.id,
            "readT": self.read_t,
        }


@dataclass(frozen=True)
class AnalyticsCounts:
    executions: int
    errors: int
    operations: int


def notice_subject(scenario_name: str) -> str:
    """The docs' example subject (make-api.md §11.1)."""
    return f"Encountered error in {scenario_name} scenario"


class Signals:
    """The analytics ledger, the notification feed and the operation spread of one world."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.knobs = SignalKnobs()
        self.runs: dict[int, list[RunRecord]] = {}
        # Every decision about a failed run, in the order the runs were materialised.
        self.notices: list[Notice] = []
        # Shown notices in id order (= order of appearance), and those still to appear.
        self.feed: list[Notice] = []
        self._pending: list[tuple[float, int, Notice]] = []
        self._seq = 0
        self._next_id = FIRST_NOTICE_ID
        self._last_notice_t: dict[int, float] = {}

    # ------------------------------------------------------------ runs (called by World)

    def on_run(self, sc: Scenario, t: float, row: LogRow, check: bool) -> None:
        """Record a materialised run; decide the notice of a failed one."""
        runs = self.runs.get(sc.id)
        if runs is None:
            runs = self.runs[sc.id] = []
        ts = row.ts_ms
        rec = RunRecord(ts, row.status or 0, row.body["operations"], check)
        if not runs or runs[-1].ts_ms <= ts:
            runs.append(rec)
        else:  # an injected run in the past
            bisect.insort(runs, rec, key=lambda r: r.ts_ms)
        if runs[0].ts_ms < ts - RUN_RETENTION_S * 1000:
            cutoff = ts - RUN_RETENTION_S * 1000
            del runs[: bisect.bisect_left(runs, cutoff, key=lambda r: r.ts_ms)]
        if rec.status == 3:
            self._decide_notice(sc, t, str(row.body["id"]))

    def _decide_notice(self, sc: Scenario, t: float, execution_id: str) -> None:
        k = self.knobs
        rng = random.Random(f"{self.world.seed}:notice:{sc.id}:{execution_id}")
        missing = rng.random() < k.notification_missing_share
        created = t + rng.uniform(k.notification_lag_min_s, k.notification_lag_max_s)
        last = self._last_notice_t.get(sc.id)
        if last is not None and 0 <= t - last < k.notification_period_s:
            fate = "throttled"
        else:
            self._last_notice_t[sc.id] = t
            fate = "missing" if missing else "shown"
        notice = Notice(sc.id, sc.org_id, execution_id, t, created, notice_subject(sc.name), fate)
        self.notices.append(notice)
        if fate == "shown":
            self._seq += 1
            heapq.heappush(self._pending, (created, self._seq, notice))

    def full_operations(self, sc: Scenario, n: int) -> int:
        """Operations of a full run ``n`` of ``sc``: ``operations_per_run`` x ``volume``,
        times a per-run factor when the spread is on."""
        base = sc.operations_per_run * sc.volume
        spread = self.knobs.ops_spread if sc.ops_spread is None else sc.ops_spread
        if spread <= 0:
            return max(1, round(base))
        rng = random.Random(f"{self.world.seed}:{sc.id}:{n}:ops")
        factor = math.exp(rng.gauss(0.0, spread) - spread * spread / 2)  # mean 1
        return max(1, round(base * factor))

    def failed_operations(self, sc: Scenario, n: int, full: int, early: int) -> int:
        """Operations of failed run ``n``: ``early`` (it stopped at an earlier module), or
        ``full`` for the share that fails at the last module."""
        share = (
            self.knobs.late_failure_share
            if sc.late_failure_share is None
            else sc.late_failure_share
        )
        if share > 0 and random.Random(f"{self.world.seed}:{sc.id}:{n}:late").random() < share:
            return full
        return early

    # ------------------------------------------------------------ analytics

    def analytics_access(self, org: Organization) -> bool:
        """Enterprise plans have analytics (``license.analyticsAccess``), and the orgs named
        by ``analytics_org_ids``."""
        return org.plan == "enterprise" or org.id in self.knobs.analytics_org_ids

    def counts(self, scenario_id: int, start_ms: int, end_ms: int) -> AnalyticsCounts:
        """Runs of a scenario with ``start_ms <= ts < end_ms`` (no lag applied here)."""
        runs = self.runs.get(scenario_id, [])
        lo = bisect.bisect_left(runs, start_ms, key=lambda r: r.ts_ms)
        hi = bisect.bisect_left(runs, end_ms, key=lambda r: r.ts_ms)
        chosen = runs[lo:hi]
        return AnalyticsCounts(
            executions=len(chosen),
            errors=sum(1 for r in chosen if r.status == 3),
            operations=sum(r.operations for r in chosen),
        )

    # ------------------------------------------------------------ notifications

    def flush(self, now: float) -> None:
        """Let every notice due by ``now`` appear in the feed, numbered in that order."""
        while self._pending and self._pending[0][0] <= now:
            _, _, notice = heapq.heappop(self._pending)
            notice.id = str(self._next_id)
            self._next_id += 1
            self.feed.append(notice)
        if self.feed and self.feed[0].created_t < now - NOTICE_RETENTION_S:
            cutoff = now - NOTICE_RETENTION_S
            self.feed = [n for n in self.feed if n.created_t >= cutoff]

    def feed_for(self, org_ids: list[int], now: float) -> list[Notice]:
        """The feed a token's owner sees: notices of scenarios in the token's organizations
        (guess: the owner is a member of those and of no other), oldest first."""
        self.flush(now)
        wanted = set(org_ids)
        return [n for n in self.feed if n.org_id in wanted]

    def mark_read(self, now: float, ids: list[str] | None = None) -> int:
        """The user reads notices in Make's UI (all of them when ``ids`` is None)."""
        self.flush(now)
        wanted = None if ids is None else {str(i) for i in ids}
        done = 0
        for n in self.feed:
            if n.read_t is None and (wanted is None or n.id in wanted):
                n.read_t = now
                done += 1
        return done
