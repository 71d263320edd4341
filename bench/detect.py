"""Detection latency of makewatch's poller against a naive round-robin poller.

What is measured
----------------
For every failed run (a log entry with ``status: 3``) that the simulated Make world produces
inside the measurement window, the *detection latency* is the simulated time from the run's
timestamp to the moment a poller has recorded it (for makewatch: its ``execution_error``
event is committed to the SQLite store; for the naive poller: a logs read returned it).
A run that is not recorded by the end of the run (the window plus a drain period in which
both pollers keep polling) is *missed*: it stays in the statistics with an infinite latency,
so a poller cannot look good by leaving errors behind.

The two pollers
---------------
* ``makewatch``: the real :class:`watcher.service.Watcher` (one
  :class:`watcher.poller.OrgPoller`) with its SQLite store, configured like a user would
  (``plan = "core"``, default ``budget_share`` 0.5 and ``[polling]`` settings).
* ``naive``: lists the scenarios once, then every cycle reads
  ``GET /scenarios/{id}/logs?status=3`` (newest page) of the next scenarios in a fixed
  round-robin order, as many as the per-cycle budget allows (``budget × poll_interval_s /
  60``), with no inventory diff. It uses the same client factory
  (:func:`watcher.orgs.make_client`: :class:`watcher.make.MakeClient` and its
  :class:`watcher.make.SlidingWindowLimiter`), so its budget is exactly makewatch's.

How
---
Each poller runs against its own copy of the same world (built from the same seed; the
simulator's runs depend only on the seed, the scenario and the run number, so both copies
produce the same failures, which the benchmark checks), served by the real simulator over
a real socket on 127.0.0.1, on a :class:`~watcher.clock.ManualClock`. Cycles follow the
service's own loop (``Watcher._every``): a cycle starts ``poll_interval_s`` after the
previous one started, or at once if that one ran longer. Inside a cycle time stands still,
except when the cycle waits in the limiter (the previous cycle's requests are still in its
61-second window): then the driver moves the clock to the moment the limiter wakes up, as
real time would. Nothing sleeps for real. The simulator's request log (``world.requests``)
is the source for requests spent, 429s and the per-60-second-window check.

Regimes (``/work/shared/DESIGN.md``, "Scheduling under a tight budget"): (a) 100 scenarios
on Core (API limit 60/min, makewatch budget 30/min), all scheduled every 15 minutes: the
budget can read every scenario that ran; (b) 1,000 such scenarios: it cannot (about 67
scenarios run per minute, each moving its counters, check runs included).

    python bench/detect.py            # both regimes, about a minute and a half
    python bench/detect.py --quick    # a smaller run (used by tests/test_bench.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stats import max_in_window, percentile  # noqa: E402
from watcher.clock import ManualClock  # noqa: E402
from watcher.config import Settings, load_config  # noqa: E402
from watcher.make import MakeClient  # noqa: E402
from watcher.orgs import make_client  # noqa: E402
from watcher.service import Watcher  # noqa: E402
from watcher.simulator import RequestRecord, World, create_app  # noqa: E402
from watcher.simulator.app import IN_FLIGHT  # noqa: E402
from watcher.store import Store  # noqa: E402

T = TypeVar("T")

START = 1_790_000_000.0  # 2026-09-21T14:13:20Z, the tests' epoch
LOGS_PATH = re.compile(r"^/api/v2/scenarios/(\d+)/logs$")
TOKEN_ENV = "MAKEWATCH_BENCH_TOKEN"

# Error profiles of the scenarios: (share of scenarios, error rate per run). Mean ~2.2 %.
ERROR_PROFILES: tuple[tuple[float, float], ...] = ((0.6, 0.005), (0.3, 0.03), (0.1, 0.10))


@dataclass(frozen=True)
class Regime:
    """One simulated organization and how long it is watched."""

    key: str
    title: str
    scenarios: int
    window_s: float  # failures with a timestamp in [start, start + window_s) are counted
    drain_s: float  # then both pollers keep polling this long before "missed" is decided
    interval_s: float = 900.0
    plan: str = "core"
    teams: int = 2
    #: How late the simulated analytics count a run (None: the simulator's default guess,
    #: 5 min; nothing documents Make's). Only regime (d) reads analytics.
    analytics_lag_s: float | None = None


FULL: tuple[Regime, ...] = (
    Regime("a", "100 scenarios, Core, all every 15 min (the budget reads all that ran)", 100, 8 * 3600, 3600),
    Regime("b", "1,000 scenarios, Core, all every 15 min (it cannot)", 1000, 4 * 3600, 3600),
)
# Not in "all" (several minutes): the budget reads a scenario every 5.5 hours at best.
LARGE = Regime("c", "10,000 scenarios, Core, all every 15 min (over budget tenfold)", 10_000, 3600, 3600)
# The same on Enterprise (500 requests a minute of its 1,000), whose analytics count errors.
LARGE_ENTERPRISE = Regime(
    "d", "10,000 scenarios, Enterprise with analytics, all every 15 min", 10_000, 1800, 1800, plan="enterprise"
)
QUICK: tuple[Regime, ...] = (
    Regime("a", "100 scenarios, Core, all every 15 min (quick)", 100, 5400, 1200),
    Regime("b", "400 scenarios, Core, all every 15 min (quick; over budget)", 400, 3600, 1800),
)


# --------------------------------------------------------------------------------------------
# The world


def build_world(regime: Regime, seed: int, clock: ManualClock) -> tuple[World, int, str]:
    """The regime's organization; deterministic for a seed. Returns (world, org id, token)."""
    world = World(seed=seed, clock=clock)
    if regime.analytics_lag_s is not None:
        world.signals.knobs.analytics_lag_s = regime.analytics_lag_s
    # A quota far out of reach: a paused organization would stop every scenario.
    org = world.add_organization("Bench Agency", plan=regime.plan, operations_limit=10**9)
    teams = [world.add_team(org.id, name=f"Team {i + 1}") for i in range(regime.teams)]
    rng = random.Random(f"{seed}:bench:{regime.key}")
    start = clock.time()
    for i in range(regime.scenarios):
        u, error_rate = rng.random(), ERROR_PROFILES[-1][1]
        for share, rate in ERROR_PROFILES:
            if u < share:
                error_rate = rate
                break
            u -= share
        world.add_scenario(
            teams[i % len(teams)].id,
            name=f"Scenario {i + 1:04d}",
            interval_s=regime.interval_s,
            error_rate=error_rate,
            # Polling triggers that mostly find nothing: each check run still costs an
            # operation, so the scenario's counters move every interval.
            check_run_rate=rng.uniform(0.5, 0.9),
            operations_per_run=rng.randint(3, 8),
            max_errors=0,  # never deactivated: the error stream stays stationary
            first_run_at=start + rng.uniform(0, regime.interval_s),
        )
    return world, org.id, world.add_token([org.id], name="makewatch-bench")


@dataclass(frozen=True)
class Failure:
    """One failed run produced by the world (the ground truth)."""

    scenario_id: int
    execution_id: str
    at: float


def failures(world: World, since: float, until: float) -> list[Failure]:
    """Failed runs with a timestamp in [since, until), in time order."""
    world.advance(until)
    out = [
        Failure(sc.id, row.body["id"], row.ts_ms / 1000)
        for sc in world.scenarios.values()
        for row in sc.logs
        if row.status == 3 and since <= row.ts_ms / 1000 < until
    ]
    return sorted(out, key=lambda f: (f.at, f.scenario_id))


# --------------------------------------------------------------------------------------------
# Clock driving


class BenchClock(ManualClock):
    """A ManualClock that tells when its earliest sleeper is due."""

    def next_deadline(self) -> float | None:
        live = [deadline for deadline, _, fut in self._sleepers if not fut.done()]
        return min(live) if live else None


def settled(world: World, client: MakeClient) -> bool:
    """Every request the client was granted has been answered by the simulator."""
    if len(world.requests) != client.requests_sent:
        return False
    return all(r.status != IN_FLIGHT for r in world.requests[-64:])


async def drive(
    clock: BenchClock,
    work: Awaitable[T],
    quiet: Callable[[], bool] = lambda: True,
    stall_s: float = 0.0005,
    give_up_s: float = 2.0,
) -> T:
    """Await ``work``; whenever it waits on the clock (the limiter), move time to its wake-up.

    Time only moves when ``quiet()`` (no request of this poller is still on its way), so
    the simulator stamps every request with the time its limiter slot was granted. If a
    request never arrives (it cannot, short of a crash), time moves after ``give_up_s`` of
    real time anyway rather than hanging.
    """
    task = asyncio.ensure_future(work)
    waited = 0.0
    while True:
        done, _ = await asyncio.wait({task}, timeout=stall_s)
        if done:
            return task.result()
        deadline = clock.next_deadline()
        if deadline is None:
            continue
        if not quiet() and waited < give_up_s:
            waited += stall_s
            continue
        waited = 0.0
        clock.set(max(deadline, clock.time()))


# --------------------------------------------------------------------------------------------
# The pollers


class NaivePoller:
    """Round-robin logs reads, as many per cycle as the budget allows; no inventory diff."""

    def __init__(self, client: MakeClient, org_id: int, clock: ManualClock, poll_interval_s: float, concurrency: int) -> None:
        self.client = client
        self.org_id = org_id
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.concurrency = concurrency
        self.order: list[int] | None = None
        self.next_index = 0
        self.since_ms = int((clock.time() - 60) * 1000)
        self.detected: dict[str, float] = {}

    @property
    def cycle_budget(self) -> int:
        """Requests per cycle, computed like OrgPoller does: budget × interval / 60."""
        return max(1, int(self.client.limiter.per_window * self.poll_interval_s / 60))

    async def poll_once(self) -> None:
        spent_before = self.client.requests_sent
        if self.order is None:  # once: which scenarios exist (a fixed order, by id)
            self.order = sorted(s.id for s in await self.client.list_scenarios(organization_id=self.org_id))
        n = min(len(self.order), self.cycle_budget - (self.client.requests_sent - spent_before))
        if n <= 0:
            return
        # The first read alone: it waits in the limiter, if it must, with nothing else in
        # flight. Then as many as the window has room for, like OrgPoller's allowance.
        await self._read(self._next())
        room = self.client.limiter.per_window - self.client.limiter.used()
        batch = [self._next() for _ in range(max(0, min(n - 1, room)))]
        sem = asyncio.Semaphore(self.concurrency)

        async def read(sid: int) -> None:
            async with sem:
                await self._read(sid)

        await asyncio.gather(*(read(sid) for sid in batch))

    def _next(self) -> int:
        assert self.order
        sid = self.order[self.next_index % len(self.order)]
        self.next_index = (self.next_index + 1) % len(self.order)
        return sid

    async def _read(self, sid: int) -> None:
        entries = await self.client.list_scenario_logs(sid, status=3, since_ms=self.since_ms, max_pages=1)
        now = self.clock.time()
        for entry in entries:
            self.detected.setdefault(entry.id, now)


class MakewatchPoller:
    """The real Watcher; detections are read back from its store after each cycle."""

    def __init__(self, settings: Settings, store: Store, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        self.watcher = Watcher(settings, store, session, clock)
        self.store = store
        self.clock = clock
        self.detected: dict[str, float] = {}
        self._last_event_id = 0
        # Why each logs read was chosen, and what it found (CycleReport.reads/hits/found).
        self.reads: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.found: Counter[str] = Counter()

    async def poll_once(self) -> float | None:
        """One cycle; returns when the service would poll again (its adaptive interval)."""
        (report,) = await self.watcher.poll_once()
        if not report.ok:
            raise RuntimeError(f"makewatch cycle failed: {report.error}")
        next_s = self.watcher.pollers[0].next_interval_s(report)
        self.reads.update(report.reads)
        self.hits.update(report.hits)
        self.found.update(report.found)
        last = self._last_event_id

        def query(db: Any) -> list[dict[str, Any]]:
            sql = "SELECT id, key FROM events WHERE kind = 'execution_error' AND id > ? ORDER BY id"
            return [dict(r) for r in db.query(sql, [last])]

        # Reads never wait inside a cycle, so the clock now is the moment they were committed.
        now = self.clock.time()
        for row in await self.store.read(query):
            self._last_event_id = max(self._last_event_id, row["id"])
            self.detected.setdefault(row["key"].rsplit(":", 1)[1], now)
        return next_s


# --------------------------------------------------------------------------------------------
# Results




@dataclass
class PollerResult:
    """One poller's run on one regime, with the raw data every number is computed from."""

    name: str
    budget_per_minute: int
    cycles: int
    detected: dict[str, float]
    latencies: list[float]  # one per counted failure, in the regime's order; inf = missed
    requests: list[RequestRecord]  # the simulator's log of this poller's world
    # makewatch only: logs reads by why they were chosen, those that found a new failure,
    # and the failures they found (see CycleReport.reads)
    reads: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)

    @property
    def detected_count(self) -> int:
        return sum(1 for x in self.latencies if math.isfinite(x))

    @property
    def missed(self) -> int:
        return sum(1 for x in self.latencies if not math.isfinite(x))

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    @property
    def max_latency(self) -> float:
        return max(self.latencies) if self.latencies else math.nan

    @property
    def requests_per_cycle(self) -> float:
        return len(self.requests) / max(1, self.cycles)

    @property
    def status_429(self) -> int:
        return sum(1 for r in self.requests if r.status == 429)

    @property
    def max_per_window(self) -> int:
        return max_in_window([r.t for r in self.requests])

    def count(self, kind: str) -> int:
        if kind == "list":
            return sum(1 for r in self.requests if r.path == "/api/v2/scenarios")
        if kind == "logs":
            return sum(1 for r in self.requests if LOGS_PATH.match(r.path))
        return sum(1 for r in self.requests if r.path != "/api/v2/scenarios" and not LOGS_PATH.match(r.path))

    def useful_reads(self, truth: Sequence[Failure]) -> int:
        """Logs reads that returned at least one failure no earlier read of that scenario had."""
        errors: dict[int, list[float]] = defaultdict(list)
        for f in truth:
            errors[f.scenario_id].append(f.at)
        reads: dict[int, list[float]] = defaultdict(list)
        for r in self.requests:
            m = LOGS_PATH.match(r.path)
            if m and r.status == 200:
                reads[int(m.group(1))].append(r.t)
        useful = 0
        for sid, times in reads.items():
            prev = -math.inf
            for t in sorted(times):
                if any(prev < e <= t for e in errors.get(sid, ())):
                    useful += 1
                prev = t
        return useful


@dataclass
class RegimeResult:
    regime: Regime
    seed: int
    poll_interval_s: float
    truth: list[Failure]
    makewatch: PollerResult
    naive: PollerResult
    wall_s: float = 0.0

    def ratio(self, what: str) -> float:
        """naive / makewatch of a measured figure ("p50", "p95", "max", "requests")."""
        a, b = self._figure(self.naive, what), self._figure(self.makewatch, what)
        if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
            return math.nan
        return a / b

    @staticmethod
    def _figure(r: PollerResult, what: str) -> float:
        if what == "p50":
            return r.p(50)
        if what == "p95":
            return r.p(95)
        if what == "max":
            return r.max_latency
        if what == "requests":
            return float(len(r.requests))
        if what == "requests_per_detected":
            return len(r.requests) / r.detected_count if r.detected_count else math.inf
        raise ValueError(what)


# --------------------------------------------------------------------------------------------
# Running one poller


def bench_settings(
    workdir: Path, base_url: str, org_id: int, token: str, plan: str, poll_interval_s: float
) -> Settings:
    """makewatch's configuration, validated like a user's file (defaults everywhere else)."""
    cfg = workdir / "makewatch.toml"
    cfg.write_text(
        f'[[organizations]]\nname = "Bench Agency"\nbase_url = {json.dumps(base_url)}\n'
        f'organization_id = {org_id}\ntoken_env = "{TOKEN_ENV}"\nplan = "{plan}"\n\n'
        f"[state]\ndb_path = {json.dumps(str(workdir / 'state.db'))}\n\n"
        f"[polling]\npoll_interval_s = {float(poll_interval_s)!r}\n"
    )
    return load_config(cfg, env={TOKEN_ENV: token})


async def run_poller(
    name: str, regime: Regime, seed: int, poll_interval_s: float = 60.0
) -> tuple[PollerResult, list[Failure]]:
    """One poller on a fresh copy of the regime's world; returns its result and the truth."""
    clock = BenchClock(START)
    world, org_id, token = build_world(regime, seed, clock)
    runner = web.AppRunner(create_app(world), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v2"
    with tempfile.TemporaryDirectory(prefix="makewatch-bench-") as tmp:
        settings = bench_settings(Path(tmp), base_url, org_id, token, regime.plan, poll_interval_s)
        interval = settings.polling.poll_interval_s
        session = aiohttp.ClientSession()
        store: Store | None = None
        try:
            poller: MakewatchPoller | NaivePoller
            if name == "makewatch":
                store = await asyncio.to_thread(Store.open, settings.state.db_path)
                poller = MakewatchPoller(settings, store, session, clock)
                client = poller.watcher.pollers[0].client
            else:
                client = make_client(session, settings.organizations[0], settings.http, clock)
                poller = NaivePoller(client, org_id, clock, interval, settings.polling.concurrency)
            end = START + regime.window_s + regime.drain_s
            cycles, next_start = 0, START
            # The service's loop (Watcher._poll_loop): the next cycle starts the poller's interval
            # after this one started (makewatch adapts it to its budget; naive keeps
            # poll_interval_s), or at once after a long cycle.
            while next_start < end:
                clock.set(max(next_start, clock.time()))
                started = clock.time()
                wanted = await drive(clock, poller.poll_once(), lambda: settled(world, client))
                cycles += 1
                next_start = started + (wanted or interval)
            budget = client.limiter.per_window
            truth = failures(world, START, START + regime.window_s)
            latencies = [
                poller.detected[f.execution_id] - f.at if f.execution_id in poller.detected else math.inf
                for f in truth
            ]
            result = PollerResult(
                name=name,
                budget_per_minute=budget,
                cycles=cycles,
                detected=dict(poller.detected),
                latencies=latencies,
                requests=list(world.requests),
            )
            if isinstance(poller, MakewatchPoller):
                result.reads, result.hits, result.found = poller.reads, poller.hits, poller.found
            return result, truth
        finally:
            if name == "makewatch" and isinstance(poller, MakewatchPoller):
                await poller.watcher.aclose()
            await session.close()
            await runner.cleanup()
            if store is not None:
                await store.aclose()


async def run_regime(regime: Regime, seed: int, poll_interval_s: float = 60.0) -> RegimeResult:
    t0 = time.perf_counter()
    mw, truth = await run_poller("makewatch", regime, seed, poll_interval_s)
    naive, truth_naive = await run_poller("naive", regime, seed, poll_interval_s)
    if truth != truth_naive:
        raise RuntimeError("the two copies of the world produced different failures")
    return RegimeResult(regime, seed, poll_interval_s, truth, mw, naive, wall_s=time.perf_counter() - t0)


async def run_benchmark(
    regimes: Sequence[Regime], seed: int, poll_interval_s: float = 60.0
) -> list[RegimeResult]:
    """Every regime, one after the other (each poller on its own world, socket and clock)."""
    return [await run_regime(r, seed, poll_interval_s) for r in regimes]


# --------------------------------------------------------------------------------------------
# Report


def fmt_s(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "missed"
    return f"{x:.0f}"


def fmt_ratio(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}x"


def render(results: Sequence[RegimeResult], command: str) -> str:
    lines = [f"command: {command}", ""]
    for res in results:
        reg, mw, nv = res.regime, res.makewatch, res.naive
        hours = reg.window_s / 3600
        lines.append(f"regime ({reg.key}): {reg.title}")
        lines.append(
            f"  seed {res.seed}; failures counted over {hours:g} h of simulated time, then "
            f"{reg.drain_s / 60:g} min of drain; budget {mw.budget_per_minute}/min "
            f"(API limit x budget_share); poll_interval_s {res.poll_interval_s:g}; "
            f"wall time {res.wall_s:.1f} s"
        )
        rows: list[tuple[str, str, str, str]] = [
            ("", "makewatch", "naive", "naive/makewatch"),
            ("failed runs counted", str(len(res.truth)), str(len(res.truth)), ""),
            ("detected", str(mw.detected_count), str(nv.detected_count), ""),
            ("missed (never detected)", str(mw.missed), str(nv.missed), ""),
            ("latency p50 (s)", fmt_s(mw.p(50)), fmt_s(nv.p(50)), fmt_ratio(res.ratio("p50"))),
            ("latency p95 (s)", fmt_s(mw.p(95)), fmt_s(nv.p(95)), fmt_ratio(res.ratio("p95"))),
            ("latency max (s)", fmt_s(mw.max_latency), fmt_s(nv.max_latency), fmt_ratio(res.ratio("max"))),
            ("requests spent", str(len(mw.requests)), str(len(nv.requests)), fmt_ratio(res.ratio("requests"))),
            ("  inventory pages", str(mw.count("list")), str(nv.count("list")), ""),
            ("  logs reads", str(mw.count("logs")), str(nv.count("logs")), ""),
            ("  other (org, usage, hooks, DLQs)", str(mw.count("other")), str(nv.count("other")), ""),
            ("logs reads that found a new failure", str(mw.useful_reads(res.truth)), str(nv.useful_reads(res.truth)), ""),
            ("max requests in any 60 s", str(mw.max_per_window), str(nv.max_per_window), ""),
            ("429 responses", str(mw.status_429), str(nv.status_429), ""),
            ("cycles", str(mw.cycles), str(nv.cycles), ""),
            ("mean requests per cycle", f"{mw.requests_per_cycle:.1f}", f"{nv.requests_per_cycle:.1f}", ""),
        ]
        rows.append(
            ("requests per detected failure", f"{len(mw.requests) / max(1, mw.detected_count):.1f}", f"{len(nv.requests) / max(1, nv.detected_count):.1f}", fmt_ratio(res.ratio("requests_per_detected")))
        )
        lines += _table(rows)
        lines.append("  how makewatch chose its logs reads (precision = share of its reads that found a new failure;")
        lines.append("  recall = share of the failures makewatch recorded that such a read found):")
        lines += _table(choice_rows(mw))
        lines.append("")
    lines.append(
        "latency = simulated seconds from a failed run's timestamp to its recording; percentiles "
        "are nearest-rank over every counted failure, a missed one counting as infinite."
    )
    return "\n".join(lines)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    n = len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    out = []
    for r in rows:
        cells = [f"{r[0]:<{widths[0]}}", *(f"{c:>{w}}" for c, w in zip(r[1:], widths[1:], strict=True))]
        out.append(("  " + "  ".join(cells)).rstrip())
    return out


CHOICES: tuple[tuple[str, str], ...] = (
    ("band:signals", "signals band (state, DLQ, unusual step)"),
    ("band:floor", "round-robin floor band"),
    ("band:likelihood", "likelihood band"),
    ("band:sweep", "hourly sweep (nothing moved)"),
    ("signal:state", "  signal: a state moved (isinvalid, isActive)"),
    ("signal:dlq", "  signal: dlqCount rose"),
    ("signal:analytics", "  signal: Enterprise analytics counted an error"),
    ("signal:notified", "  signal: an in-app notification named it"),
    ("signal:partial", "  signal: unusual operations step"),
    ("signal:newstep", "  hint: first step bigger than a check run"),
)


def choice_rows(p: PollerResult) -> list[tuple[str, str, str, str, str]]:
    """Reads, precision, failures found and recall per band and signal."""
    total = sum(p.found[k] for k, _ in CHOICES if k.startswith("band:"))
    rows = [("", "reads", "precision", "failures found", "recall")]
    for key, title in CHOICES:
        reads = p.reads[key]
        precision = f"{100 * p.hits[key] / reads:.0f} %" if reads else "-"
        recall = f"{100 * p.found[key] / total:.0f} %" if total else "-"
        rows.append((title, str(reads), precision, str(p.found[key]), recall))
    return rows


def to_json(results: Sequence[RegimeResult]) -> dict[str, Any]:
    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    out: dict[str, Any] = {"regimes": []}
    for res in results:
        entry: dict[str, Any] = {
            "regime": res.regime.key,
            "title": res.regime.title,
            "seed": res.seed,
            "poll_interval_s": res.poll_interval_s,
            "failures": len(res.truth),
        }
        for p in (res.makewatch, res.naive):
            entry[p.name] = {
                "detected": p.detected_count,
                "missed": p.missed,
                "p50_s": finite(p.p(50)),
                "p95_s": finite(p.p(95)),
                "max_s": finite(p.max_latency),
                "requests": len(p.requests),
                "max_requests_per_60s": p.max_per_window,
                "budget_per_minute": p.budget_per_minute,
                "status_429": p.status_429,
                "cycles": p.cycles,
                "reads": dict(p.reads),
                "hits": dict(p.hits),
                "found": dict(p.found),
            }
        entry["ratios_naive_over_makewatch"] = {
            k: finite(res.ratio(k)) for k in ("p50", "p95", "max", "requests", "requests_per_detected")
        }
        out["regimes"].append(entry)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="a smaller run (seconds, for tests)")
    ap.add_argument("--seed", type=int, default=1, help="world seed (default 1)")
    ap.add_argument(
        "--seeds", type=seed_list, metavar="A-B",
        help="several seeds (e.g. 1-5 or 1,3): each regime once per seed, then a summary per seed",
    )
    ap.add_argument(
        "--regime", choices=("a", "b", "c", "d", "all"), default="all",
        help="c and d (10,000 scenarios, Core and Enterprise) only when named",
    )
    ap.add_argument(
        "--poll-interval", type=float, default=60.0, metavar="S",
        help="polling.poll_interval_s of both pollers (default 60, makewatch's default)",
    )
    ap.add_argument(
        "--drain-hours", type=float, metavar="H",
        help="override the regime's drain (e.g. 8 for regime c: long enough for a whole floor round)",
    )
    ap.add_argument(
        "--analytics-lag", type=float, metavar="S",
        help="how late the simulated analytics count a run (default the simulator's 300 s guess)",
    )
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return ap.parse_args(argv)


def seed_list(text: str) -> list[int]:
    """ "1-5" or "1,3,4" -> the seeds."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    if not out:
        raise argparse.ArgumentTypeError("no seed")
    return out


def summary(results: Sequence[RegimeResult]) -> str:
    """One line per regime and seed: the ratios, and whether makewatch was ever worse."""
    rows = [("regime", "seed", "failures", "detected mw/naive", "p50 x", "p95 x", "max x", "never worse")]
    for res in results:
        worse = [k for k in ("p95", "max") if res.ratio(k) < 1.0] + (
            ["detected"] if res.makewatch.detected_count < res.naive.detected_count else []
        )
        rows.append((
            res.regime.key, str(res.seed), str(len(res.truth)),
            f"{res.makewatch.detected_count}/{res.naive.detected_count}",
            fmt_ratio(res.ratio("p50")), fmt_ratio(res.ratio("p95")), fmt_ratio(res.ratio("max")),
            "yes" if not worse else "NO: " + ", ".join(worse),
        ))
    return "\n".join(["summary (ratios naive / makewatch: above 1 is makewatch better)", *_table(rows)])


def command_line(args: argparse.Namespace) -> str:
    parts = ["python bench/detect.py"]
    if args.quick:
        parts.append("--quick")
    if args.seeds:
        parts.append("--seeds " + ",".join(map(str, args.seeds)))
    else:
        parts.append(f"--seed {args.seed}")
    if args.regime != "all":
        parts.append(f"--regime {args.regime}")
    if args.poll_interval != 60.0:
        parts.append(f"--poll-interval {args.poll_interval:g}")
    if args.drain_hours is not None:
        parts.append(f"--drain-hours {args.drain_hours:g}")
    if args.analytics_lag is not None:
        parts.append(f"--analytics-lag {args.analytics_lag:g}")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    regimes = [r for r in (QUICK if args.quick else FULL) if args.regime in ("all", r.key)]
    if args.regime in ("c", "d"):
        regimes = [LARGE if args.regime == "c" else LARGE_ENTERPRISE]
    if args.drain_hours is not None:
        regimes = [replace(r, drain_s=args.drain_hours * 3600) for r in regimes]
    if args.analytics_lag is not None:
        regimes = [replace(r, analytics_lag_s=args.analytics_lag) for r in regimes]
    results: list[RegimeResult] = []
    for seed in args.seeds or [args.seed]:
        results += asyncio.run(run_benchmark(regimes, seed, args.poll_interval))
    print(render(results, command_line(args)))
    if len(results) > 1:
        print()
        print(summary(results))
    if args.json:
        args.json.write_text(json.dumps(to_json(results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
