"""The simulated Make world: organizations, teams, scenarios, their runs, logs and DLQs.

Everything here is synchronous and free of I/O; :mod:`watcher.simulator.app` serves it over
HTTP. Time comes from an injected :class:`~watcher.clock.Clock`.

Determinism: the outcome of the n-th scheduled run of scenario ``sid`` depends only on
``random.Random(f"{seed}:{sid}:{n}")``, and due runs are materialised in (time, scenario id)
order, so the resulting logs and counters do not depend on when or in which order requests
arrive (runs are materialised lazily by :meth:`World.advance`, which every request calls).
"""

from __future__ import annotations

import bisect
import heapq
import random
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from watcher.clock import Clock, SystemClock
from watcher.simulator.actions import Actions
from watcher.simulator.signals import Signals

DAY_S = 86_400
# Make's "1 month" usage period; modelled as 30 days (guess: real resets follow calendar months).
PERIOD_S = 30 * DAY_S

ALL_READ_SCOPES: tuple[str, ...] = (
    "organizations:read",
    "teams:read",
    "scenarios:read",
    "dlqs:read",
    "hooks:read",
    "notifications:read",
    "user:read",
    "analytics:read",
)
#: The scopes of Make's write endpoints the simulator serves (make-api.md §11.4); no token
#: has them unless it is created with them (``World.add_token(..., scopes=...)``).
WRITE_SCOPES: tuple[str, ...] = ("scenarios:write", "scenarios:run", "dlqs:write")


@dataclass(frozen=True)
class PlanLicense:
    """The parts of ``license`` that differ per plan (apiLimit from make-api.md §6.1)."""

    service_name: str
    api_limit: int
    operations: int
    transfer: int
    retention_days: int
    interval_min: int
    execution_time_min: int
    priority: str


# apiLimit is documented (Free observed); the other numbers are plausible guesses.
PLANS: dict[str, PlanLicense] = {
    "free": PlanLicense("Free", 30, 1_000, 536_870_912, 7, 15, 5, "low"),
    "core": PlanLicense("Core", 60, 10_000, 5_368_709_120, 30, 1, 40, "medium"),
    "pro": PlanLicense("Pro", 120, 40_000, 21_474_836_480, 30, 1, 40, "medium"),
    "teams": PlanLicense("Teams", 240, 80_000, 42_949_672_960, 30, 1, 40, "high"),
    "enterprise": PlanLicense("Enterprise", 1000, 800_000, 429_496_729_600, 60, 1, 40, "high"),
}

# Make's numeric timezone ids are not documented; 168 was seen live for an EU org (guess).
TIMEZONE_IDS: dict[str, int] = {
    "Europe/Paris": 168,
    "Europe/Prague": 168,
    "Europe/London": 156,
    "Europe/Berlin": 160,
    "America/New_York": 67,
    "America/Los_Angeles": 58,
    "UTC": 113,
}

# (name, message) of realistic run errors; see make-api.md §3.2 and §8.
ERRORS: tuple[tuple[str, str], ...] = (
    ("BundleValidationError", "Validation failed for 2 parameter(s)."),
    ("BundleValidationError", "Validation failed for 1 parameter(s)."),
    ("ConnectionError", "Connection refused: the remote server did not respond (ECONNREFUSED)."),
    ("DataError", "Function 'parseDate' finished with error! '2026-13-45' is not a valid date."),
    ("RateLimitError", "[429] Too many requests, please retry later."),
    ("InvalidAccessTokenError", "The access token is invalid or has expired."),
    ("AccountValidationError", "Failed to verify connection 'My Google connection'."),
    ("ModuleTimeoutError", "The operation timed out after 40 seconds."),
)
WARNINGS: tuple[tuple[str, str], ...] = (
    (
        "ExecutionInterruptedError",
        "The execution was interrupted because it exceeded the maximum execution time.",
    ),
)
# Errors for which Make retries incomplete executions automatically (make-api.md §4.2, §8).
AUTO_RETRIED = frozenset({"ConnectionError", "ModuleTimeoutError", "RateLimitError"})

STATUS_NAMES = {0: "RUNNING", 1: "SUCCESS", 2: "WARNING", 3: "ERROR"}

SIM_USER = {"id": 8_500_001, "name": "Sim Admin", "email": "admin@example.test"}


def iso_ms(ms: int) -> str:
    """Make's timestamp form: ISO 8601 UTC with milliseconds, e.g. 2026-07-02T09:27:54.246Z."""
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def to_ms(t: float) -> int:
    return int(t * 1000)


def day_of(t: float) -> int:
    """UTC day number (days since the epoch) of epoch seconds ``t``."""
    return int(t // DAY_S)


def usage_date(day: int) -> str:
    """The live usage endpoints' date form, DD-MM-YYYY (make-api.md §5.3)."""
    return datetime.fromtimestamp(day * DAY_S, tz=UTC).strftime("%d-%m-%Y")


def _hex32(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


@dataclass
class Usage:
    """Daily consumption, keyed by UTC day number."""

    days: dict[int, list[int]] = field(default_factory=dict)

    def add(self, t: float, operations: int, transfer: int, centicredits: int) -> None:
        row = self.days.setdefault(day_of(t), [0, 0, 0])
        row[0] += operations
        row[1] += transfer
        row[2] += centicredits

    def last_30_days(self, now: float) -> list[dict[str, Any]]:
        """Days with usage among the 30 days ending today, oldest first.

        Whether Make lists zero days is unknown (make-api.md §5.3); we omit them.
        """
        today = day_of(now)
        return [
            {"date": usage_date(d), "operations": o, "dataTransfer": tr, "centicredits": cc}
            for d, (o, tr, cc) in sorted(self.days.items())
            if today - 29 <= d <= today and (o or tr or cc)
        ]


@dataclass
class Organization:
    id: int
    name: str
    plan: str
    zone: str
    timezone: str
    operations_limit: int
    created_at_ms: int
    last_reset_ms: int
    api_limit: int
    operations_used: int = 0
    centicredits_used: int = 0
    transfer_used: int = 0
    is_paused: bool = False
    team_ids: list[int] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage, repr=False)

    @property
    def license(self) -> PlanLicense:
        return PLANS[self.plan]

    @property
    def next_reset_ms(self) -> int:
        return self.last_reset_ms + PERIOD_S * 1000


@dataclass
class Team:
    id: int
    name: str
    org_id: int
    scenario_ids: list[int] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage, repr=False)


@dataclass
class Hook:
    id: int
    name: str
    team_id: int
    org_id: int
    udid: str
    queue_limit: int = 50
    queue_count: int = 0
    enabled: bool = True
    scenario_id: int | None = None


@dataclass
class DlqItem:
    id: str
    scenario_id: int
    execution_id: str
    reason: str
    created_ms: int
    size: int
    retry: bool
    index: int
    attempts: int = 0
    resolved: bool = False
    deleted: bool = False


@dataclass(slots=True)
class LogRow:
    """One stored log entry: an execution (``status`` set) or an audit row (``status`` None)."""

    imt_id: str
    ts_ms: int
    body: dict[str, Any]
    status: int | None
    check: bool = False


@dataclass
class Scenario:
    id: int
    team_id: int
    org_id: int
    name: str
    interval_s: float
    error_rate: float
    warning_rate: float
    check_run_rate: float
    operations_per_run: int
    max_errors: int
    store_incomplete: bool
    webhook: bool
    created_ms: int
    last_edit_ms: int
    used_modules: list[dict[str, str]]
    is_active: bool = True
    is_invalid: bool = False
    hook_id: int | None = None
    operations: int = 0
    centicredits: int = 0
    transfer: int = 0
    consecutive_errors: int = 0
    next_run_at: float | None = None
    run_index: int = 0
    injected: int = 0
    # Whether the last run that counts (not a check run) failed: a success after it is a
    # recovery in the ledger.
    failing: bool = False
    # Scheduling type as Make lists it for a scheduled scenario (webhooks: "immediately").
    schedule: str = "indefinitely"
    # Silent failures (set_behaviour): scheduled runs come due and do not happen (a webhook's
    # data queues up instead); a webhook's arrival rate times ``traffic`` (0: none come);
    # operations of a run times ``volume``.
    stalled: bool = False
    traffic: float = 1.0
    volume: float = 1.0
    # A weekly rhythm (busy weekday office hours, quiet nights and weekends, in UTC): a
    # webhook's arrivals follow it (see rhythm_factor).
    rhythm: bool = False
    # Spread of operations per run and share of failures at the last module (see
    # watcher.simulator.signals); None: the world's knob (world.signals.knobs), 0 by default.
    ops_spread: float | None = None
    late_failure_share: float | None = None
    logs: list[LogRow] = field(default_factory=list, repr=False)
    executions: dict[str, LogRow] = field(default_factory=dict, repr=False)
    dlqs: list[DlqItem] = field(default_factory=list, repr=False)
    usage: Usage = field(default_factory=Usage, repr=False)
    _gen: int = 0

    @property
    def dlq_count(self) -> int:
        return sum(1 for d in self.dlqs if not d.resolved and not d.deleted)

    @property
    def all_dlq_count(self) -> int:
        # Guess: allDlqCount also counts resolved items (make-api.md §2.3 "(?)").
        return sum(1 for d in self.dlqs if not d.deleted)


@dataclass
class Token:
    token: str
    org_ids: list[int]
    scopes: list[str]
    name: str
    oauth: bool = False


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the simulator saw it (admin routes are not recorded)."""

    t: float
    method: str
    path: str
    query: dict[str, Any]
    org_id: int | None
    status: int
    token_ok: bool


# The weekly rhythm (UTC): how busy each hour is, relative to a scenario's interval_s.
RHYTHM_PEAK = 2.0


def rhythm_factor(t: float) -> float:
    """Busy weekday office hours (2x), evenings (0.6x), quiet nights (0.1x) and weekends
    (0.4x by day, 0.1x at night): about 0.8x on average over a week."""
    day, hour = divmod(int(t // 3600 + 72) % 168, 24)  # 0 = Monday 00:00 UTC
    if day >= 5:
        return 0.4 if 10 <= hour < 18 else 0.1
    if 8 <= hour < 18:
        return 2.0
    if hour == 7 or 18 <= hour < 22:
        return 0.6
    return 0.1


#: ``scheduling.type`` values of scheduled scenarios the simulator can run (make-api.md §2.3).
SCHEDULE_TYPES = ("indefinitely", "daily", "weekly", "monthly", "on-demand")

LEDGER_KINDS = ("error", "deactivation", "dlq", "recovery", "reactivation")


@dataclass(frozen=True)
class LedgerEntry:
    """One piece of trouble (or its end) the world produced: the ground truth for scorers.

    ``kind``: "error" (a run with status 3, scheduled or injected), "deactivation" (Make
    switched the scenario off after ``max_errors`` consecutive errors: ``isActive`` false,
    ``isinvalid`` true), "dlq" (an incomplete execution stored), "recovery" (the first
    successful run, check runs excluded, after one or more errors), "reactivation" (a user
    started a scenario that Make had switched off). ``t`` is the run's time (epoch seconds;
    the log entry's timestamp), not the time the entry was materialised.
    """

    kind: str
    t: float
    scenario_id: int
    org_id: int
    execution_id: str | None = None
    error_name: str | None = None
    error_message: str | None = None
    dlq_id: str | None = None
    injected: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "t": self.t,
            "scenarioId": self.scenario_id,
            "organizationId": self.org_id,
            "executionId": self.execution_id,
            "errorName": self.error_name,
            "errorMessage": self.error_message,
            "dlqId": self.dlq_id,
            "injected": self.injected,
        }


@dataclass
class FaultScope:
    """Restricts a fault knob to one organization and/or paths matching a regex (re.search)."""

    org_id: int | None = None
    path_regex: str | None = None

    def matches(self, org_id: int | None, path: str) -> bool:
        if self.org_id is not None and org_id != self.org_id:
            return False
        return self.path_regex is None or re.search(self.path_regex, path) is not None


FAULT_KNOBS = (
    "error_5xx_count",
    "latency_s",
    "malformed_json_count",
    "html_error_count",
    "storm_429_count",
    "plain_text_429",
    "omit_ratelimit_headers",
    "retry_after_s",
    "check_runs_listed",
    "corrupt_entries",
)


@dataclass
class Faults:
    """Fault knobs. Counts are consumed by matching requests; flags stay until reset.

    ``org_id``/``path_regex`` scope every knob; ``scopes[knob]`` overrides that for one knob,
    e.g. ``Faults(latency_s=2, scopes={"latency_s": FaultScope(path_regex="/logs$")})``.
    """

    error_5xx_count: int = 0
    error_5xx_status: int | None = None  # None: cycle 500, 502, 503
    latency_s: float = 0.0
    malformed_json_count: int = 0
    html_error_count: int = 0
    storm_429_count: int = 0
    plain_text_429: bool = False
    omit_ratelimit_headers: bool = False
    retry_after_s: float | None = None
    # The docs' reading of showCheckRuns: check runs listed unless asked to hide them.
    check_runs_listed: bool = False
    # This many entries (the first) of every list answer lose their id ("id", "imtId"): a
    # malformed entry the client must skip and count, keeping the rest. Stays until reset.
    corrupt_entries: int = 0
    org_id: int | None = None
    path_regex: str | None = None
    scopes: dict[str, FaultScope] = field(default_factory=dict)

    def applies(self, knob: str, org_id: int | None, path: str) -> bool:
        scope = self.scopes.get(knob) or FaultScope(self.org_id, self.path_regex)
        return scope.matches(org_id, path)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in (*FAULT_KNOBS, "error_5xx_status")}
        out["org_id"] = self.org_id
        out["path_regex"] = self.path_regex
        out["scopes"] = {k: vars(s).copy() for k, s in self.scopes.items()}
        return out

    def update(self, data: dict[str, Any]) -> None:
        """Apply a partial JSON update (``{"reset": true}`` first restores the defaults)."""
        if data.get("reset"):
            self.__init__()  # type: ignore[misc]
        for key, value in data.items():
            if key == "reset":
                continue
            if key == "scopes":
                for knob, s in (value or {}).items():
                    if knob not in FAULT_KNOBS:
                        raise ValueError(f"unknown fault knob {knob!r}")
                    self.scopes[knob] = FaultScope(s.get("org_id"), s.get("path_regex"))
            elif key in (*FAULT_KNOBS, "error_5xx_status", "org_id", "path_regex"):
                setattr(self, key, value)
            else:
                raise ValueError(f"unknown fault field {key!r}")


class World:
    """An in-memory Make account tree whose scenarios run on the injected clock."""

    def __init__(self, seed: int = 1, clock: Clock | None = None) -> None:
        self.seed = seed
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.organizations: dict[int, Organization] = {}
        self.teams: dict[int, Team] = {}
        self.scenarios: dict[int, Scenario] = {}
        self.hooks: dict[int, Hook] = {}
        self.tokens: dict[str, Token] = {}
        self.tokens_by_org: dict[int, str] = {}
        self.dlqs: dict[str, DlqItem] = {}
        self.faults = Faults()
        # Analytics, notifications and the operation spread (watcher.simulator.signals).
        self.signals = Signals(self)
        # The write endpoints' effects and knobs (watcher.simulator.actions).
        self.actions = Actions(self)
        self.requests: list[RequestRecord] = []
        # Every error, deactivation, DLQ item and recovery the world produced, in the order
        # they were materialised (see LedgerEntry); never trimmed by log retention.
        self.ledger: list[LedgerEntry] = []
        # Headers of the last API request (case-insensitive), to check what a client sends.
        self.last_headers: Mapping[str, str] = {}
        self.user = dict(SIM_USER)
        self._ids = {"org": 8_240_000, "team": 2_060_000, "scenario": 6_410_000, "hook": 3_320_000}
        self._audit_id = 59_500_000
        self._heap: list[tuple[float, int, int]] = []
        self._n_tokens = 0

    # ---------------------------------------------------------------- building

    def _next_id(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def add_organization(
        self,
        name: str,
        plan: str = "core",
        zone: str = "eu1.make.com",
        timezone: str = "Europe/Paris",
        operations_limit: int | None = None,
        operations_used: int = 0,
    ) -> Organization:
        """Add an organization; ``operations_limit`` defaults to the plan's (a guess per plan)."""
        if plan not in PLANS:
            raise ValueError(f"plan must be one of {sorted(PLANS)}")
        now_ms = to_ms(self.clock.time())
        oid = self._next_id("org")
        # The usage period started some days ago (deterministic per org id).
        started = now_ms - random.Random(f"{self.seed}:period:{oid}").randint(1, 20) * DAY_S * 1000
        org = Organization(
            id=oid,
            name=name,
            plan=plan,
            zone=zone,
            timezone=timezone,
            operations_limit=PLANS[plan].operations
            if operations_limit is None
            else operations_limit,
            created_at_ms=started - 90 * DAY_S * 1000,
            last_reset_ms=started,
            api_limit=PLANS[plan].api_limit,
            operations_used=operations_used,
            centicredits_used=operations_used * 100,
        )
        self.organizations[oid] = org
        self._check_quota(org)
        return org

    def add_team(self, org_id: int, name: str = "My Team") -> Team:
        org = self.organizations[org_id]
        team = Team(id=self._next_id("team"), name=name, org_id=org_id)
        self.teams[team.id] = team
        org.team_ids.append(team.id)
        return team

    def add_scenario(
        self,
        team_id: int,
        name: str = "Scenario",
        interval_s: float = 900,
        error_rate: float = 0.0,
        warning_rate: float = 0.0,
        check_run_rate: float = 0.0,
        operations_per_run: int = 5,
        max_errors: int | None = None,
        store_incomplete: bool = False,
        webhook: bool = False,
        active: bool = True,
        first_run_at: float | None = None,
        schedule: str = "indefinitely",
        rhythm: bool = False,
        ops_spread: float | None = None,
        late_failure_share: float | None = None,
    ) -> Scenario:
        """Add a scenario.

        Scheduled scenarios run every ``interval_s`` from ``first_run_at`` (default: now +
        interval); ``schedule`` is the ``scheduling.type`` listed for them (``daily``,
        ``weekly``, ``monthly`` with an ``interval_s`` of a day, a week, 30 days;
        ``on-demand`` never runs by itself). Webhook scenarios run when data arrives: gaps
        are random with mean ``interval_s`` (with ``rhythm``, at a rate that follows
        :func:`rhythm_factor`); they have no check runs and are deactivated after one error
        by default. ``max_errors <= 0`` means "never deactivate". ``ops_spread`` and
        ``late_failure_share`` vary the operations of its runs (watcher.simulator.signals).
        """
        if schedule not in SCHEDULE_TYPES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULE_TYPES)}")
        team = self.teams[team_id]
        sid = self._next_id("scenario")
        now = self.clock.time()
        rng = random.Random(f"{self.seed}:modules:{sid}")
        if webhook:
            modules = [{"moduleName": "CustomWebHook", "packageName": "gateway"}]
        else:
            modules = [rng.choice(_TRIGGERS)]
        modules += rng.sample(_ACTIONS, rng.randint(1, 3))
        created = to_ms(now) - rng.randint(2, 200) * DAY_S * 1000 - rng.randint(0, DAY_S * 1000)
        sc = Scenario(
            id=sid,
            team_id=team_id,
            org_id=team.org_id,
            name=name,
            interval_s=float(interval_s),
            error_rate=error_rate,
            warning_rate=warning_rate,
            check_run_rate=0.0 if webhook else check_run_rate,
            operations_per_run=max(1, operations_per_run),
            max_errors=(1 if webhook else 3) if max_errors is None else max_errors,
            store_incomplete=store_incomplete,
            webhook=webhook,
            created_ms=created,
            last_edit_ms=created + rng.randint(0, 3600_000),
            used_modules=modules,
            is_active=active,
            schedule="immediately" if webhook else schedule,
            rhythm=rhythm,
            ops_spread=ops_spread,
            late_failure_share=late_failure_share,
        )
        self.scenarios[sid] = sc
        team.scenario_ids.append(sid)
        if webhook or (active and schedule != "on-demand"):
            start = first_run_at if first_run_at is not None else self._next_at(sc, now, 0)
            self._schedule(sc, start)
        return sc

    def add_hook(
        self,
        team_id: int,
        scenario_id: int | None = None,
        queue_limit: int = 50,
        queue_count: int = 0,
        name: str | None = None,
        enabled: bool = True,
    ) -> Hook:
        team = self.teams[team_id]
        hid = self._next_id("hook")
        rng = random.Random(f"{self.seed}:hook:{hid}")
        udid = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32))
        hook = Hook(
            id=hid,
            name=name or f"webhook-{hid}",
            team_id=team_id,
            org_id=team.org_id,
            udid=udid,
            queue_limit=queue_limit,
            queue_count=queue_count,
            enabled=enabled,
            scenario_id=scenario_id,
        )
        self.hooks[hid] = hook
        if scenario_id is not None:
            self.scenarios[scenario_id].hook_id = hid
        return hook

    def add_token(
        self,
        org_ids: Iterable[int],
        scopes: Iterable[str] | None = None,
        name: str = "makewatch",
        oauth: bool = False,
    ) -> str:
        """Create an API token (a UUID4 string) for ``org_ids``; default scopes: all read ones.

        ``oauth=True`` makes it an OAuth access token, accepted only as ``Bearer``.
        """
        self._n_tokens += 1
        rng = random.Random(f"{self.seed}:token:{self._n_tokens}")
        value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        orgs = list(org_ids)
        tok = Token(value, orgs, list(ALL_READ_SCOPES if scopes is None else scopes), name, oauth)
        self.tokens[value] = tok
        for oid in orgs:
            self.tokens_by_org.setdefault(oid, value)
        return value

    # ---------------------------------------------------------------- running

    def _next_at(self, sc: Scenario, t: float, n: int) -> float | None:
        """When run n comes after time t: fixed for scheduled scenarios; for webhooks random
        (Poisson arrivals of mean gap ``interval_s / traffic``; with a rhythm, thinned to
        its rate at each hour of the week). None: no traffic at all."""
        if not sc.webhook:
            return t + sc.interval_s
        if sc.traffic <= 0:
            return None
        rng = random.Random(f"{self.seed}:{sc.id}:gap:{n}")
        peak = RHYTHM_PEAK if sc.rhythm else 1.0
        rate = sc.traffic * peak / sc.interval_s
        while True:
            t += max(1.0, rng.expovariate(rate))
            if not sc.rhythm or rng.random() * peak < rhythm_factor(t):
                return t

    def _schedule(self, sc: Scenario, at: float | None) -> None:
        sc._gen += 1
        sc.next_run_at = at
        if at is not None:
            heapq.heappush(self._heap, (at, sc.id, sc._gen))

    def advance(self, now: float | None = None) -> int:
        """Materialise every run due up to ``now`` (default: clock time); return how many."""
        now = self.clock.time() if now is None else now
        done = 0
        while self._heap and self._heap[0][0] <= now:
            t, sid, gen = heapq.heappop(self._heap)
            sc = self.scenarios[sid]
            if gen != sc._gen:
                continue  # rescheduled or stopped since this entry was pushed
            org = self.organizations[sc.org_id]
            self._maybe_reset(org, t)
            n = sc.run_index
            sc.run_index += 1
            running = sc.is_active and not org.is_paused
            if running and sc.stalled and not sc.webhook:
                # Stuck (a silent failure): the run came due and did not happen; nextExec
                # keeps the missed time until set_behaviour(stalled=False).
                sc.next_run_at = t
                continue
            if running and not sc.stalled:
                self._execute(sc, t, self._roll(sc, n, t))
                done += 1
            elif sc.webhook:
                # Data still arrives while the scenario is off or paused: it queues up.
                hook = self.hooks.get(sc.hook_id) if sc.hook_id else None
                if hook is not None and hook.enabled:
                    hook.queue_count = min(hook.queue_limit, hook.queue_count + 1)
            if sc.webhook or sc.is_active:
                self._schedule(sc, self._next_at(sc, t, sc.run_index))
            else:
                sc.next_run_at = None
        for org in self.organizations.values():
            self._maybe_reset(org, now)
        return done

    def _roll(self, sc: Scenario, n: int, t: float) -> dict[str, Any]:
        """The outcome of scheduled run ``n``, from its own random stream only."""
        rng = random.Random(f"{self.seed}:{sc.id}:{n}")
        u = rng.random()
        full = self.signals.full_operations(sc, n)
        out: dict[str, Any] = {"id": _hex32(rng), "rng": rng}
        if u < sc.error_rate:
            name, message = rng.choice(ERRORS)
            out.update(status=3, error={"name": name, "message": message})
            # A run that fails at module k consumed fewer operations than a full run, unless
            # k is the last module (late_failure_share). Drawn either way: same stream after.
            early = rng.randint(1, max(1, full - 1))
            out["operations"] = self.signals.failed_operations(sc, n, full, early)
        elif u < sc.error_rate + sc.warning_rate:
            name, message = rng.choice(WARNINGS)
            out.update(status=2, error={"name": name, "message": message}, operations=full)
        elif u < sc.error_rate + sc.warning_rate + sc.check_run_rate:
            out.update(status=1, operations=1, check=True)
        else:
            out.update(status=1, operations=full)
        return out

    def _execute(
        self,
        sc: Scenario,
        t: float,
        outcome: dict[str, Any],
        manual: bool = False,
        injected: bool = False,
        dlq: bool = True,
    ) -> LogRow:
        """Log one run and apply its side effects. ``dlq=False``: a failure stores no new
        incomplete execution (the retry of one that is already stored)."""
        rng: random.Random = outcome["rng"]
        status: int = outcome["status"]
        check = bool(outcome.get("check"))
        ops: int = outcome["operations"]
        if check:
            transfer, duration = 0, rng.randint(40, 250)
        elif status == 3:
            transfer, duration = rng.randint(0, 2_000) * ops, rng.randint(60, 3_000)
        else:
            transfer, duration = rng.randint(200, 8_000) * ops, rng.randint(300, 9_000)
        ms = to_ms(t)
        eid: str = outcome["id"]
        body: dict[str, Any] = {
            "imtId": f"{ms}_{eid}",
            "id": eid,
            "eventType": "EXECUTION_END",
            "type": "manual" if manual else "auto",
            "instant": sc.webhook,
            "scenarioId": sc.id,
            "scenarioName": sc.name,
            "organizationId": sc.org_id,
            "teamId": sc.team_id,
            "authorId": self.user["id"] if manual else None,
            "authorName": self.user["name"] if manual else None,
            "timestamp": iso_ms(ms),
            "duration": duration,
            "operations": ops,
            "transfer": transfer,
            "centicredits": ops * 100,
            "status": status,
        }
        if status in (2, 3):
            body["error"] = dict(outcome["error"])
        body.update(
            replayOfExecutionId=None, replayOfExecutionName=None, replayOfExecutionTimestamp=None
        )
        row = LogRow(body["imtId"], ms, body, status, check)
        self._store(sc, row)
        sc.executions[eid] = row
        self.signals.on_run(sc, t, row, check)

        org = self.organizations[sc.org_id]
        team = self.teams[sc.team_id]
        sc.operations += ops
        sc.centicredits += ops * 100
        sc.transfer += transfer
        org.operations_used += ops
        org.centicredits_used += ops * 100
        org.transfer_used += transfer
        for u in (sc.usage, team.usage, org.usage):
            u.add(t, ops, transfer, ops * 100)
        if sc.webhook and sc.hook_id in self.hooks:
            hook = self.hooks[sc.hook_id]
            hook.queue_count = max(0, hook.queue_count - 1)

        if status == 3:
            sc.consecutive_errors += 1
            sc.failing = True
            err = body["error"]
            self._record(
                sc, "error", t, row, injected, error_name=err["name"], error_message=err["message"]
            )
            if sc.store_incomplete and dlq:
                self._add_dlq(sc, row, rng)
                self._record(sc, "dlq", t, row, injected, dlq_id=sc.dlqs[-1].id)
            if sc.is_active and 0 < sc.max_errors <= sc.consecutive_errors:
                # Make switches the scenario off after max_errors consecutive errors.
                sc.is_active = False
                sc.is_invalid = True
                self._record(sc, "deactivation", t, row, injected)
                if not sc.webhook:
                    self._schedule(sc, None)
        else:
            if status == 1 and not check and sc.failing:
                sc.failing = False
                self._record(sc, "recovery", t, row, injected)
            # Guess: a warning also breaks a streak of consecutive errors.
            sc.consecutive_errors = 0
        self._check_quota(org)
        return row

    def _record(
        self, sc: Scenario, kind: str, t: float, row: LogRow | None, injected: bool, **extra: Any
    ) -> None:
        eid = row.body["id"] if row is not None else None
        self.ledger.append(LedgerEntry(kind, t, sc.id, sc.org_id, eid, injected=injected, **extra))

    def _add_dlq(self, sc: Scenario, row: LogRow, rng: random.Random) -> None:
        name = row.body["error"]["name"]
        item = DlqItem(
            id=_hex32(rng),
            scenario_id=sc.id,
            execution_id=row.body["id"],
            reason=row.body["error"]["message"],
            created_ms=row.ts_ms,
            size=rng.randint(200, 20_000),
            retry=name in AUTO_RETRIED,
            index=len(sc.dlqs),
        )
        sc.dlqs.append(item)
        self.dlqs[item.id] = item

    def _store(self, sc: Scenario, row: LogRow) -> None:
        bisect.insort(sc.logs, row, key=lambda r: r.imt_id)
        # Drop rows past the plan's retention (with a day of slack) so memory stays bounded.
        org = self.organizations[sc.org_id]
        cutoff = row.ts_ms - (org.license.retention_days + 1) * DAY_S * 1000
        if sc.logs and sc.logs[0].ts_ms < cutoff:
            keep = [r for r in sc.logs if r.ts_ms >= cutoff]
            for r in sc.logs[: len(sc.logs) - len(keep)]:
                sc.executions.pop(r.body["id"], None)
            sc.logs[:] = keep

    def _check_quota(self, org: Organization) -> None:
        if org.operations_used >= org.operations_limit:
            org.is_paused = True

    def _maybe_reset(self, org: Organization, t: float) -> None:
        """Start a new usage period: counters go to zero and a quota pause is lifted."""
        while to_ms(t) >= org.next_reset_ms:
            org.last_reset_ms = org.next_reset_ms
            org.operations_used = org.centicredits_used = org.transfer_used = 0
            org.is_paused = False
            for tid in org.team_ids:
                for sid in self.teams[tid].scenario_ids:
                    sc = self.scenarios[sid]
                    sc.operations = sc.centicredits = sc.transfer = 0

    # ---------------------------------------------------------------- user actions

    def inject_run(
        self,
        scenario_id: int,
        status: int = 3,
        error_name: str | None = None,
        error_message: str | None = None,
        operations: int | None = None,
        at: float | None = None,
        manual: bool = False,
        check: bool = False,
    ) -> dict[str, Any]:
        """Force one run now (or at epoch ``at``) with all its side effects; return its log entry."""
        if status not in (1, 2, 3):
            raise ValueError("status must be 1, 2 or 3")
        sc = self.scenarios[scenario_id]
        self.advance()
        t = self.clock.time() if at is None else at
        sc.injected += 1
        rng = random.Random(f"{self.seed}:{sc.id}:inject:{sc.injected}")
        outcome: dict[str, Any] = {"id": _hex32(rng), "rng": rng, "status": status}
        if status in (2, 3):
            default = ERRORS[2] if status == 3 else WARNINGS[0]
            name = error_name or default[0]
            message = error_message or (default[1] if name == default[0] else f"{name} occurred.")
            outcome["error"] = {"name": name, "message": message}
        if check:
            outcome.update(check=True, operations=1)
        elif operations is not None:
            outcome["operations"] = operations
        else:
            full = sc.operations_per_run
            outcome["operations"] = max(1, full // 2) if status == 3 else full
        row = self._execute(sc, t, outcome, manual=manual, injected=True)
        return dict(row.body)

    def _audit(self, sc: Scenario, kind: str, author: str | None) -> LogRow:
        self._audit_id += 1
        ms = to_ms(self.clock.time())
        name = author or self.user["name"]
        body = {
            "imtId": f"{ms}_{self._audit_id}",
            "id": str(self._audit_id),
            "type": kind,
            "authorId": self.user["id"],
            "authorName": name,
            "detail": {"author": {"name": name, "staff": False}},
            "timestamp": iso_ms(ms),
        }
        row = LogRow(body["imtId"], ms, body, None)
        self._store(sc, row)
        return row

    def set_active(self, scenario_id: int, active: bool, author: str | None = None) -> None:
        """A user starts or stops the scenario; writes a start/stop audit row."""
        self.advance()
        sc = self.scenarios[scenario_id]
        self._audit(sc, "start" if active else "stop", author)
        was_active, sc.is_active = sc.is_active, active
        if active and sc.is_invalid:
            self._record(sc, "reactivation", self.clock.time(), None, injected=True)
        if active:
            sc.is_invalid = False
            sc.consecutive_errors = 0
            if not sc.webhook and not was_active:
                self._schedule(sc, self.clock.time() + sc.interval_s)
        elif not sc.webhook:
            self._schedule(sc, None)

    def modify(self, scenario_id: int, author: str | None = None, name: str | None = None) -> None:
        """A user edits the scenario (optionally renaming it); writes a modify audit row."""
        self.advance()
        sc = self.scenarios[scenario_id]
        self._audit(sc, "modify", author)
        sc.last_edit_ms = to_ms(self.clock.time())
        if name:
            sc.name = name

    def set_behaviour(
        self,
        scenario_id: int,
        *,
        stalled: bool | None = None,
        traffic: float | None = None,
        volume: float | None = None,
        ops_spread: float | None = None,
        late_failure_share: float | None = None,
    ) -> Scenario:
        """Silent failures of one scenario (POST /_sim/scenarios/ID/behaviour).

        ``stalled``: its scheduled runs come due and do not happen, nothing is logged and no
        counter moves (a run stuck in Make's queue, a trigger that never fires); ``nextExec``
        stays at the missed time; a webhook's data still arrives and waits in its hook's
        queue. Unstalled, it runs at once and then on its schedule. ``traffic``: a webhook's
        arrival rate times this (0: its traffic stopped, as when a client's form broke).
        ``volume``: the operations of each run times this (0.1: a 90 % drop).
        ``ops_spread``, ``late_failure_share``: how the operations of its runs vary (see
        watcher.simulator.signals).
        """
        self.advance()
        sc = self.scenarios[scenario_id]
        now = self.clock.time()
        if stalled is not None and stalled != sc.stalled:
            sc.stalled = stalled
            if not stalled and sc.is_active and sc.next_run_at is not None and not sc.webhook:
                self._schedule(sc, max(sc.next_run_at, now))
        if traffic is not None and traffic != sc.traffic:
            if traffic < 0:
                raise ValueError("traffic must be >= 0")
            sc.traffic = float(traffic)
            if sc.webhook:  # the next arrival at the new rate
                self._schedule(sc, self._next_at(sc, now, sc.run_index))
        if volume is not None:
            if volume < 0:
                raise ValueError("volume must be >= 0")
            sc.volume = float(volume)
        if ops_spread is not None:
            if not ops_spread >= 0:  # NaN too
                raise ValueError("ops_spread must be >= 0")
            sc.ops_spread = float(ops_spread)
        if late_failure_share is not None:
            if not 0 <= late_failure_share <= 1:
                raise ValueError("late_failure_share must be between 0 and 1")
            sc.late_failure_share = float(late_failure_share)
        return sc

    def set_faults(self, **changes: Any) -> Faults:
        """Set fault knobs by name, as POST /_sim/faults does: ``set_faults(storm_429_count=1)``."""
        self.faults.update(changes)
        return self.faults

    def set_paused(self, org_id: int, paused: bool) -> None:
        """Pause or resume an organization by hand (as if the subscription changed)."""
        self.advance()
        self.organizations[org_id].is_paused = paused

    # ---------------------------------------------------------------- queries

    def org_of(self, scenario_id: int) -> Organization:
        return self.organizations[self.scenarios[scenario_id].org_id]

    def scenarios_of_org(self, org_id: int) -> list[Scenario]:
        org = self.organizations[org_id]
        return [self.scenarios[s] for t in org.team_ids for s in self.teams[t].scenario_ids]

    def ledger_json(self, since: int = 0) -> list[dict[str, Any]]:
        """What GET /_sim/ledger returns: ledger entries from index ``since`` on."""
        return [e.to_json() for e in self.ledger[since:]]

    def logs(self, scenario_id: int, include_check_runs: bool = True) -> list[dict[str, Any]]:
        """All stored log entries of a scenario, oldest first (for tests and benchmarks)."""
        return [
            dict(r.body)
            for r in self.scenarios[scenario_id].logs
            if include_check_runs or not r.check
        ]

    def summary(self) -> dict[str, Any]:
        """What GET /_sim/world returns."""
        return {
            "seed": self.seed,
            "time": self.clock.time(),
            "organizations": [
                {
                    "id": o.id,
                    "name": o.name,
                    "plan": o.plan,
                    "zone": o.zone,
                    "apiLimit": o.api_limit,
                    "operationsUsed": o.operations_used,
                    "operationsLimit": o.operations_limit,
                    "isPaused": o.is_paused,
                    "token": self.tokens_by_org.get(o.id),
                    "teams": [{"id": t, "name": self.teams[t].name} for t in o.team_ids],
                }
                for o in self.organizations.values()
            ],
            "tokens": [
                {
                    "token": t.token,
                    "orgIds": t.org_ids,
                    "scopes": t.scopes,
                    "name": t.name,
                    "oauth": t.oauth,
                }
                for t in self.tokens.values()
            ],
            "scenarios": [
                {
                    "id": s.id,
                    "name": s.name,
                    "orgId": s.org_id,
                    "teamId": s.team_id,
                    "webhook": s.webhook,
                    "intervalS": s.interval_s,
                    "errorRate": s.error_rate,
                    "isActive": s.is_active,
                    "isinvalid": s.is_invalid,
                    "operations": s.operations,
                    "runs": s.run_index + s.injected,
                    "dlqCount": s.dlq_count,
                }
                for s in self.scenarios.values()
            ],
        }

    # ---------------------------------------------------------------- the demo world

    @classmethod
    def generate(
        cls, seed: int = 1, clock: Clock | None = None, history_s: float = 6 * 3600
    ) -> World:
        """The demo world, deterministic for a given seed and clock.

        Three organizations (Free "Northwind Traders", Core "Acme Agency", Pro "Globex Ops"),
        two teams each, 8/16/21 scenarios: quiet polling scenarios (mostly check runs), webhook
        scenarios with hooks, error-prone ones; "Invoice export to Xero" already deactivated by
        errors, "Orders to ERP" with a DLQ backlog, "Typeform leads to HubSpot" stopped with its
        hook queue over 80 % full, Globex at ~92 % of its operations. One all-read-scopes token
        per organization in ``tokens_by_org``. ``history_s`` of past runs are materialised
        before returning, so logs are not empty.
        """
        world = cls(seed=seed, clock=clock)
        rng = random.Random(f"{seed}:generate")
        now = world.clock.time()
        start = now - history_s

        def first(interval: float) -> float:
            return start + rng.uniform(0, interval)

        # (name, plan, zone, timezone, scenarios, teams, operations used before, operations limit)
        specs: list[tuple[str, str, str, str, int, tuple[str, str], int, int | None]] = [
            ("Northwind Traders", "free", "eu1.make.com", "Europe/London", 8, ("Sales", "Ops"), 150, None),
            ("Acme Agency", "core", "eu2.make.com", "Europe/Paris", 14, ("Marketing", "Delivery"), 2500, 40_000),
            ("Globex Ops", "pro", "us1.make.com", "America/New_York", 20, ("Finance", "Platform"), 0, 150_000),
        ]  # fmt: skip
        for org_name, plan, zone, tz, n, team_names, used, limit in specs:
            org = world.add_organization(
                org_name,
                plan=plan,
                zone=zone,
                timezone=tz,
                operations_used=used,
                operations_limit=limit,
            )
            teams = [world.add_team(org.id, name=t) for t in team_names]
            # The Free plan allows 15-minute schedules at best and 1,000 operations a month.
            slow = plan == "free"
            names = rng.sample(_SCENARIO_NAMES, n)
            for i in range(n):
                team = teams[i % 2]
                kind = i % 7
                if kind in (0, 1, 2):  # quiet polling scenarios: mostly check runs
                    interval = rng.choice([3600, 7200, 14400] if slow else [900, 1800, 3600])
                    world.add_scenario(
                        team.id,
                        names[i],
                        interval_s=interval,
                        check_run_rate=rng.uniform(0.8, 0.95),
                        error_rate=rng.choice([0.0, 0.0, 0.01]),
                        operations_per_run=rng.randint(2, 6),
                        first_run_at=first(interval),
                    )
                elif kind == 3:  # webhook scenario
                    sc = world.add_scenario(
                        team.id,
                        names[i],
                        interval_s=rng.choice([7200, 14400] if slow else [900, 1800, 3600]),
                        webhook=True,
                        warning_rate=0.01,
                        operations_per_run=rng.randint(2, 6),
                        first_run_at=first(900),
                    )
                    world.add_hook(
                        team.id,
                        scenario_id=sc.id,
                        queue_limit=rng.choice([50, 100]),
                        name=f"{names[i].lower().replace(' ', '-')}-hook",
                    )
                elif kind == 4:  # error-prone scheduled scenario that survives (high max_errors)
                    interval = 14400 if slow else 900
                    world.add_scenario(
                        team.id,
                        names[i],
                        interval_s=interval,
                        error_rate=rng.uniform(0.08, 0.2),
                        warning_rate=0.03,
                        check_run_rate=0.5,
                        operations_per_run=rng.randint(3, 6),
                        max_errors=8,
                        first_run_at=first(interval),
                    )
                else:  # busier scheduled scenario, occasional errors
                    interval = 14400 if slow else 900
                    world.add_scenario(
                        team.id,
                        names[i],
                        interval_s=interval,
                        error_rate=0.02,
                        warning_rate=0.01,
                        check_run_rate=0.5,
                        operations_per_run=rng.randint(3, 8),
                        max_errors=5,
                        first_run_at=first(interval),
                    )
            world.add_token([org.id], name=f"makewatch-{plan}")

        acme, globex = (world.organizations[o] for o in list(world.organizations)[1:])
        acme_team, globex_team = acme.team_ids[0], globex.team_ids[1]
        # Already deactivated by Make: fails every run, switched off after 3 errors.
        world.add_scenario(
            acme_team,
            "Invoice export to Xero",
            interval_s=900,
            error_rate=1.0,
            operations_per_run=6,
            first_run_at=start + 600,
        )
        # A DLQ backlog: errors stored as incomplete executions, never deactivated.
        world.add_scenario(
            globex_team,
            "Orders to ERP (incomplete executions on)",
            interval_s=900,
            error_rate=0.3,
            operations_per_run=4,
            store_incomplete=True,
            max_errors=0,
            first_run_at=start + 300,
        )
        # A webhook whose scenario was stopped by a user: its queue is over 80 % full.
        stopped = world.add_scenario(
            acme.team_ids[1],
            "Typeform leads to HubSpot",
            interval_s=1800,
            webhook=True,
            operations_per_run=4,
            active=False,
            first_run_at=now + 900,
        )
        world.add_hook(
            acme.team_ids[1],
            scenario_id=stopped.id,
            queue_limit=50,
            queue_count=42,
            name="typeform-leads",
        )
        world.advance()
        # Globex consumed most of its quota before the simulation started: ~92 %.
        globex.operations_used = max(globex.operations_used, round(globex.operations_limit * 0.92))
        globex.centicredits_used = globex.operations_used * 100
        return world


_TRIGGERS = [
    {"moduleName": "ActionSearchRows", "packageName": "google-sheets"},
    {"moduleName": "WatchRecords", "packageName": "airtable"},
    {"moduleName": "watchEmails", "packageName": "email"},
    {"moduleName": "ActionSendData", "packageName": "http"},
    {"moduleName": "watchObjects", "packageName": "salesforce"},
]
_ACTIONS = [
    {"moduleName": "SetVariable2", "packageName": "util"},
    {"moduleName": "BasicFeeder", "packageName": "builtin"},
    {"moduleName": "ActionSendData", "packageName": "http"},
    {"moduleName": "CreateMessage", "packageName": "slack"},
    {"moduleName": "createContact", "packageName": "hubspotcrm"},
    {"moduleName": "addRow", "packageName": "google-sheets"},
    {"moduleName": "ParseJSON", "packageName": "json"},
]
_SCENARIO_NAMES = [
    "Sync CRM contacts",
    "New orders to Slack",
    "Daily invoice digest",
    "Stripe payouts to Sheets",
    "Shopify inventory sync",
    "Lead scoring",
    "Support tickets to Jira",
    "Calendar to Notion",
    "Mailchimp audience sync",
    "Backup Airtable base",
    "Onboarding e-mails",
    "Churn alerts",
    "Webinar signups",
    "Product feed export",
    "Expense approvals",
    "GitHub issues triage",
    "Zendesk CSAT report",
    "Contract renewals",
    "Newsletter RSS digest",
    "Partner payouts",
    "Refund requests",
    "Warehouse stock alerts",
    "Employee offboarding",
    "Price list update",
    "Survey responses",
    "Social mentions",
    "Delivery status updates",
    "Quote follow-ups",
    "Timesheet reminders",
    "Customer NPS sync",
]
