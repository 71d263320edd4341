"""Replicas: several ``makewatch run`` on one PostgreSQL, killed and restarted at random.

Is every error told exactly once, how long does a takeover take, and does each
organization's API budget hold across takeovers? (issue 18, point 6)

What runs
---------
A PostgreSQL server: a throwaway one from tests/pg_fixture.py's :func:`start_pg` (initdb +
pg_ctl in /tmp), or ``--pg-url`` (a maintenance URL of an existing server); either way a
fresh database of its own, dropped at the end. In this process, on 127.0.0.1: the Make
simulator on **real time** (``ScaledClock(1)``) and the Slack stand-in. ``--replicas`` (3)
``makewatch run`` subprocesses (bench/e2e.py's :class:`~bench.e2e.Makewatch`), one config:
``--orgs`` (30) Core organizations (API limit 60/min, makewatch's budget 30/min at the
default ``budget_share`` 0.5), each with one background scenario (check runs on its
schedule, no errors) and three the script injects into; ``[state] url_env`` and
``lease_ttl_s = --ttl`` (10 s), ``poll_interval_s = 1`` (so every organization polls as fast
as its budget lets it: the budget is binding), ``group_wait_s = 1``, a Slack webhook as the
default channel.

Why real time, when bench/soak.py runs its simulator 10 times faster: the lease TTL is in
real seconds on the database server's clock, and makewatch's rate limiter counts real
seconds too. On a faster simulator clock Make's 60 s windows would last 6 real seconds, so
the busiest-minute figure (read from the simulator's request times) would measure a tenth
of a minute and the budget check would pass whatever makewatch did. soak.py needed the fast
clock because each restart there began with an empty limiter; here that is the point under
test: a replica taking an organization over seeds its limiter with the previous holder's
request times (watcher/replicas.py ``takeover_budget``), and must not overrun it.

The script: wait until every organization has finished a cycle (its baseline), then inject
errors all the time into random scenarios of random organizations, at random gaps of
``--gap`` (0.05-0.6 s), each with an error name of its own (as soak.py: an alert of its own,
owing exactly one notice). Meanwhile, at random moments (every 4-16 s; ``--quick`` 3-8 s),
a random live replica is stopped, never the last live one: SIGKILL, except ``--sigterms``
(2) of them, a SIGTERM (graceful handover) for comparison. Each is started again after a
random pause (1-20 s; ``--quick`` 1-8 s). A SIGKILL lands between sends, as in soak.py: the
Slack stand-in refuses (503, retried later) until every message it accepted is recorded as
sent in the database, then the kill lands (a kill between Slack's acceptance and the commit
repeats that message whatever makewatch does: bench/README.md, soak.py). ``--anywhere``
kills without waiting. After ``--duration`` s (180; ``--quick`` 20) the stops end, every
replica is up again, the injection stops, the replicas run until every error was told (at
most ``--drain`` s) and some seconds more (a duplicate would show then), then all get
SIGTERM.

Takeover time, per stop: from the signal until every lease the victim held (``org:<id>``
and ``alerts``; for a SIGKILL, the rows naming it as holder once it is dead; for a SIGTERM,
those it held just before) is held, unexpired, by a live replica, polling the ``leases``
table every 0.2 s (expiry on the server's clock). SIGKILLs and SIGTERMs separately.

Tally: per injected error, the top-level firing notices naming its execution id on Slack
(soak.py's :func:`~bench.soak.slack_firing`): *expected* (injected), *sent* (told at least
once), *duplicated* (each extra notice), *lost* (never told). ``execution_error`` events in
the store per execution id (exactly one each). From the simulator's request log: per
organization, the most requests in any 60 s window (sliding, over the whole run) against its
budget, the worst one and how many went over; 429s served.

Exit status 0 when nothing was lost or duplicated, every event is stored once, every
takeover finished within 60 s, no organization went over its budget and no 429 was served.

    python bench/replicas.py                 # 3 replicas, 30 organizations, 3 minutes (~4.5 min)
    python bench/replicas.py --quick         # 6 organizations, 20 s, TTL 5 s (about a minute)
    python bench/replicas.py --seed 2 --ttl 30 --duration 240 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench.e2e import Makewatch  # noqa: E402
from bench.soak import error_name, slack_firing  # noqa: E402
from bench.stats import max_in_window, percentile  # noqa: E402
from watcher.clock import ScaledClock  # noqa: E402
from watcher.config import budget_per_minute, load_config  # noqa: E402
from watcher.simulator import World, create_app  # noqa: E402
from watcher.testing import SlackState, create_slack_app  # noqa: E402
from watcher.testing.standins import serve_local  # noqa: E402

WEBHOOK_PATH = "T0REPL/B0REPL/replicasWebhookSecret0123456789"
TOKEN_ENV = "MAKEWATCH_REPLICAS_TOKEN"
URL_ENV = "MAKEWATCH_REPLICAS_STATE_URL"
TARGETS_PER_ORG = 3
TAKEOVER_LIMIT_S = 60.0  # issue 18: "takeover within a minute"
LEASE_POLL_S = 0.2
GATE_WAIT_S = 10.0  # at most this long for the last accepted message's "sent" to commit
SETTLE_S = 8.0  # after the last error was told: time for a duplicate to show up
DB_NOW = "extract(epoch FROM clock_timestamp())"


@dataclass(frozen=True)
class Options:
    replicas: int
    orgs: int
    duration_s: float
    ttl_s: float
    sigterms: int
    seed: int
    drain_s: float
    gap_s: tuple[float, float]
    stop_every_s: tuple[float, float]
    pause_s: tuple[float, float]
    settle_s: float = SETTLE_S
    anywhere: bool = False
    pg_url: str | None = None
    quiet: bool = False
    keep: Path | None = None


@dataclass
class Takeover:
    """One stop of a replica and how long its leases took to move."""

    signal: str  # "SIGKILL" or "SIGTERM"
    slot: int
    pid: int
    names: list[str]
    at: float  # monotonic, when the signal was sent
    took_s: float | None = None  # None: not done when the run stopped waiting
    exit: int | None = None


@dataclass
class OrgBudget:
    org_id: int
    name: str
    requests: int
    max_per_60s: int
    budget_per_minute: int
    status_429: int


@dataclass
class Bench:
    """Everything a run leaves behind, for the tally."""

    options: Options
    injected: list[str]
    slack: SlackState
    stored: Counter[str]
    takeovers: list[Takeover]
    budgets: list[OrgBudget]
    starts: int
    exits: list[int | None]
    kills_inside_send: int
    baseline_s: float
    run_s: float
    drained_s: float
    wall_s: float
    pg_version: str = ""
    span_s: float = 0.0  # from the first start to the last stop: what the budget figures cover
    log_tails: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# World and config


def build_world(orgs: int, seed: int, clock: ScaledClock) -> tuple[World, list[tuple[int, str]], str, list[int]]:
    """``orgs`` Core organizations, each with one background scenario and TARGETS_PER_ORG that
    only run when injected. Returns (world, [(org id, name)], one token for all, target ids)."""
    world = World(seed=seed, clock=clock)
    now = clock.time()
    made, targets = [], []
    for i in range(orgs):
        name = f"Replica Client {i + 1:02d}"
        org = world.add_organization(name, plan="core", operations_limit=10**12)
        team = world.add_team(org.id, name=f"Team {i + 1}")
        world.add_scenario(
            team.id, f"Background {i + 1:02d}", interval_s=60, check_run_rate=0.6, max_errors=0,
            first_run_at=now + 2 * i,
        )  # fmt: skip
        for j in range(TARGETS_PER_ORG):
            sc = world.add_scenario(team.id, f"Client {i + 1:02d} flow {j + 1}", max_errors=0, first_run_at=now + 10**9)
            targets.append(sc.id)
        made.append((org.id, name))
    return world, made, world.add_token([o for o, _ in made], name="makewatch-replicas"), targets


def write_config(
    workdir: Path, base_url: str, orgs: Sequence[tuple[int, str]], token: str, slack_url: str,
    state_url: str, ttl_s: float,
) -> tuple[Path, dict[str, str]]:  # fmt: skip
    env = {
        TOKEN_ENV: token,
        URL_ENV: state_url,
        "MAKEWATCH_REPLICAS_WEBHOOK": f"{slack_url}/webhook/{WEBHOOK_PATH}",
    }
    parts = [
        f'[[organizations]]\nname = "{name}"\nbase_url = {json.dumps(base_url)}\n'
        f'organization_id = {org_id}\ntoken_env = "{TOKEN_ENV}"\n'
        for org_id, name in orgs
    ]
    # Every organization polls as fast as its budget allows (poll_interval_s = 1): the budget binds.
    parts.append(
        f'[state]\nurl_env = "{URL_ENV}"\nlease_ttl_s = {ttl_s}\n'
        "[polling]\npoll_interval_s = 1.0\nmin_poll_interval_s = 1.0\n"
        '[web]\nlisten = "127.0.0.1:0"\n'
        '[alerts]\ngroup_wait_s = 1\ndefault_channels = ["ops-webhook"]\n'
        '[channels.ops-webhook]\ntype = "slack_webhook"\nwebhook_url_env = "MAKEWATCH_REPLICAS_WEBHOOK"\n'
    )
    path = workdir / "makewatch-replicas.toml"
    path.write_text("\n".join(parts))
    load_config(path, env=env)  # fail here, with the loader's message, not in the subprocesses
    return path, env


# --------------------------------------------------------------------------------------------
# The database: a server of our own or --pg-url, a fresh database on it


class Database:
    """A fresh database on a PostgreSQL server; the bench's own connection reads it."""

    def __init__(self, pg_url: str | None) -> None:
        self._given = pg_url
        self._server: Any = None
        self.base_url = ""
        self.url = ""
        self.name = "makewatch_replicas_" + uuid.uuid4().hex[:12]
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        if self._given is None:
            from pg_fixture import start_pg  # tests/pg_fixture.py: initdb + pg_ctl in /tmp

            self._server = await asyncio.to_thread(start_pg)
            self.base_url = self._server.base_url
        else:
            self.base_url = self._given
        async with await psycopg.AsyncConnection.connect(self.base_url, autocommit=True) as admin:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        self.url = self.base_url.rsplit("/", 1)[0] + "/" + self.name
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self.base_url and self.url:
            async with await psycopg.AsyncConnection.connect(self.base_url, autocommit=True) as admin:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)

    async def _has(self, table: str) -> bool:
        assert self.conn is not None
        cur = await self.conn.execute("SELECT to_regclass(%s)", (table,))
        return (await cur.fetchone())[0] is not None

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        assert self.conn is not None
        cur = await self.conn.execute(sql, params)
        return await cur.fetchall()

    async def polled(self) -> int:
        """Organizations with a finished cycle (their first is the baseline)."""
        if not await self._has("cycles"):
            return 0
        return (await self.rows("SELECT COUNT(DISTINCT org_id) FROM cycles WHERE ok = 1"))[0][0]

    async def leases(self) -> dict[str, tuple[int | None, bool]]:
        """Every lease: (the holder's pid, unexpired on the server's clock)."""
        if not await self._has("leases"):
            return {}
        rows = await self.rows(f"SELECT name, holder, expires_at > {DB_NOW} FROM leases")
        return {name: (holder_pid(holder), bool(live)) for name, holder, live in rows}

    async def recorded_sent(self) -> int:
        """Successful delivery attempts recorded (one per message recorded as sent)."""
        if not await self._has("deliveries"):
            return 0
        return (await self.rows("SELECT count(*) FROM deliveries WHERE ok = 1"))[0][0]

    async def stored_errors(self) -> Counter[str]:
        """``execution_error`` events in the store, per execution id."""
        rows = await self.rows("SELECT key FROM events WHERE kind = 'execution_error'")
        return Counter(key.rsplit(":", 1)[1] for (key,) in rows)


def holder_pid(holder: str | None) -> int | None:
    """The pid in a replica id ``host:pid:random`` (None when free or not of that form)."""
    try:
        return int((holder or "").rsplit(":", 2)[1])
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# The replicas


class Slot:
    """One replica's place: its process (bench/e2e.py's Makewatch) across restarts."""

    def __init__(self, i: int, config: Path, env: dict[str, str], log: Path) -> None:
        self.i = i
        self.mw = Makewatch(config, env, log)
        self.alive = False  # False from the moment a stop signal is sent

    @property
    def pid(self) -> int | None:
        return self.mw.proc.pid if self.mw.proc is not None else None

    async def start(self) -> None:
        await self.mw.start(time.time())
        self.alive = True


def webhooks_accepted(slack: SlackState) -> int:
    return sum(1 for r in slack.requests if r.method == "webhook" and r.status == 200)


async def kill_between_sends(slot: Slot, db: Database, slack: SlackState, unrecorded: int) -> bool:
    """SIGKILL ``slot`` while Slack refuses, once every message it accepted is recorded as
    sent (bench/soak.py's ``kill_between_sends``, on the shared database: only the replica
    holding ``alerts`` delivers, but which one that is can change at any tick). False if
    the commit did not come within GATE_WAIT_S: the kill then landed inside a send."""
    slack.down = True
    try:
        deadline = time.monotonic() + GATE_WAIT_S
        while webhooks_accepted(slack) - await db.recorded_sent() > unrecorded:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True
    finally:
        slot.alive = False
        await slot.mw.kill()
        slack.down = False


class LeaseWatch:
    """Polls the leases table every LEASE_POLL_S and closes each pending takeover once all
    its names are held, unexpired, by live replicas."""

    def __init__(self, db: Database, slots: Sequence[Slot]) -> None:
        self.db = db
        self.slots = slots
        self.pending: list[Takeover] = []
        self.last: dict[str, tuple[int | None, bool]] = {}
        self._none_pending = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            try:
                await asyncio.wait_for(stop.wait(), LEASE_POLL_S)
            except TimeoutError:
                pass

    async def poll(self) -> None:
        self.last = await self.db.leases()
        now = time.monotonic()
        live = {s.pid for s in self.slots if s.alive and s.pid is not None}
        for t in list(self.pending):
            if all((h := self.last.get(n)) and h[1] and h[0] in live for n in t.names):
                t.took_s = now - t.at
                self.pending.remove(t)
        if not self.pending:
            self._none_pending.set()

    async def settled(self, timeout_s: float) -> None:
        """Until no takeover is pending (at most ``timeout_s``)."""
        self._none_pending.clear()
        if self.pending:
            try:
                await asyncio.wait_for(self._none_pending.wait(), timeout_s)
            except TimeoutError:
                pass

    def held_by(self, pid: int) -> list[str]:
        return sorted(n for n, (p, _) in self.last.items() if p == pid)


# --------------------------------------------------------------------------------------------
# The run


def plan_stops(o: Options, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds after the baseline, signal) of every stop, drawn up front; ``o.sigterms`` of
    them (never the first) are SIGTERMs."""
    times, t = [], 0.0
    while True:
        t += rng.uniform(*o.stop_every_s)
        if t > o.duration_s:
            break
        times.append(t)
    graceful = set(rng.sample(range(1, len(times)), min(o.sigterms, max(0, len(times) - 1))))
    return [(at, "SIGTERM" if i in graceful else "SIGKILL") for i, at in enumerate(times)]


async def run_bench(o: Options) -> Bench:
    t_wall = time.perf_counter()
    rng = random.Random(f"replicas:{o.seed}")
    clock = ScaledClock(1.0)
    world, orgs, token, targets = build_world(o.orgs, o.seed, clock)
    slack = SlackState(webhooks={WEBHOOK_PATH: "C0WEBHOOK"})
    sim_runner, sim_port = await serve_local(create_app(world))
    slack_runner, slack_port = await serve_local(create_slack_app(slack))
    db = Database(o.pg_url)
    injected: list[str] = []
    takeovers: list[Takeover] = []
    inside_send, unrecorded = 0, 0

    def say(msg: str) -> None:
        if not o.quiet:
            print(f"[{time.perf_counter() - t_wall:6.1f} s] {msg}", file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="makewatch-replicas-"))
    slots: list[Slot] = []
    try:
        await db.open()
        pg_version = (await db.rows("SHOW server_version"))[0][0]
        say(f"PostgreSQL {pg_version}, database {db.name}")
        config, env = write_config(
            tmp, f"http://127.0.0.1:{sim_port}/api/v2", orgs, token, f"http://127.0.0.1:{slack_port}",
            db.url, o.ttl_s,
        )  # fmt: skip
        settings = load_config(config, env=env)
        slots = [Slot(i, config, env, tmp / f"replica-{i}.log") for i in range(o.replicas)]
        t_start = clock.time()
        for s in slots:
            await s.start()
        watch = LeaseWatch(db, slots)
        deadline = time.monotonic() + 120
        while await db.polled() < o.orgs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {await db.polled()} of {o.orgs} organizations polled within 120 s")
            await asyncio.sleep(0.2)
        baseline_s = time.perf_counter() - t_wall
        say(f"every organization polled once; injecting for {o.duration_s:g} s")

        stop_watch, stop_injecting = asyncio.Event(), asyncio.Event()
        watcher_task = asyncio.create_task(watch.run(stop_watch))

        async def inject() -> None:
            while not stop_injecting.is_set():
                n = len(injected)
                row = world.inject_run(
                    rng.choice(targets), status=3, error_name=error_name(n), error_message=f"replicas error {n}"
                )
                injected.append(row["id"])
                await asyncio.sleep(rng.uniform(*o.gap_s))

        restarts: set[asyncio.Task[None]] = set()

        async def restart(slot: Slot, after_s: float) -> None:
            await asyncio.sleep(after_s)
            await slot.start()
            say(f"replica {slot.i} restarted (pid {slot.pid})")

        injector = asyncio.create_task(inject())
        t_run, t_run_wall = time.monotonic(), time.time()
        try:
            for at, sig in plan_stops(o, rng):
                await asyncio.sleep(max(0.0, t_run + at - time.monotonic()))
                if injector.done():
                    injector.result()
                alive = [s for s in slots if s.alive]
                if len(alive) < 2:
                    say(f"{sig} skipped: only one replica alive")
                    continue
                slot = rng.choice(alive)
                pid = slot.pid
                assert pid is not None
                await watch.poll()
                t = Takeover(sig, slot.i, pid, watch.held_by(pid), time.monotonic())
                if sig == "SIGTERM":
                    slot.alive = False
                    t.at = time.monotonic()
                    await slot.mw.stop()
                else:
                    if o.anywhere:
                        t.at = time.monotonic()
                        slot.alive = False
                        await slot.mw.kill()
                    else:
                        await kill_between_sends(slot, db, slack, unrecorded)
                        t.at = time.monotonic()  # the kill landed as the gate closed
                    # Dead: what it left accepted but unrecorded is sent again.
                    left = webhooks_accepted(slack) - await db.recorded_sent()
                    inside_send += left > unrecorded
                    unrecorded = left
                    await watch.poll()
                    t.names = watch.held_by(pid)  # what still names it as holder, now it is dead
                t.exit = slot.mw.exits[-1]
                takeovers.append(t)
                if t.names:
                    watch.pending.append(t)
                pause = rng.uniform(*o.pause_s)
                say(
                    f"{sig} replica {slot.i} (pid {pid}, {len(t.names)} leases, exit {t.exit}); "
                    f"back in {pause:.1f} s; {len(injected)} errors injected"
                )
                task = asyncio.create_task(restart(slot, pause))
                restarts.add(task)
                task.add_done_callback(restarts.discard)
            await asyncio.sleep(max(0.0, t_run + o.duration_s - time.monotonic()))
        finally:
            stop_injecting.set()
            await injector
            await asyncio.gather(*restarts)
        run_s = time.monotonic() - t_run
        say(f"stops done; {len(injected)} errors injected; waiting for the last takeovers")
        await watch.settled(TAKEOVER_LIMIT_S + o.ttl_s)
        stop_watch.set()
        await watcher_task

        say(f"draining (at most {o.drain_s:g} s)")
        t_drain = time.perf_counter()
        settled_at: float | None = None
        while time.perf_counter() - t_drain < o.drain_s:
            await asyncio.sleep(0.5)
            seen = slack_firing(slack)
            if all(seen[e] for e in injected):
                settled_at = settled_at or time.perf_counter()
                if time.perf_counter() - settled_at >= o.settle_s:
                    break
        drained_s = time.perf_counter() - t_drain
        await asyncio.gather(*(s.mw.stop() for s in slots))
        t_end = clock.time()
        stored = await db.stored_errors()
        license_limit = {org_id: world.organizations[org_id].api_limit for org_id, _ in orgs}
        budgets = []
        for org in settings.organizations:
            reqs = [r for r in world.requests if r.org_id == org.organization_id and t_start <= r.t <= t_end]
            budgets.append(OrgBudget(
                org.organization_id, org.name, len(reqs), max_in_window([r.t for r in reqs]) if reqs else 0,
                budget_per_minute(org, license_limit[org.organization_id]),
                sum(1 for r in reqs if r.status == 429),
            ))  # fmt: skip
        logs = [(tmp / f"replica-{s.i}.log").read_text(errors="replace") for s in slots]
        if o.keep is not None:
            keep_artifacts(o.keep, tmp, slack, injected, world, takeovers, t_mono0=t_run, t_wall0=t_run_wall)
    finally:
        for s in slots:  # on an error above: no process left behind
            if s.mw.proc is not None:
                await s.mw.kill()
        await sim_runner.cleanup()
        await slack_runner.cleanup()
        await db.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return Bench(
        options=o, injected=injected, slack=slack, stored=stored, takeovers=takeovers, budgets=budgets,
        starts=sum(len(s.mw.starts) for s in slots), exits=[x for s in slots for x in s.mw.exits],
        kills_inside_send=inside_send, baseline_s=baseline_s, run_s=run_s, drained_s=drained_s,
        wall_s=time.perf_counter() - t_wall, pg_version=pg_version, span_s=t_end - t_start, log_tails=[log[-3000:] for log in logs],
    )  # fmt: skip


def keep_artifacts(
    where: Path, workdir: Path, slack: SlackState, injected: Sequence[str], world: World,
    takeovers: Sequence[Takeover], t_mono0: float, t_wall0: float,
) -> None:  # fmt: skip
    """Every replica's log, the config, the Slack requests, the injected execution ids, the
    simulator's request log and the stops (``at`` as wall-clock time), for a closer look."""
    where.mkdir(parents=True, exist_ok=True)
    for f in workdir.iterdir():
        if f.is_file():
            shutil.copy(f, where / f.name)
    requests = [{**vars(r), "body": r.body} for r in slack.requests]
    (where / "slack.json").write_text(json.dumps(requests, indent=1, default=str, ensure_ascii=False))
    (where / "injected.json").write_text(json.dumps(list(injected), indent=0))
    (where / "requests.json").write_text(json.dumps([asdict(r) for r in world.requests], indent=0))
    (where / "ledger.json").write_text(json.dumps(world.ledger_json(), indent=0))
    stops = [asdict(t) | {"at": t_wall0 + t.at - t_mono0} for t in takeovers]
    (where / "stops.json").write_text(json.dumps(stops, indent=1))


# --------------------------------------------------------------------------------------------
# Tally and report


@dataclass
class Tally:
    expected: int
    sent: int
    duplicated: int  # extra notices
    duplicated_ids: list[str]
    lost: list[str]
    stored_once: int
    stored_missing: int
    stored_twice: int
    takeover_s: dict[str, list[float]]  # per signal, the finished ones
    takeover_unfinished: int
    over_budget: list[OrgBudget]
    worst: OrgBudget | None
    status_429: int

    @property
    def ok(self) -> bool:
        finished = [x for xs in self.takeover_s.values() for x in xs]
        return (
            not self.lost and not self.duplicated and self.stored_once == self.expected
            and self.takeover_unfinished == 0 and max(finished, default=0.0) <= TAKEOVER_LIMIT_S
            and not self.over_budget and self.status_429 == 0
        )  # fmt: skip


def tally(b: Bench) -> Tally:
    seen = slack_firing(b.slack)
    takeover_s: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
    for t in b.takeovers:
        if t.names and t.took_s is not None:
            takeover_s[t.signal].append(t.took_s)
    return Tally(
        expected=len(b.injected),
        sent=sum(1 for e in b.injected if seen[e] >= 1),
        duplicated=sum(seen[e] - 1 for e in b.injected if seen[e] > 1),
        duplicated_ids=[e for e in b.injected if seen[e] > 1],
        lost=[e for e in b.injected if seen[e] == 0],
        stored_once=sum(1 for e in b.injected if b.stored[e] == 1),
        stored_missing=sum(1 for e in b.injected if b.stored[e] == 0),
        stored_twice=sum(1 for e in b.injected if b.stored[e] > 1),
        takeover_s={k: sorted(v) for k, v in takeover_s.items()},
        takeover_unfinished=sum(1 for t in b.takeovers if t.names and t.took_s is None),
        over_budget=[x for x in b.budgets if x.max_per_60s > x.budget_per_minute],
        worst=max(b.budgets, key=lambda x: x.max_per_60s / x.budget_per_minute, default=None),
        status_429=sum(x.status_429 for x in b.budgets),
    )


def fmt_takeovers(xs: Sequence[float]) -> str:
    if not xs:
        return "none"
    return f"p50 {percentile(xs, 50):.1f} s, max {max(xs):.1f} s (n {len(xs)})"


def render(b: Bench, t: Tally, command: str) -> str:
    o = b.options
    kills = [x for x in b.takeovers if x.signal == "SIGKILL"]
    terms = [x for x in b.takeovers if x.signal == "SIGTERM"]
    minutes = max(1e-9, b.span_s / 60)
    mean = sum(x.requests for x in b.budgets) / max(1, len(b.budgets)) / minutes
    lines = [
        f"command: {command}",
        "",
        f"seed {o.seed}; {o.replicas} replicas, {o.orgs} organizations (Core, budget "
        f"{b.budgets[0].budget_per_minute if b.budgets else '?'}/min each), PostgreSQL {b.pg_version}; "
        f"lease_ttl_s {o.ttl_s:g}; simulator on real time",
        f"  wall time {b.wall_s:.0f} s: baseline {b.baseline_s:.0f} s, chaos {b.run_s:.0f} s, "
        f"drain {b.drained_s:.0f} s; {b.starts} starts",
        f"  stops: SIGKILL {len(kills)} (exits {Counter(x.exit for x in kills).most_common()}; "
        + ("at random moments" if o.anywhere else "between sends")
        + f", {b.kills_inside_send} inside a send), SIGTERM {len(terms)} "
        f"(exits {Counter(x.exit for x in terms).most_common()})",
        f"  notices: expected {t.expected}, sent {t.sent}, duplicated {t.duplicated} "
        f"(errors told more than once: {len(t.duplicated_ids)}), lost {len(t.lost)}",
        f"  store: execution_error events once {t.stored_once}, missing {t.stored_missing}, "
        f"more than once {t.stored_twice}",
        f"  takeover after SIGKILL: {fmt_takeovers(t.takeover_s['SIGKILL'])}; "
        f"after SIGTERM: {fmt_takeovers(t.takeover_s['SIGTERM'])}; unfinished {t.takeover_unfinished}",
    ]
    if t.worst is not None:
        w = t.worst
        lines.append(
            f"  requests per organization: mean {mean:.1f}/min over {b.span_s:.0f} s; busiest 60 s: worst {w.name} "
            f"{w.max_per_60s} against a budget of {w.budget_per_minute}/min; over budget "
            f"{len(t.over_budget)} of {len(b.budgets)}; 429s {t.status_429}"
        )
    for x in t.over_budget[:10]:
        lines.append(f"  over budget: {x.name} {x.max_per_60s} in 60 s (budget {x.budget_per_minute})")
    for x in b.takeovers:
        if x.names and (x.took_s is None or x.took_s > TAKEOVER_LIMIT_S):
            lines.append(f"  slow takeover: {x.signal} replica {x.slot} pid {x.pid}, {x.names}")
    for e in t.lost[:10]:
        lines.append(f"  lost: {e}")
    for e in t.duplicated_ids[:10]:
        lines.append(f"  duplicated: {e}")
    lines.append(f"  verdict: {'ok' if t.ok else 'FAILED'}")
    return "\n".join(lines)


def to_json(b: Bench, t: Tally) -> dict[str, Any]:
    o = b.options
    return {
        "seed": o.seed, "replicas": o.replicas, "orgs": o.orgs, "ttl_s": o.ttl_s,
        "duration_s": o.duration_s, "anywhere": o.anywhere, "pg_version": b.pg_version,
        "sigkills": sum(1 for x in b.takeovers if x.signal == "SIGKILL"),
        "sigterms": sum(1 for x in b.takeovers if x.signal == "SIGTERM"),
        "starts": b.starts, "exits": b.exits, "kills_inside_send": b.kills_inside_send,
        "expected": t.expected, "sent": t.sent, "duplicated": t.duplicated, "lost": len(t.lost),
        "stored_once": t.stored_once, "stored_missing": t.stored_missing, "stored_twice": t.stored_twice,
        "takeover_s": {
            k: {"p50": percentile(v, 50) if v else None, "max": max(v, default=None), "all": v}
            for k, v in t.takeover_s.items()
        },
        "takeover_unfinished": t.takeover_unfinished,
        "takeovers": [asdict(x) | {"at": None} for x in b.takeovers],
        "organizations": [asdict(x) for x in b.budgets],
        "over_budget": len(t.over_budget),
        "worst_org": asdict(t.worst) if t.worst else None,
        "status_429": t.status_429,
        "ok": t.ok,
        "wall_s": b.wall_s, "span_s": b.span_s, "baseline_s": b.baseline_s, "run_s": b.run_s, "drain_s": b.drained_s,
    }  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="6 organizations, 20 s, TTL 5 s, shorter pauses")
    ap.add_argument("--replicas", type=int, default=3, help="makewatch run processes (default 3)")
    ap.add_argument("--orgs", type=int, help="organizations (default 30; --quick 6)")
    ap.add_argument("--duration", type=float, metavar="S", help="seconds of stops and injection (default 180; --quick 20)")
    ap.add_argument("--ttl", type=float, metavar="S", help="[state] lease_ttl_s (default 10; --quick 5)")
    ap.add_argument("--sigterms", type=int, help="how many stops are a SIGTERM (default 2; --quick 1)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the world, the errors and the stops (default 1)")
    ap.add_argument("--drain", type=float, metavar="S", help="at most this long for the last notices (default 120; --quick 45)")
    ap.add_argument("--pg-url", help="an existing server's maintenance URL (postgresql://user@host:port/postgres); "
                    "a database of its own is created there and dropped. Default: start one (tests/pg_fixture.py)")  # fmt: skip
    ap.add_argument("--anywhere", action="store_true", help="SIGKILL at random moments, inside a send too")
    ap.add_argument("--json", type=Path, help="also write the tally to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="keep the replicas' logs, the config, the Slack requests here")
    a = ap.parse_args(argv)
    if a.replicas < 2:
        ap.error("--replicas must be at least 2 (one is always kept alive)")
    q = a.quick
    o = Options(
        replicas=a.replicas,
        orgs=a.orgs if a.orgs is not None else (6 if q else 30),
        duration_s=a.duration if a.duration is not None else (20.0 if q else 180.0),
        ttl_s=a.ttl if a.ttl is not None else (5.0 if q else 10.0),
        sigterms=a.sigterms if a.sigterms is not None else (1 if q else 2),
        seed=a.seed,
        drain_s=a.drain if a.drain is not None else (45.0 if q else 120.0),
        gap_s=(0.05, 0.6),
        stop_every_s=(3.0, 8.0) if q else (4.0, 16.0),
        pause_s=(1.0, 8.0) if q else (1.0, 20.0),
        settle_s=5.0 if q else SETTLE_S,
        anywhere=a.anywhere,
        pg_url=a.pg_url,
        quiet=a.quiet,
        keep=a.keep,
    )
    return o, a


def main(argv: Sequence[str] | None = None) -> int:
    o, a = parse_args(argv)
    b = asyncio.run(run_bench(o))
    t = tally(b)
    command = (
        "python bench/replicas.py" + (" --quick" if a.quick else "")
        + f" --replicas {o.replicas} --orgs {o.orgs} --duration {o.duration_s:g} --ttl {o.ttl_s:g} "
        f"--sigterms {o.sigterms} --seed {o.seed}" + (" --anywhere" if o.anywhere else "")
    )  # fmt: skip
    print(render(b, t, command))
    if a.json:
        a.json.write_text(json.dumps(to_json(b, t), indent=2) + "\n")
    return 0 if t.ok else 1


if __name__ == "__main__":
    sys.exit(main())
