"""Several ``makewatch run`` on one PostgreSQL (issue 18), as processes: the simulator with
injected errors, the Slack stand-in, real SIGKILL and SIGSTOP. Every error is told exactly
once; a killed replica's organizations move within the lease TTL plus a cycle; a replica
frozen past its lease cannot write when it wakes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from conftest import AppThread, SimThread, makewatch
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures

from watcher.clock import SystemClock
from watcher.simulator import World
from watcher.testing import DEFAULT_TOKEN, SlackState, create_slack_app

pytestmark = pytest.mark.postgres

ORGS = 4
TTL_S = 5.0


@dataclass
class Rig:
    cfg: Path
    env: dict[str, str]
    url: str
    sim: SimThread
    slack: SlackState
    scenarios: list[tuple[int, str]]  # (id, name): two per organization
    procs: list[subprocess.Popen[str]]
    logs: dict[int, Path]

    def start(self) -> subprocess.Popen[str]:
        log = self.cfg.parent / f"replica-{len(self.procs)}.log"
        with log.open("w") as err:
            proc = subprocess.Popen(
                makewatch("run", "--config", str(self.cfg)), env=self.env, stdout=subprocess.DEVNULL, stderr=err
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log_of(self, proc: subprocess.Popen[str]) -> str:
        return self.logs[proc.pid].read_text()

    def web_url(self, proc: subprocess.Popen[str]) -> str:
        """The replica's status page address, from its log (it listens on a free port)."""
        found = re.search(r"on (http://127\.0\.0\.1:\d+/)", self.log_of(proc))
        assert found, self.log_of(proc)
        return found[1]

    def holders(self) -> dict[str, str | None]:
        with psycopg.connect(self.url) as conn:
            if conn.execute("SELECT to_regclass('leases')").fetchone()[0] is None:
                return {}  # not migrated yet
            rows = conn.execute(
                "SELECT name, holder FROM leases WHERE expires_at > extract(epoch FROM clock_timestamp())"
            ).fetchall()
        return {name: holder for name, holder in rows}

    def polled(self) -> int:
        """Organizations with a finished cycle (the first one is the baseline: an error
        before it is history, not news)."""
        with psycopg.connect(self.url) as conn:
            if conn.execute("SELECT to_regclass('cycles')").fetchone()[0] is None:
                return 0
            return conn.execute("SELECT COUNT(DISTINCT org_id) FROM cycles WHERE ok = 1").fetchone()[0]

    def told(self) -> Counter[str]:
        """Notices in Slack per scenario name (a first notice of an error names it)."""
        counts: Counter[str] = Counter()
        for message in list(self.slack.messages):
            if message.thread_ts:
                continue
            for _, name in self.scenarios:
                if name in message.text:
                    counts[name] += 1
        return counts


def wait_for(predicate, timeout_s: float, what: str) -> float:  # noqa: ANN001
    """Seconds it took until ``predicate()``; fails after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def rig(tmp_path: Path, pg_url: str) -> Iterator[Rig]:  # noqa: F811 - the fixture
    world = World(seed=18, clock=SystemClock())
    scenarios, tokens, tables = [], {}, []
    for i in range(ORGS):
        org = world.add_organization(name=f"Client {i}", plan="pro")
        team = world.add_team(org.id, name=f"T{i}")
        tokens[f"TOK_{i}"] = world.add_token(org_ids=[org.id])
        for what in ("invoices", "orders"):
            sc = world.add_scenario(team.id, name=f"Client {i} {what}", first_run_at=time.time() + 10**8, max_errors=0)
            scenarios.append((sc.id, sc.name))
        tables.append((org.id, i))
    slack = SlackState()
    with SimThread(world) as sim, AppThread(create_slack_app(slack)) as stand_in:
        text = "".join(
            f'[[organizations]]\nname = "Client {i}"\nbase_url = "http://127.0.0.1:{sim.port}/api/v2"\n'
            f'organization_id = {org_id}\ntoken_env = "TOK_{i}"\n'
            for org_id, i in tables
        )
        cfg = tmp_path / "makewatch.toml"
        cfg.write_text(
            text
            + f'[state]\nurl_env = "STATE_URL"\nlease_ttl_s = {TTL_S}\n'
            + "[polling]\npoll_interval_s = 1.0\n[web]\nlisten = \"127.0.0.1:0\"\n"
            + "[alerts]\ngroup_wait_s = 0\ndefault_channels = [\"slack\"]\n"
            + '[channels.slack]\ntype = "slack_bot"\ntoken_env = "BOT"\nchannel = "#alerts"\n'
            + f'base_url = "http://127.0.0.1:{stand_in.port}/api/"\n'
        )
        env = {**os.environ, **tokens, "BOT": DEFAULT_TOKEN, "STATE_URL": pg_url}
        rig = Rig(cfg, env, pg_url, sim, slack, scenarios, [], {})
        try:
            yield rig
        finally:
            for proc in rig.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                proc.wait(timeout=15)
                print(f"--- replica pid {proc.pid} (exit {proc.returncode}):\n{rig.log_of(proc)[-4000:]}")


def all_held(rig: Rig, by: int) -> bool:
    holders = rig.holders()
    return len(holders) == ORGS + 1 and None not in holders.values() and len(set(holders.values())) == by


@pytest.mark.parametrize(("replicas", "shares"), [(2, [2, 3]), (3, [1, 2, 2])])
def test_replicas_share_the_organizations_and_tell_every_error_once_through_a_sigkill(
    rig: Rig, replicas: int, shares: list[int]
) -> None:
    procs = [rig.start() for _ in range(replicas)]
    wait_for(lambda: all_held(rig, replicas), 30, "every replica to hold leases")
    share = Counter(rig.holders().values())
    assert sorted(share.values()) == shares, share  # a fair share of the 5 leases each
    wait_for(lambda: rig.polled() == ORGS, 30, "a first cycle of every organization")

    # Who holds what: `makewatch status` (from the database), /healthz and /metrics (each
    # replica of itself).
    status = subprocess.run(
        makewatch("status", "--config", str(rig.cfg)), env=rig.env, capture_output=True, text=True, timeout=30
    )
    assert status.returncode == 0, status.stderr
    assert f"replicas: {replicas} holding leases" in status.stdout, status.stdout
    for proc in procs:
        held = sorted(n for n, h in rig.holders().items() if _pid(h) == proc.pid)
        line = next(x for x in status.stdout.splitlines() if f":{proc.pid}:" in x)
        assert all(name in line for name in held), (line, held)
        with urllib.request.urlopen(rig.web_url(proc) + "healthz", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["replica"]["holds"] == held and f":{proc.pid}:" in body["replica"]["id"]
        with urllib.request.urlopen(rig.web_url(proc) + "metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert f"makewatch_leases_held {float(len(held))}" in metrics, metrics
        changes = {
            m[1]: float(m[2]) for m in re.finditer(r'makewatch_lease_changes_total\{change="(\w+)"\} (\S+)', metrics)
        }
        # The first one up took everything, then handed the second its share.
        assert changes["gained"] - changes["released"] - changes["lost"] == len(held), changes

    wave_1, wave_2 = rig.scenarios[0::2], rig.scenarios[1::2]  # one scenario of each org each
    for scenario_id, _ in wave_1:
        rig.sim.inject_error(scenario_id, 1)
    wait_for(lambda: len(rig.told()) == ORGS, 30, "every error told")

    # SIGKILL the replica holding the most: no release, its leases must expire.
    victim_pid = _pid(Counter(rig.holders().values()).most_common(1)[0][0])
    (victim,) = [p for p in procs if p.pid == victim_pid]
    survivors = [p for p in procs if p is not victim]
    victim.kill()
    victim.wait(timeout=15)
    took = wait_for(lambda: all_held(rig, replicas - 1), 60, "the survivors to take every lease")
    assert took <= TTL_S + TTL_S / 3 + 3, took  # TTL + a lease tick + slack for a busy machine
    assert {_pid(h) for h in rig.holders().values()} == {p.pid for p in survivors}

    for scenario_id, _ in wave_2:
        rig.sim.inject_error(scenario_id, 1)
    wait_for(lambda: len(rig.told()) == 2 * ORGS, 40, "the second wave told")
    time.sleep(3.0)  # three more poll cycles: nothing more may come
    assert rig.told() == Counter({name: 1 for _, name in rig.scenarios})
    assert all(p.poll() is None for p in survivors)


def test_a_replica_frozen_past_its_lease_cannot_write_when_it_wakes(rig: Rig) -> None:
    frozen = rig.start()
    wait_for(lambda: all_held(rig, 1), 30, "the first replica to hold every lease")
    wait_for(lambda: rig.polled() == ORGS, 30, "a first cycle of every organization")
    other = rig.start()
    frozen.send_signal(signal.SIGSTOP)
    wait_for(lambda: all_held(rig, 1) and {_pid(h) for h in rig.holders().values()} == {other.pid}, 60,
             "the other replica to take every lease")
    for scenario_id, _ in rig.scenarios:
        rig.sim.inject_error(scenario_id, 1)
    wait_for(lambda: len(rig.told()) == 2 * ORGS, 30, "every error told by the other replica")
    frozen.send_signal(signal.SIGCONT)
    time.sleep(3.0)  # its poll and alert loops wake with stale leases
    assert rig.told() == Counter({name: 1 for _, name in rig.scenarios})
    assert other.poll() is None and frozen.poll() is None
    frozen.send_signal(signal.SIGTERM)
    frozen.wait(timeout=15)
    stderr = rig.log_of(frozen)
    assert frozen.returncode == 0, stderr
    # It woke up holding stale leases: the lease loop or a refused (fenced) write told it so.
    assert "no longer held" in stderr or "lost ['" in stderr or "lapse" in stderr, stderr[-3000:]
    assert all(_pid(h) == other.pid for h in rig.holders().values())


def _pid(holder: str | None) -> int | None:
    try:
        return int((holder or "").split(":")[1])
    except (IndexError, ValueError):
        return None
