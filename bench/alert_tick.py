"""The alert tick's CPU as open alerts accumulate, and the state file's size over 90 days.

What is measured
----------------
1. **Tick CPU** (issue 16, "cost follows change"). For N open alerts (1k, 10k, 30k; --quick:
   1k, 3k, 10k) a state file is built through the real pipeline from execution errors of the
   bench's error mix (one failing scenario per alert, 30 % of them failing again 1 to 4
   times, half of those after the first notice, so they wait for their repeat interval),
   every first notice queued and marked sent. Then ``alerts.pipeline.process_events`` is
   timed in CPU seconds (``time.process_time``: every thread of the process, the store's
   writer included): an *idle* tick (no new event, no timer due; the median of 40) and a
   tick with 5 new events (3 repeats of open alerts, 1 new alert, 1 recovery; the mean of 10). Flat means the idle tick costs
   about the same at 30k open alerts as at 1k.
2. **Size** (90-day retention). One organization of the bench's error mix (bench/detect.py's
   world: 60 % of the scenarios fail 0.5 % of their runs, 30 % 3 %, 10 % 10 %, mean 2.2 %,
   every scenario runs every 15 minutes, errors drawn from the simulator's ``ERRORS``) runs
   for a few simulated days through the real pipeline: the poller's events
   (``watcher.events.execution_event`` / ``recovered_event``, as if every run were read
   right after it ended: an error, and a success after an error), a tick every 5 minutes
   and 35 s later (the group wait is over), every notice delivered at once on one e-mail
   channel (an outbox row marked sent and one ``deliveries`` row, as ``alerts.delivery``
   writes them). After ``VACUUM``, ``dbstat`` gives the bytes of each table with its
   indexes; bytes per event, per outbox row, per delivery and per alert row, times 90 days
   of the rates seen (alerts: the (scenario, error name) pairs 90 days produce, computed
   from the mix), give the projection for 10,000 scenarios.

    python bench/alert_tick.py            # about 2 minutes
    python bench/alert_tick.py --quick    # under 30 s (tests/test_bench.py runs it)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alerts.pipeline import process_events  # noqa: E402
from alerts.policy import AlertsSettings, Policy  # noqa: E402
from bench.detect import ERROR_PROFILES  # noqa: E402
from watcher import events as ev  # noqa: E402
from watcher import store as st  # noqa: E402
from watcher.make.models import LogEntry, Scenario  # noqa: E402
from watcher.simulator.world import ERRORS  # noqa: E402
from watcher.store import Store  # noqa: E402

START = 1_790_000_000.0  # 2026-09-21T14:13:20Z, the tests' epoch
ORG_ID, ORG_NAME, UI = 7001, "Bench Agency", "https://eu1.make.com"
INTERVAL_S = 900.0  # every scenario runs every 15 minutes
TICK_S = 300.0  # the size run decides every 5 minutes (and again when the group wait is over)
RETENTION_DAYS = 90
COMPACT_AFTER_DAYS = 14  # alerts.service.COMPACT_AFTER_S
COMPACT_SENT_AFTER_DAYS = 1  # alerts.service.COMPACT_SENT_AFTER_S
ORG_SCENARIOS = 10_000
POLICY = Policy(alerts=AlertsSettings(default_channels=("ops-mail",)))


# --------------------------------------------------------------------------------------------
# The error mix


def error_rate(i: int, seed: int) -> float:
    """Scenario ``i``'s share of failed runs, drawn from ERROR_PROFILES (mean ~2.2 %)."""
    u = random.Random(f"{seed}:rate:{i}").random()
    for share, rate in ERROR_PROFILES:
        if u < share:
            return rate
        u -= share
    return ERROR_PROFILES[-1][1]


def scenario(i: int) -> Scenario:
    return Scenario.parse(
        {"id": 100_000 + i, "name": f"Scenario {i + 1:05d}", "teamId": 11 + i % 2, "isActive": True}
    )


def run_event(sc: Scenario, t: float, status: int, rng: random.Random) -> LogEntry:
    """A log entry as Make (and the simulator) lists it."""
    ms = int(t * 1000)
    eid = f"{rng.getrandbits(128):032x}"
    body: dict[str, Any] = {
        "imtId": f"{ms}_{eid}",
        "id": eid,
        "type": "auto",
        "scenarioId": sc.id,
        "scenarioName": sc.name,
        "organizationId": ORG_ID,
        "teamId": sc.team_id,
        "timestamp": datetime.fromtimestamp(t, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "duration": rng.randint(60, 3000),
        "operations": rng.randint(1, 7),
        "transfer": rng.randint(0, 9000),
        "centicredits": rng.randint(1, 7) * 100,
        "status": status,
    }
    if status == 3:
        name, message = rng.choice(ERRORS)
        body["error"] = {"name": name, "message": message}
    return LogEntry.parse(body)


def error_row(sc: Scenario, t: float, rng: random.Random, detected_at: float) -> dict[str, Any]:
    event = ev.execution_event(ORG_ID, ORG_NAME, UI, sc, run_event(sc, t, 3, rng))
    assert event is not None
    return event.row(detected_at)


def recovered_row(sc: Scenario, t: float, rng: random.Random, detected_at: float) -> dict[str, Any]:
    return ev.recovered_event(ORG_ID, ORG_NAME, UI, sc, run_event(sc, t, 1, rng)).row(detected_at)


# --------------------------------------------------------------------------------------------
# Shared steps


async def insert(store: Store, rows: Sequence[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 2000):
        chunk = rows[i : i + 2000]
        await store.write(lambda db, chunk=chunk: st.insert_events(db, chunk))


def deliver_all(db: Any, now: float) -> int:
    """Every pending notice sent at once, recorded as alerts.delivery records a success."""
    ids = [r[0] for r in db.execute("SELECT id FROM outbox WHERE status = 'pending'").fetchall()]
    db.execute(
        "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = 1 WHERE status = 'pending'",
        [now],
    )
    db["deliveries"].insert_all(
        {"outbox_id": i, "attempted_at": now, "ok": 1, "error": None} for i in ids
    )
    return len(ids)


# --------------------------------------------------------------------------------------------
# 1. Tick CPU


@dataclass(frozen=True)
class TickResult:
    open_alerts: int
    build_s: float
    idle_cpu_ms: float
    busy_cpu_ms: float
    idle_ticks: int
    busy_ticks: int


async def tick_bench(
    n: int, directory: Path, seed: int, idle_ticks: int = 40, busy_ticks: int = 10
) -> TickResult:
    rng = random.Random(f"{seed}:tick:{n}")
    built = time.perf_counter()
    store = Store.open(directory / f"tick-{n}.db")
    try:
        scs = [scenario(i) for i in range(n)]
        t0 = START
        rows = [error_row(sc, t0 - rng.uniform(0, 600), rng, t0) for sc in scs]
        again = [sc for sc in scs if rng.random() < 0.3]
        early, late = again[: len(again) // 2], again[len(again) // 2 :]
        # The same failure again (same error name: the same alert), before the first notice...
        rows += [_again(r, rng, t0) for r in _rows_of(rows, early, rng)]
        await insert(store, rows)
        await process_events(store, POLICY, t0)
        await process_events(store, POLICY, t0 + 31)  # group wait over: every first notice
        await store.write(lambda db: deliver_all(db, t0 + 32))
        # ... and after it: new occurrences that wait for the repeat interval.
        await insert(store, [_again(r, rng, t0 + 60) for r in _rows_of(rows, late, rng)])
        await process_events(store, POLICY, t0 + 60)
        opened = await store.read(lambda db: db["alerts"].count_where("state != 'resolved'"))
        assert opened == n, opened
        built = time.perf_counter() - built

        now = t0 + 120
        idles = []
        for _ in range(idle_ticks):
            now += 5
            cpu = time.process_time()
            report = await process_events(store, POLICY, now)
            idles.append(time.process_time() - cpu)
            assert report.events == 0 and report.notifications == 0
        idle = statistics.median(idles)  # the median: a shared machine adds outliers

        busy = 0.0
        for k in range(busy_ticks):
            now += 5
            picks = rng.sample(scs, 4)
            fresh = scenario(n + k)
            first = {r["scenario_id"]: r for r in rows}
            news = [_again(first[sc.id], rng, now) for sc in picks[:3]]
            news += [
                error_row(fresh, now - 1, rng, now),
                recovered_row(picks[3], now - 1, rng, now),
            ]
            await insert(store, news)
            cpu = time.process_time()
            report = await process_events(store, POLICY, now)
            busy += time.process_time() - cpu
            assert report.events == 5
        return TickResult(n, built, idle * 1000, busy / busy_ticks * 1000, idle_ticks, busy_ticks)
    finally:
        await store.aclose()


def _rows_of(
    rows: list[dict[str, Any]], scs: Sequence[Scenario], rng: random.Random
) -> list[dict[str, Any]]:
    first = {r["scenario_id"]: r for r in rows}
    return [first[sc.id] for sc in scs for _ in range(rng.randint(1, 2))]


def _again(row: dict[str, Any], rng: random.Random, detected_at: float) -> dict[str, Any]:
    """Another failure of the same scenario with the same error (a new execution)."""
    eid = f"{rng.getrandbits(128):032x}"
    payload = dict(row["payload"])
    payload.update(
        execution_id=eid,
        imt_id=f"{int(detected_at * 1000)}_{eid}",
        duration_ms=rng.randint(60, 3000),
    )
    payload["run_url"] = payload["run_url"].rsplit("/", 1)[0] + f"/{eid}?showCheckRuns=true"
    kind, org, sid, _ = row["key"].split(":")
    return row | {
        "key": f"{kind}:{org}:{sid}:{eid}",
        "occurred_at": detected_at - 1,
        "detected_at": detected_at,
        "payload": payload,
    }


# --------------------------------------------------------------------------------------------
# 2. Size over 90 days


@dataclass(frozen=True)
class SizeResult:
    scenarios: int
    days: float
    read_every_s: float
    rows: dict[str, int]
    full: dict[str, int]  # bytes by table (with its indexes), as written
    compacted: dict[str, int]  # the same rows once compact_history went over them
    errors: int
    kept: dict[str, int]  # rows left by compact_history

    def per_row(self, table: str, sizes: dict[str, int]) -> float:
        return sizes.get(table, 0) / max(1, self.rows.get(table, 0))

    def projection(self, seed: int) -> dict[str, tuple[float, float]]:
        """Table → (rows, bytes) for ORG_SCENARIOS scenarios at RETENTION_DAYS: the last
        COMPACT_AFTER_DAYS of events (COMPACT_SENT_AFTER_DAYS of notices) as written, the
        older days compacted; alerts: one row
        per (scenario, error name) the mix produces in that time."""
        per_day = ORG_SCENARIOS / self.scenarios / self.days
        out = {}
        for t in ("outbox", "deliveries"):
            rows = self.rows[t] * per_day
            full, small = self.per_row(t, self.full), self.per_row(t, self.compacted)
            recent = COMPACT_SENT_AFTER_DAYS if t == "outbox" else RETENTION_DAYS
            out[t] = (
                rows * RETENTION_DAYS,
                rows * (recent * full + (RETENTION_DAYS - recent) * small),
            )
        # Events: the last COMPACT_AFTER_DAYS whole; of the older ones, one error per scenario
        # and error name (as many as the alerts those days make), at its compacted size.
        rows = self.rows["events"] * per_day * COMPACT_AFTER_DAYS
        old = expected_alerts(ORG_SCENARIOS, RETENTION_DAYS - COMPACT_AFTER_DAYS, seed)
        if self.kept["events"] == self.rows["events"]:  # nothing compacts (before issue 16)
            old = self.rows["events"] * per_day * (RETENTION_DAYS - COMPACT_AFTER_DAYS)
        kept = self.compacted.get("events", 0) / max(1, self.kept["events"])
        out["events"] = (rows + old, rows * self.per_row("events", self.full) + old * kept)
        alerts = expected_alerts(ORG_SCENARIOS, RETENTION_DAYS, seed)
        out["alerts"] = (alerts, alerts * self.per_row("alerts", self.full))
        return out


def expected_alerts(scenarios: int, days: float, seed: int) -> float:
    """Alert rows (one per scenario and error name: resolved ones re-open) ``days`` of the mix
    leave behind: sum over scenarios and error names of P(at least one such error)."""
    runs = days * 86400 / INTERVAL_S
    names = Counter(name for name, _ in ERRORS)
    total = 0.0
    for i in range(scenarios):
        p = error_rate(i, seed)
        for count in names.values():
            q = p * count / len(ERRORS)
            total += 1 - (1 - q) ** runs
    return total


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes of each table with its indexes (``dbstat``), after VACUUM."""
    con = sqlite3.connect(path)
    try:
        con.execute("VACUUM")
        owner = dict(con.execute("SELECT name, tbl_name FROM sqlite_master"))
        out: Counter[str] = Counter()
        for name, size in con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            out[owner.get(name, name)] += size
        return dict(out)
    finally:
        con.close()


async def size_bench(
    scenarios: int, days: float, directory: Path, seed: int, read_every_s: float
) -> SizeResult:
    """The error mix through the real pipeline; each scenario's logs read every
    ``read_every_s`` (its runs since the last read become events then, as the poller makes
    them: an error per failed run, a recovery per success that follows an error)."""
    path = directory / "size.db"
    store = Store.open(path)
    try:
        scs = [scenario(i) for i in range(scenarios)]
        rates = [error_rate(i, seed) for i in range(scenarios)]
        offsets = [
            random.Random(f"{seed}:offset:{i}").uniform(0, INTERVAL_S) for i in range(scenarios)
        ]
        reads = [
            random.Random(f"{seed}:read:{i}").uniform(0, read_every_s) for i in range(scenarios)
        ]
        next_run = [START + o for o in offsets]
        next_read = [START + r for r in reads]
        failing = [False] * scenarios
        end = START + days * 86400
        now, errors = START, 0
        while now < end:
            now += TICK_S
            rows = []
            for i, sc in enumerate(scs):
                if next_read[i] > now:
                    continue
                while next_run[i] <= next_read[i]:
                    t = next_run[i]
                    rng = random.Random(f"{seed}:run:{i}:{t:.3f}")
                    if rng.random() < rates[i]:
                        rows.append(error_row(sc, t, rng, now))
                        failing[i] = True
                        errors += 1
                    elif failing[i]:
                        rows.append(recovered_row(sc, t, rng, now))
                        failing[i] = False
                    next_run[i] += INTERVAL_S
                next_read[i] += read_every_s
            await insert(store, rows)
            await process_events(store, POLICY, now)
            await process_events(store, POLICY, now + 35)  # the group wait is over
            await store.write(lambda db, at=now + 36: deliver_all(db, at))
        counts = await store.read(
            lambda db: {t: db[t].count for t in ("events", "alerts", "outbox", "deliveries")}
        )
    finally:
        await store.aclose()
    full = table_bytes(path)
    compacted, kept = full, counts
    compact = getattr(st, "compact_history", None)  # (absent before issue 16: nothing shrinks)
    if compact is not None:
        with Store.open(path) as again:
            again.write_sync(lambda db: compact(db, end + 3600))
            kept = again.read_sync(lambda db: {t: db[t].count for t in counts})
        compacted = table_bytes(path)
    return SizeResult(scenarios, days, read_every_s, counts, full, compacted, errors, kept)


# --------------------------------------------------------------------------------------------
# Report


def print_ticks(results: Sequence[TickResult], flush: bool = False) -> None:
    print("Alert tick CPU (alerts.pipeline.process_events, time.process_time, all threads)")
    print(f"{'open alerts':>12} {'build s':>8} {'idle tick ms':>13} {'5-event tick ms':>16}")
    for r in results:
        print(
            f"{r.open_alerts:>12,} {r.build_s:>8.1f} {r.idle_cpu_ms:>13.2f} {r.busy_cpu_ms:>16.2f}"
        )
    base = results[0]
    top = results[-1]
    print(
        f"idle tick at {top.open_alerts:,} vs {base.open_alerts:,} open alerts: "
        f"{top.idle_cpu_ms / base.idle_cpu_ms:.2f}x (target: within 1.5x)",
        flush=flush,
    )


def print_size(r: SizeResult, seed: int) -> None:
    print()
    print(
        f"State file size: {r.scenarios:,} scenarios of the error mix, {r.days:g} simulated days, "
        f"logs read every {r.read_every_s / 60:g} min"
    )
    rows = ", ".join(f"{t} {r.rows[t]:,}" for t in ("events", "alerts", "outbox", "deliveries"))
    print(f"  {r.errors:,} failed runs; rows: {rows}")
    print(f"{'table':>12} {'B/row':>7} {'compacted':>10} {'rows at 90 d':>14} {'MB at 90 d':>11}")
    proj = r.projection(seed)
    for t, (rows_90, bytes_90) in proj.items():
        small = r.compacted.get(t, 0) / max(1, r.kept[t])
        print(
            f"{t:>12} {r.per_row(t, r.full):>7.0f} {small:>10.0f} {rows_90:>14,.0f} {bytes_90 / 1e6:>11,.0f}"
        )
    total = sum(b for _, b in proj.values())
    errors_90 = r.errors * ORG_SCENARIOS / r.scenarios * RETENTION_DAYS / r.days
    print(
        f"projected for {ORG_SCENARIOS:,} scenarios at {RETENTION_DAYS}-day retention: "
        f"{total / 1e9:.2f} GB ({total / errors_90:,.0f} bytes per failed run; target: under 1 GB)"
    )


async def main_async(
    quick: bool, seed: int, read_every_s: float = 3600.0, only: str | None = None
) -> tuple[list[TickResult], SizeResult | None]:
    sizes = (1000, 3000) if quick else (1000, 10_000, 30_000)
    with tempfile.TemporaryDirectory(prefix="makewatch-alert-tick-") as tmp:
        ticks = []
        if only != "size":
            ticks = [await tick_bench(n, Path(tmp), seed) for n in sizes]
            print_ticks(ticks, flush=True)
        if only == "tick":
            return ticks, None
        size = await size_bench(
            200 if quick else 1000, 1.0 if quick else 3.0, Path(tmp), seed, read_every_s
        )
        print_size(size, seed)
    return ticks, size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, under 30 s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--read-every-min",
        type=float,
        default=60.0,
        help="how often each scenario's logs are read (size run)",
    )
    parser.add_argument("--only", choices=("tick", "size"), help="run one of the two parts")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.quick, args.seed, args.read_every_min * 60, args.only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
