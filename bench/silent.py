"""Silent failures over a simulated month: detection delay per kind and false alarms.

What is measured
----------------
A 200-scenario organization (scheduled every 15 min to 4 h, daily, weekly, monthly, on
demand, and webhook scenarios whose traffic follows a weekly rhythm: busy weekday office
hours, quiet nights and weekends) is watched by the real :class:`watcher.service.Watcher`
for 30 simulated days. After three weeks of history (what the volume check needs), silent
failures are injected through the simulator's behaviour knobs:

* **stalled** scheduled scenarios (``stalled``: their runs come due and do not happen), for
  12 hours (a weekly one from just before its run): ``scenario_overdue`` expected; the delay
  runs from the first missed run's scheduled time, the *usual gap* is the schedule's interval;
* **stopped** webhooks (``traffic = 0``) on a weekday in office hours, for 24 hours:
  ``scenario_idle`` expected; the delay runs from the stop, the usual gap is the mean gap of
  the scenario's arrivals at that hour of the week;
* **90 % drops** (``volume = 0.1``) of busy scheduled scenarios from midnight UTC, for two
  days: ``volume_anomaly`` expected; the delay runs from that midnight (a day must end before
  it can be judged), the usual gap is a day.

An injected failure is *caught* when an event of its kind for its scenario opens between its
start and its end plus the slack; *missed* otherwise. Every other opening event of these
kinds (a scenario or the organization, at any time of the month, the three learning weeks
included) is a *false alarm*, counted per 100 scenario-weeks (200 scenarios x 30 days).

How
---
As ``bench/detect.py``: the simulator over a real socket on 127.0.0.1, a
:class:`~bench.detect.BenchClock`, cycles every ``poll_interval_s`` (300 s) driven through the
limiter without sleeping, every 900 s (so a month runs in minutes; the service lists every
10 to 60 s, so its delays are shorter by up to a cycle). The organization is a Free plan
with ``budget_share`` 0.05 (1 request a minute): the inventory (2 pages), the usage and a few
log reads per cycle; the silent checks use only the inventory and the usage already read.
(Few log reads means the idle check counts a busy webhook's runs as one per listing: its
learnt rate is lower than the truth, so this measures a slower detection than the service's.)

    python bench/silent.py            # 200 scenarios, 30 days (a few minutes)
    python bench/silent.py --quick    # 60 scenarios, 25 days, fewer injections
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.detect import TOKEN_ENV, BenchClock, drive, settled  # noqa: E402
from bench.stats import percentile  # noqa: E402
from watcher.config import Settings, load_config  # noqa: E402
from watcher.service import Watcher  # noqa: E402
from watcher.simulator import World, create_app  # noqa: E402
from watcher.simulator.world import rhythm_factor  # noqa: E402
from watcher.store import Store  # noqa: E402

DAY = 86400.0
# Monday 2026-09-07 00:00 UTC: the month starts on a week's first day.
MONTH_START = datetime(2026, 9, 7, tzinfo=UTC).timestamp()
KINDS = ("scenario_overdue", "scenario_idle", "volume_anomaly")
# A failure counts as caught if its event opens before its end plus this.
SLACK_S = 3600.0


@dataclass(frozen=True)
class Plan:
    """How big a month: scenarios of each sort, days, failures injected of each kind."""

    key: str
    days: int
    scheduled: int
    daily: int
    weekly: int
    monthly: int
    webhooks: int
    on_demand: int
    stalls: int
    stops: int
    drops: int
    poll_interval_s: float = 900.0

    @property
    def scenarios(self) -> int:
        return self.scheduled + self.daily + self.weekly + self.monthly + self.webhooks + self.on_demand


FULL = Plan("full", 30, 90, 25, 6, 4, 65, 10, stalls=10, stops=10, drops=8)
QUICK = Plan("quick", 25, 24, 8, 2, 2, 20, 4, stalls=4, stops=4, drops=3)


@dataclass
class Injection:
    """One silent failure: ``kind`` expected for ``scenario_id`` from ``start`` (the delay's
    origin) while ``[on, off)`` the knob is set; ``usual_gap_s`` its scale."""

    kind: str
    scenario_id: int
    name: str
    on: float
    off: float
    knob: dict[str, Any]
    start: float = 0.0
    usual_gap_s: float = 0.0
    detected_at: float | None = None


@dataclass
class Result:
    plan: Plan
    seed: int
    injections: list[Injection]
    false_alarms: list[dict[str, Any]]
    requests: int
    wall_s: float
    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_world(plan: Plan, seed: int, clock: BenchClock) -> tuple[World, int, str, list[Injection]]:
    """The organization and the failures to inject; deterministic for a seed."""
    world = World(seed=seed, clock=clock)
    org = world.add_organization("Silent Agency", plan="free", operations_limit=10**9)
    teams = [world.add_team(org.id, name=f"Team {i + 1}") for i in range(2)]
    rng = random.Random(f"{seed}:silent:{plan.key}")
    t0 = clock.time()
    n = 0
    sorts: dict[str, list[int]] = {"scheduled": [], "daily": [], "weekly": [], "webhook": []}

    def team() -> int:
        return teams[n % 2].id

    for _ in range(plan.scheduled):
        interval = rng.choice([900, 1800, 3600, 7200, 14400])
        sc = world.add_scenario(team(), name=f"Sync {n:03d}", interval_s=interval, operations_per_run=rng.randint(2, 12), check_run_rate=rng.choice([0.0, 0.1, 0.5]), max_errors=0, first_run_at=t0 + rng.uniform(0, interval))
        sorts["scheduled"].append(sc.id)
        n += 1
    for kind, count, period in (("daily", plan.daily, DAY), ("weekly", plan.weekly, 7 * DAY), ("monthly", plan.monthly, 30 * DAY)):
        for _ in range(count):
            sc = world.add_scenario(team(), name=f"{kind.title()} {n:03d}", interval_s=period, schedule=kind, operations_per_run=rng.randint(20, 200), max_errors=0, first_run_at=t0 + rng.uniform(0, period))
            sorts.setdefault(kind, []).append(sc.id)
            n += 1
    for _ in range(plan.webhooks):
        gap = rng.choice([120, 300, 600, 1800, 3600, 14400])
        sc = world.add_scenario(team(), name=f"Hook {n:03d}", webhook=True, interval_s=gap, rhythm=True, operations_per_run=rng.randint(2, 6), max_errors=0)
        world.add_hook(sc.team_id, scenario_id=sc.id, queue_limit=10_000)
        sorts["webhook"].append(sc.id)
        n += 1
    for _ in range(plan.on_demand):
        world.add_scenario(team(), name=f"By hand {n:03d}", schedule="on-demand")
        n += 1

    # Failures, in the last part of the month (after three weeks of history).
    lo, hi = t0 + 21 * DAY, t0 + (plan.days - 2.5) * DAY
    injections: list[Injection] = []
    stallable = rng.sample(sorts["scheduled"], k=min(len(sorts["scheduled"]), plan.stalls - 2)) + sorts["daily"][:1] + sorts["weekly"][:1]
    for sid in stallable[: plan.stalls]:
        sc = world.scenarios[sid]
        # Set two cycles before one of its runs (first_run_at + k x interval), so a run is
        # missed (knobs are set between cycles); the delay runs from the first run missed.
        first, period = float(sc.next_run_at or t0), sc.interval_s
        due = first + math.ceil((rng.uniform(lo, hi) - first) / period) * period
        on = due - 2 * plan.poll_interval_s
        injections.append(Injection("scenario_overdue", sid, sc.name, on, due + max(12 * 3600, 2 * period), {"stalled": True}, usual_gap_s=period))
    busy_hooks = [sid for sid in sorts["webhook"] if world.scenarios[sid].interval_s <= 1800]
    for sid in rng.sample(busy_hooks, k=min(len(busy_hooks), plan.stops)):
        day = math.floor(rng.uniform(lo, hi) / DAY) * DAY
        while datetime.fromtimestamp(day, UTC).weekday() >= 5:
            day += DAY
        on = day + rng.uniform(9, 15) * 3600
        sc = world.scenarios[sid]
        injections.append(Injection("scenario_idle", sid, sc.name, on, on + DAY, {"traffic": 0.0}, start=on, usual_gap_s=sc.interval_s / rhythm_factor(on)))
    # Busy scenarios whose runs use enough operations for a tenth of them to be a drop of 80 %
    # or more (a run costs at least one operation, a check run one).
    busy = [
        sid for sid in sorts["scheduled"]
        if world.scenarios[sid].interval_s <= 3600 and world.scenarios[sid].operations_per_run >= 6
        and world.scenarios[sid].check_run_rate <= 0.2 and sid not in stallable
    ]
    for sid in rng.sample(busy, k=min(len(busy), plan.drops)):
        on = math.floor(rng.uniform(lo, hi - DAY) / DAY) * DAY
        sc = world.scenarios[sid]
        injections.append(Injection("volume_anomaly", sid, sc.name, on, on + 2 * DAY, {"volume": 0.1}, start=on, usual_gap_s=DAY))
    return world, org.id, world.add_token([org.id], name="makewatch-bench"), injections


def bench_settings(workdir: Path, base_url: str, org_id: int, token: str, poll_interval_s: float) -> Settings:
    cfg = workdir / "makewatch.toml"
    cfg.write_text(
        f'[[organizations]]\nname = "Silent Agency"\nbase_url = {json.dumps(base_url)}\n'
        f'organization_id = {org_id}\ntoken_env = "{TOKEN_ENV}"\nplan = "free"\nbudget_share = 0.05\n\n'
        f"[state]\ndb_path = {json.dumps(str(workdir / 'state.db'))}\n\n"
        f"[polling]\npoll_interval_s = {poll_interval_s!r}\nmin_poll_interval_s = {poll_interval_s!r}\n"
        "usage_interval_s = 900.0\n"
    )
    return load_config(cfg, env={TOKEN_ENV: token})


async def run(plan: Plan, seed: int) -> Result:
    """The month: cycles, the knobs set and cleared at their times, events read back."""
    wall = time.perf_counter()
    clock = BenchClock(MONTH_START)
    world, org_id, token, injections = build_world(plan, seed, clock)
    runner = web.AppRunner(create_app(world), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v2"
    # Knob changes in time order: (time, injection, set or clear).
    changes = sorted([(i.on, n, True) for n, i in enumerate(injections)] + [(i.off, n, False) for n, i in enumerate(injections)])
    with tempfile.TemporaryDirectory(prefix="makewatch-silent-") as tmp:
        settings = bench_settings(Path(tmp), base_url, org_id, token, plan.poll_interval_s)
        session = aiohttp.ClientSession()
        store = await asyncio.to_thread(Store.open, settings.state.db_path)
        watcher = Watcher(settings, store, session, clock)
        client = watcher.pollers[0].client
        try:
            end = MONTH_START + plan.days * DAY
            next_start = MONTH_START
            while next_start < end:
                while changes and changes[0][0] <= next_start:
                    at, n, on = changes.pop(0)
                    clock.set(max(at, clock.time()))
                    inj = injections[n]
                    if on:
                        world.set_behaviour(inj.scenario_id, **inj.knob)
                        # The delay's origin: the first run that will not happen, or now.
                        nxt = world.scenarios[inj.scenario_id].next_run_at
                        inj.start = float(nxt) if inj.kind == "scenario_overdue" and nxt else max(inj.start, clock.time())
                    else:
                        world.set_behaviour(inj.scenario_id, **{k: (False if k == "stalled" else 1.0) for k in inj.knob})
                clock.set(max(next_start, clock.time()))
                started = clock.time()
                (report,) = await drive(clock, watcher.poll_once(), lambda: settled(world, client))
                if not report.ok:
                    raise RuntimeError(f"makewatch cycle failed: {report.error}")
                next_start = started + plan.poll_interval_s
            events = await store.read(
                lambda db: [dict(r) for r in db.query("SELECT kind, scenario_id, detected_at, payload_json FROM events WHERE kind IN (?, ?, ?) ORDER BY id", list(KINDS))]
            )
        finally:
            await watcher.aclose()
            await session.close()
            await runner.cleanup()
            await store.aclose()
    false_alarms = score(injections, events)
    result = Result(plan, seed, injections, false_alarms, len(world.requests), time.perf_counter() - wall)
    result.by_kind = summarise(result)
    return result


def score(injections: list[Injection], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark each injection's detection; return the opening events no injection explains.

    An event of another kind for a scenario while it had an injected failure (a stopped
    webhook's next day is also a volume drop) is explained, not a false alarm; the
    organization's own volume is judged against nothing injected, so any of its anomalies
    counts as false."""
    false = []
    for e in events:
        payload = json.loads(e["payload_json"] or "{}")
        if payload.get("recovered"):
            continue
        during = [i for i in injections if i.scenario_id == e["scenario_id"] and i.on <= e["detected_at"] <= i.off + DAY]
        match = next((i for i in during if i.kind == e["kind"] and e["detected_at"] <= i.off + SLACK_S), None)
        if match is not None and match.detected_at is None:
            match.detected_at = e["detected_at"]
        elif not during:
            false.append({"kind": e["kind"], "scenario_id": e["scenario_id"], "at": e["detected_at"]})
    return false


def summarise(res: Result) -> dict[str, dict[str, Any]]:
    scenario_weeks = res.plan.scenarios * res.plan.days / 7
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        mine = [i for i in res.injections if i.kind == kind]
        delays = [i.detected_at - i.start for i in mine if i.detected_at is not None]
        ratios = [(i.detected_at - i.start) / i.usual_gap_s for i in mine if i.detected_at is not None]
        false = [f for f in res.false_alarms if f["kind"] == kind]
        out[kind] = {
            "injected": len(mine),
            "caught": len(delays),
            "delay_p50_s": percentile(delays, 50) if delays else None,
            "delay_max_s": max(delays) if delays else None,
            "delay_over_gap_p50": percentile(ratios, 50) if ratios else None,
            "false_alarms": len(false),
            "false_per_100_scenario_weeks": round(100 * len(false) / scenario_weeks, 2),
        }
    return out


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 3600:.1f} h" if x >= 5400 else f"{x / 60:.0f} min"


def render(res: Result, command: str) -> str:
    p = res.plan
    lines = [
        f"$ {command}",
        f"{p.scenarios} scenarios ({p.scheduled} every 15 min to 4 h, {p.daily} daily, {p.weekly} weekly, "
        f"{p.monthly} monthly, {p.webhooks} webhooks with a weekly rhythm, {p.on_demand} on demand), "
        f"{p.days} days, a cycle every {p.poll_interval_s:.0f} s, seed {res.seed}; "
        f"{res.requests:,} API requests; {res.wall_s:.0f} s of real time",
        "",
        f"{'kind':<18}{'injected':>9}{'caught':>8}{'delay p50':>11}{'delay max':>11}{'p50 / gap':>11}{'false':>7}{'per 100 sc-wk':>15}",
    ]
    for kind, k in res.by_kind.items():
        ratio = "-" if k["delay_over_gap_p50"] is None else f"{k['delay_over_gap_p50']:.2f}x"
        lines.append(
            f"{kind:<18}{k['injected']:>9}{k['caught']:>8}{fmt_s(k['delay_p50_s']):>11}{fmt_s(k['delay_max_s']):>11}"
            f"{ratio:>11}{k['false_alarms']:>7}{k['false_per_100_scenario_weeks']:>15}"
        )
    missed = [i for i in res.injections if i.detected_at is None]
    if missed:
        lines += ["", "missed: " + "; ".join(f"{i.kind} {i.name}" for i in missed)]
    if res.false_alarms:
        lines += ["", "false alarms: " + "; ".join(f"{f['kind']} scenario {f['scenario_id']} at day {(f['at'] - MONTH_START) / DAY:.1f}" for f in res.false_alarms)]
    return "\n".join(lines)


def to_json(res: Result) -> dict[str, Any]:
    return {
        "plan": res.plan.key,
        "seed": res.seed,
        "scenarios": res.plan.scenarios,
        "days": res.plan.days,
        "requests": res.requests,
        "by_kind": res.by_kind,
        "injections": [
            {"kind": i.kind, "scenario_id": i.scenario_id, "start": i.start, "detected_at": i.detected_at, "usual_gap_s": i.usual_gap_s}
            for i in res.injections
        ],
        "false_alarms": res.false_alarms,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="60 scenarios, 25 days")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    res = asyncio.run(run(plan, args.seed))
    command = "python bench/silent.py" + (" --quick" if args.quick else "") + (f" --seed {args.seed}" if args.seed != 1 else "")
    print(render(res, command))
    if args.json:
        args.json.write_text(json.dumps(to_json(res), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
