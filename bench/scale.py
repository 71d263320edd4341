"""What makewatch costs at scale: memory, CPU per simulated hour, state-file growth, budget.

What runs
---------
The real :class:`watcher.service.Watcher` and its service loop (:meth:`Watcher.run`: one poll
loop per organization at its adaptive pace, the alert loop every 5 s, a Slack webhook channel
as default route), in this process, on a :class:`~bench.sim_process.SharedClock` (a
ManualClock). The world is :func:`watcher.simulator.scale.build_scale_world`'s (K
organizations x M scenarios, every 15 min, mostly check runs, about 2.2 % of runs fail),
served with the Slack stand-in by a process of its own (:mod:`bench.sim_process`), so that
this process's memory and CPU are makewatch's. The configuration is a user's: ``plan``
(default Core: 60 requests/min, makewatch's budget 30/min), every other setting at its
default, a temp SQLite file.

Time stands still while anything is working: it moves, to the earliest sleeper's deadline,
only when no request is in flight, no store call is running in its thread, and the event
loop has nothing ready to run. So a cycle's simulated duration is its waits in the limiter,
and the figures do not depend on how fast this machine is, except the CPU and wall times.

What is measured
----------------
* Peak RSS of this process (``ru_maxrss``; also the RSS before the Watcher started, and at
  the end of each simulated hour).
* CPU seconds (``time.process_time()``) per simulated hour, hour by hour, and the ratio of
  the last hour to the second (the first holds start-up; flat means within 1.5x); per cycle.
* The state file: ``page_count * page_size`` at each hour, the WAL beside it, and the growth
  per simulated day (extrapolated from the last hours, after the first).
* Cycles: how many, their simulated duration (p50, p95, max), requests per cycle.
* Requests per minute against the budget (``apiLimit x budget_share``), the busiest 60 s, and
  429s, all from the simulator's request log (server side).
* Failures the world produced in the window, and how many makewatch recorded (its
  ``execution_error`` events) by the end; also of those produced before the last hour.

Targets (issue 16): peak RSS under 150 MB, CPU per simulated hour flat (last hour within
1.5x of the second), no 429.

    python bench/scale.py                       # the two standard runs (1 x 10,000; 20 x 500)
    python bench/scale.py --quick               # smaller, under a minute
    python bench/scale.py --orgs 1 --scenarios 10000 --hours 12 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import sim_process  # noqa: E402
from bench.sim_process import SharedClock  # noqa: E402
from bench.stats import percentile  # noqa: E402
from watcher.config import Settings, budget_per_minute, load_config  # noqa: E402
from watcher.service import Watcher  # noqa: E402
from watcher.store import Store  # noqa: E402

START = 1_790_000_000.0  # 2026-09-21T14:13:20Z, the tests' epoch
HOUR_S = 3600.0
RSS_TARGET_MB = 150.0
CPU_GROWTH_TARGET = 1.5
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Run:
    """One configuration: K organizations x M scenarios watched for ``hours``."""

    orgs: int
    scenarios: int
    hours: float
    plan: str = "core"

    @property
    def title(self) -> str:
        return f"{self.orgs} x {self.scenarios:,} scenarios, {self.plan}, {self.hours:g} h"


STANDARD: tuple[Run, ...] = (Run(1, 10_000, 12.0), Run(20, 500, 12.0))
QUICK: tuple[Run, ...] = (Run(1, 2_000, 2.0), Run(4, 250, 2.0))
# Wall time each run may take before it stops and reports the hours it covered: the two
# standard runs stay under 5 minutes together, the quick ones under a minute, whatever the
# code costs (at session 4's cost 12 h of either is 15-50 minutes: see bench/README.md).
STANDARD_WALL_S = 135.0
QUICK_WALL_S = 25.0


@dataclass
class Hour:
    """The state at the end of one simulated hour (or of the part of it that ran)."""

    hour: int
    cpu_s: float  # CPU spent during this hour
    cycles: int
    rss_mb: float
    db_bytes: int
    wal_bytes: int
    fraction: float = 1.0  # < 1: the run stopped inside this hour (--max-wall)


@dataclass
class Result:
    run: Run
    seed: int
    wall_s: float
    rss_before_mb: float
    peak_rss_mb: float
    hours: list[Hour]
    cycle_s: list[float]
    requests_per_cycle: list[int]
    failed_cycles: int
    budget_per_minute: dict[str, int]
    sim: dict[str, Any]
    detected: set[str]
    clock_moves: int
    simulated_s: float  # how much of run.hours ran before --max-wall stopped it
    notices: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return sum(h.cpu_s for h in self.hours)

    @property
    def cycles(self) -> int:
        return len(self.cycle_s)

    @property
    def full_hours(self) -> list[Hour]:
        return [h for h in self.hours if h.fraction >= 1.0]

    @property
    def complete(self) -> bool:
        return self.simulated_s >= self.run.hours * HOUR_S - 1e-6

    @property
    def cpu_growth(self) -> float:
        """Last full hour's CPU over the second's (the first holds the start)."""
        full = self.full_hours
        if len(full) < 3 or full[1].cpu_s <= 0:
            return float("nan")
        return full[-1].cpu_s / full[1].cpu_s

    @property
    def db_per_day_mb(self) -> float:
        """Growth of page_count * page_size per simulated day, from hour 1 to the end."""
        if not self.hours:
            return float("nan")
        last = self.hours[-1]
        elapsed_h = last.hour - 1 + last.fraction
        if len(self.hours) == 1:
            return last.db_bytes / elapsed_h * 24 / 2**20
        first = self.hours[0]
        return (last.db_bytes - first.db_bytes) / (elapsed_h - 1) * 24 / 2**20

    @property
    def failures(self) -> list[dict[str, Any]]:
        return self.sim["failures"]

    def detected_before(self, until: float) -> tuple[int, int]:
        """(produced, recorded) among failures with a timestamp before ``until``."""
        old = [f for f in self.failures if f["t"] < until]
        return len(old), sum(1 for f in old if f["execution_id"] in self.detected)

    @property
    def status_429(self) -> int:
        return sum(o["status_429"] for o in self.sim["organizations"])


# --------------------------------------------------------------------------------------------
# Measuring


def rss_mb() -> float:
    """This process's resident set now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start ``ru_maxrss`` again from the current RSS (Linux: ``clear_refs`` 5), so that each
    run of one invocation has its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the peak is then the process's so far
        pass


def db_bytes(db: Path) -> tuple[int, int]:
    """(page_count * page_size, WAL file size) of the state file, read on a side connection."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        size = con.execute("PRAGMA page_size").fetchone()[0]
    finally:
        con.close()
    wal = Path(f"{db}-wal")
    return pages * size, wal.stat().st_size if wal.exists() else 0


class Activity:
    """What is in flight besides the clock: HTTP requests (a trace on the session) and store
    calls (each running in the store's thread)."""

    def __init__(self) -> None:
        self.http = 0
        self.store = 0
        # Set whenever something in flight ends: the driver waits on it instead of spinning
        # (a spinning driver would be counted as makewatch's CPU).
        self.changed = asyncio.Event()

    def trace(self) -> aiohttp.TraceConfig:
        tc = aiohttp.TraceConfig()

        async def started(*_: Any) -> None:
            self.http += 1

        async def ended(*_: Any) -> None:
            self.http -= 1
            self.changed.set()

        tc.on_request_start.append(started)
        tc.on_request_end.append(ended)
        tc.on_request_exception.append(ended)
        return tc

    def watch_store(self, store: Store) -> None:
        """Count ``store.read``/``store.write`` calls in flight (every store call goes through
        one of them); the instance attributes shadow the methods."""
        for name in ("read", "write"):
            method = getattr(store, name)

            async def counted(fn: Any, _method: Any = method) -> Any:
                self.store += 1
                try:
                    return await _method(fn)
                finally:
                    self.store -= 1
                    self.changed.set()

            setattr(store, name, counted)

    async def settle(self) -> None:
        """Return once nothing is in flight and nothing is ready to run: every task waits on
        the clock (or on nothing)."""
        while True:
            if self.http or self.store:
                self.changed.clear()
                if self.http or self.store:
                    await self.changed.wait()
                continue
            # Nothing runnable either (a task a limiter slot was just granted to, a result
            # handed over from the store's thread): asyncio's ready queue. Private, but the
            # only way to tell "waiting on the clock" from "about to run".
            if len(getattr(asyncio.get_running_loop(), "_ready", ())):
                await asyncio.sleep(0)
                continue
            return


def write_config(
    workdir: Path, sim: sim_process.SimProcess, run: Run
) -> tuple[Settings, dict[str, str]]:
    """A user's configuration of every simulated organization, validated by the loader."""
    env: dict[str, str] = {"MAKEWATCH_SCALE_WEBHOOK": f"{sim.slack_url}/webhook/makewatch-scale"}
    parts = []
    for i, org in enumerate(sim.orgs):
        var = f"MAKEWATCH_SCALE_TOKEN_{i}"
        env[var] = org["token"]
        parts.append(
            f"[[organizations]]\nname = {json.dumps(org['name'])}\n"
            f"base_url = {json.dumps(sim.base_url)}\norganization_id = {org['organization_id']}\n"
            f'token_env = "{var}"\nplan = "{run.plan}"\n'
        )
    parts.append(
        f"[state]\ndb_path = {json.dumps(str(workdir / 'state.db'))}\n\n"
        '[alerts]\ndefault_channels = ["ops"]\n\n'
        '[channels.ops]\ntype = "slack_webhook"\nwebhook_url_env = "MAKEWATCH_SCALE_WEBHOOK"\n'
    )
    path = workdir / "makewatch.toml"
    path.write_text("\n".join(parts))
    return load_config(path, env=env), env


async def measure(
    run: Run, seed: int, *, max_wall_s: float = 0.0, progress: bool = False
) -> Result:
    """One configuration, start to end; see the module docstring."""
    t_wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="makewatch-scale-") as tmp:
        workdir = Path(tmp)
        clock = SharedClock(workdir / "clock", START)
        sim = await sim_process.start(workdir / "clock", run.orgs, run.scenarios, seed, run.plan)
        try:
            settings, _ = write_config(workdir, sim, run)
            result = await _watch(run, seed, settings, clock, sim, max_wall_s, progress)
        finally:
            await sim.stop()
            clock.close()
    result.wall_s = time.perf_counter() - t_wall
    return result


async def _watch(
    run: Run,
    seed: int,
    settings: Settings,
    clock: SharedClock,
    sim: sim_process.SimProcess,
    max_wall_s: float,
    progress: bool,
) -> Result:
    db = settings.state.db_path
    activity = Activity()
    end = START + run.hours * HOUR_S
    reset_peak_rss()
    rss_before = rss_mb()
    hours: list[Hour] = []
    moves = 0
    store = await asyncio.to_thread(Store.open, db)
    activity.watch_store(store)
    session = aiohttp.ClientSession(trace_configs=[activity.trace()])
    watcher = Watcher(settings, store, session, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        cpu_mark = time.process_time()
        next_mark = START + HOUR_S
        wall0 = time.perf_counter()

        async def mark(fraction: float = 1.0) -> None:
            now_cpu = time.process_time()
            data, wal = await asyncio.to_thread(db_bytes, db)
            n = await store.read(lambda d: d["cycles"].count)
            done = sum(h.cycles for h in hours)
            hours.append(
                Hour(len(hours) + 1, now_cpu - cpu_mark, n - done, rss_mb(), data, wal, fraction)
            )
            if progress:
                h = hours[-1]
                print(
                    f"  [{run.title}] hour {h.hour}{'' if fraction >= 1 else f' ({fraction:.0%})'}: "
                    f"CPU {h.cpu_s:.1f} s, cycles {h.cycles}, RSS {h.rss_mb:.0f} MB, "
                    f"db {h.db_bytes / 2**20:.1f} MB, wall {time.perf_counter() - wall0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

        while clock.time() < end:
            await asyncio.sleep(0)
            await activity.settle()
            if max_wall_s and time.perf_counter() - wall0 > max_wall_s:
                # Out of wall time: stop here, and say how much of the run this covers.
                await mark((clock.time() - (next_mark - HOUR_S)) / HOUR_S)
                end = clock.time()
                break
            if task.done():
                task.result()  # raises what stopped the service
                raise RuntimeError("the service stopped by itself")
            deadline = clock.next_deadline()
            if deadline is None:
                raise RuntimeError("nothing waits on the clock and nothing runs: the service hangs")
            t = min(max(deadline, clock.time()), next_mark, end)
            if t >= next_mark:
                # Time stands at the hour mark while it is measured.
                clock.set(next_mark)
                moves += 1
                await mark()
                cpu_mark = time.process_time()
                next_mark += HOUR_S
                continue
            clock.set(t)
            moves += 1
        stop.set()
        await asyncio.wait_for(task, 60)
        cycles = await store.read(
            lambda d: [
                dict(r)
                for r in d.query(
                    "SELECT started_at, finished_at, requests, ok FROM cycles ORDER BY id"
                )
            ]
        )
        detected = await store.read(
            lambda d: {
                r["key"].rsplit(":", 1)[1]
                for r in d.query("SELECT key FROM events WHERE kind = 'execution_error'")
            }
        )
        notices = await store.read(
            lambda d: d.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
        )
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watcher.aclose()
        await session.close()
        await store.aclose()
    async with aiohttp.ClientSession() as plain:
        url = f"http://127.0.0.1:{sim.port}/_bench/report"
        async with plain.get(url, params={"since": str(START), "until": str(end)}) as resp:
            resp.raise_for_status()
            sim_report = await resp.json()
    return Result(
        run=run,
        seed=seed,
        wall_s=0.0,
        rss_before_mb=rss_before,
        peak_rss_mb=peak_rss_mb(),
        hours=hours,
        cycle_s=[c["finished_at"] - c["started_at"] for c in cycles],
        requests_per_cycle=[c["requests"] for c in cycles],
        failed_cycles=sum(1 for c in cycles if not c["ok"]),
        budget_per_minute={o.name: budget_per_minute(o, None) for o in settings.organizations},
        sim=sim_report,
        detected=detected,
        clock_moves=moves,
        simulated_s=end - START,
        notices=notices,
    )


# --------------------------------------------------------------------------------------------
# Report


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def render(results: Sequence[Result], command: str) -> str:
    lines = [f"command: {command}", ""]
    for r in results:
        run = r.run
        budget = sum(r.budget_per_minute.values())
        minutes = r.simulated_s / 60
        reqs = sum(o["requests"] for o in r.sim["organizations"])
        worst = max(
            r.sim["organizations"],
            key=lambda o: o["max_per_60s"] / max(1, r.budget_per_minute[o["name"]]),
        )
        produced, recorded = (
            len(r.failures),
            sum(1 for f in r.failures if f["execution_id"] in r.detected),
        )
        old_n, old_rec = r.detected_before(START + r.simulated_s - HOUR_S)
        covered = (
            f"all {run.hours:g} simulated hours"
            if r.complete
            else f"{r.simulated_s / HOUR_S:.2f} of {run.hours:g} simulated hours (stopped by --max-wall)"
        )
        lines += [
            f"{run.title}: {run.orgs * run.scenarios:,} scenarios; seed {r.seed}; wall time {r.wall_s:.0f} s "
            f"for {covered}",
            f"  peak RSS {r.peak_rss_mb:.0f} MB (before the Watcher started {r.rss_before_mb:.0f} MB; "
            f"target < {RSS_TARGET_MB:.0f} MB: {verdict(r.peak_rss_mb < RSS_TARGET_MB)})",
            f"  CPU {r.cpu_s:.1f} s in all, {r.cpu_s / max(1, r.cycles) * 1000:.1f} ms per cycle; "
            + (
                f"last hour / second hour {r.cpu_growth:.2f}x "
                f"(target <= {CPU_GROWTH_TARGET}x: {verdict(r.cpu_growth <= CPU_GROWTH_TARGET)})"
                if r.cpu_growth == r.cpu_growth
                else "growth n/a (needs 3 hours)"
            ),
            "  hour      CPU s  cycles  CPU ms/cycle  RSS MB  db MB  WAL MB",
        ]
        for h in r.hours:
            per = h.cpu_s / h.cycles * 1000 if h.cycles else float("nan")
            label = str(h.hour) if h.fraction >= 1 else f"{h.hour}*"
            lines.append(
                f"  {label:>4}  {h.cpu_s:>9.2f}  {h.cycles:>6}  {per:>12.1f}  {h.rss_mb:>6.0f}  "
                f"{h.db_bytes / 2**20:>5.1f}  {h.wal_bytes / 2**20:>6.1f}"
            )
        if not r.complete and r.hours:
            lines.append(f"     * {r.hours[-1].fraction:.0%} of the hour ran")
        lines += [
            f"  state file: {r.hours[-1].db_bytes / 2**20:.1f} MB after {r.simulated_s / HOUR_S:.2f} h; "
            f"{r.db_per_day_mb:.1f} MB per simulated day (hour 1 to the end, x 24)",
            f"  cycles {r.cycles} ({r.failed_cycles} failed); simulated duration p50 "
            f"{percentile(r.cycle_s, 50):.0f} s, p95 {percentile(r.cycle_s, 95):.0f} s, max "
            f"{max(r.cycle_s, default=float('nan')):.0f} s; requests per cycle p50 "
            f"{percentile(r.requests_per_cycle, 50):.0f}, max {max(r.requests_per_cycle, default=0)}",
            f"  requests {reqs:,} = {reqs / minutes:.1f}/min against a budget of {budget}/min "
            f"({len(r.budget_per_minute)} x {budget // max(1, len(r.budget_per_minute))}); busiest 60 s "
            f"{worst['max_per_60s']} for {worst['name']} (budget {r.budget_per_minute[worst['name']]}, "
            f"apiLimit {worst['api_limit']}); 429s {r.status_429}",
            f"  failures produced {produced:,}, recorded {recorded:,} ({recorded / max(1, produced):.0%}); "
            f"of those before the last hour {old_rec:,} / {old_n:,} ({old_rec / max(1, old_n):.0%})",
            f"  notices sent {r.notices:,}; the simulator process: {r.sim['runs']:,} runs, CPU "
            f"{r.sim['cpu_s']:.0f} s, peak RSS {r.sim['peak_rss_mb']:.0f} MB (not makewatch's); "
            f"clock moves {r.clock_moves:,}",
            "",
        ]
    lines.append(
        "CPU = time.process_time() of this process (makewatch plus the thin driver); the world runs "
        "in a process of its own. RSS = ru_maxrss. db = page_count x page_size of the state file."
    )
    return "\n".join(lines)


def to_json(results: Sequence[Result]) -> dict[str, Any]:
    def finite(x: float) -> float | None:
        return x if x == x and abs(x) != float("inf") else None

    out: dict[str, Any] = {"runs": []}
    for r in results:
        produced = len(r.failures)
        recorded = sum(1 for f in r.failures if f["execution_id"] in r.detected)
        out["runs"].append(
            {
                "orgs": r.run.orgs,
                "scenarios": r.run.scenarios,
                "hours": r.run.hours,
                "simulated_hours": r.simulated_s / HOUR_S,
                "complete": r.complete,
                "plan": r.run.plan,
                "seed": r.seed,
                "wall_s": r.wall_s,
                "peak_rss_mb": r.peak_rss_mb,
                "rss_before_mb": r.rss_before_mb,
                "cpu_s": r.cpu_s,
                "cpu_ms_per_cycle": r.cpu_s / max(1, r.cycles) * 1000,
                "cpu_s_per_hour": [h.cpu_s for h in r.hours],
                "cycles_per_hour": [h.cycles for h in r.hours],
                "rss_mb_per_hour": [h.rss_mb for h in r.hours],
                "db_bytes_per_hour": [h.db_bytes for h in r.hours],
                "cpu_last_over_second": finite(r.cpu_growth),
                "db_mb_per_day": finite(r.db_per_day_mb),
                "cycles": r.cycles,
                "failed_cycles": r.failed_cycles,
                "cycle_s_p50": finite(percentile(r.cycle_s, 50)),
                "cycle_s_p95": finite(percentile(r.cycle_s, 95)),
                "requests": sum(o["requests"] for o in r.sim["organizations"]),
                "requests_per_minute": sum(o["requests"] for o in r.sim["organizations"])
                / max(1e-9, r.simulated_s / 60),
                "budget_per_minute": r.budget_per_minute,
                "organizations": r.sim["organizations"],
                "status_429": r.status_429,
                "failures_produced": produced,
                "failures_recorded": recorded,
                "notices_sent": r.notices,
                "sim_cpu_s": r.sim["cpu_s"],
                "sim_peak_rss_mb": r.sim["peak_rss_mb"],
            }
        )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--orgs", type=int, help="organizations (with --scenarios: one run of that size)"
    )
    ap.add_argument("--scenarios", type=int, help="scenarios per organization")
    ap.add_argument("--hours", type=float, help="simulated hours (default 12; --quick 2)")
    ap.add_argument("--plan", default="core", help="the organizations' plan (default core)")
    ap.add_argument(
        "--quick", action="store_true", help="smaller standard runs (1 x 2,000 and 4 x 250, 2 h)"
    )
    ap.add_argument(
        "--max-wall", type=float, metavar="S",
        help="stop each run after S s of wall time and report the hours it covered "
        f"(default: {STANDARD_WALL_S:g} per standard run, {QUICK_WALL_S:g} with --quick, none with --orgs/--scenarios; 0: none)",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=1, help="world seed (default 1)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--progress", action="store_true", help="a line on stderr per simulated hour")
    return ap.parse_args(argv)


def runs_of(args: argparse.Namespace) -> list[Run]:
    if args.orgs is not None or args.scenarios is not None:
        hours = args.hours if args.hours is not None else (2.0 if args.quick else 12.0)
        return [
            Run(
                args.orgs or 1,
                args.scenarios if args.scenarios is not None else 1000,
                hours,
                args.plan,
            )
        ]
    base = QUICK if args.quick else STANDARD
    return [Run(r.orgs, r.scenarios, args.hours or r.hours, args.plan) for r in base]


def command_line(args: argparse.Namespace) -> str:
    parts = ["python bench/scale.py"]
    if args.quick:
        parts.append("--quick")
    if args.orgs is not None:
        parts.append(f"--orgs {args.orgs}")
    if args.scenarios is not None:
        parts.append(f"--scenarios {args.scenarios}")
    if args.hours is not None:
        parts.append(f"--hours {args.hours:g}")
    if args.plan != "core":
        parts.append(f"--plan {args.plan}")
    if args.max_wall is not None:
        parts.append(f"--max-wall {args.max_wall:g}")
    parts.append(f"--seed {args.seed}")
    return " ".join(parts)


def max_wall_of(args: argparse.Namespace) -> float:
    if args.max_wall is not None:
        return args.max_wall
    if args.orgs is not None or args.scenarios is not None:
        return 0.0
    return QUICK_WALL_S if args.quick else STANDARD_WALL_S


def measure_in_process(run: Run, seed: int, max_wall_s: float, progress: bool) -> Result:
    """:func:`measure` in this process (the child's side of :func:`run_all`)."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(measure(run, seed, max_wall_s=max_wall_s, progress=progress))


def run_all(
    runs: Sequence[Run], seed: int, max_wall_s: float = 0.0, progress: bool = False
) -> list[Result]:
    """Each run in a fresh process: what one run allocated (and Python keeps) must not count
    in the next one's RSS."""
    results = []
    for r in runs:
        with ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            results.append(pool.submit(measure_in_process, r, seed, max_wall_s, progress).result())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    results = run_all(runs_of(args), args.seed, max_wall_of(args), args.progress)
    print(render(results, command_line(args)))
    if args.json:
        args.json.write_text(json.dumps(to_json(results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
