"""``makewatch run`` as a service (issue 14.3): SIGTERM lets deliveries in flight finish and
exits 0, a crashed task is started again with a backoff and counted, logs are text or JSON
lines without secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from conftest import AppThread, SimThread, cycles, makewatch, start_run, stop
from prometheus_client.parser import text_string_to_metric_families

from watcher.clock import ManualClock, SystemClock
from watcher.config import load_config
from watcher.logs import JsonFormatter, configure, secrets_of
from watcher.service import Watcher, restart_backoff_s
from watcher.simulator import World
from watcher.store import Store
from watcher.testing import DEFAULT_TOKEN, SlackState, create_slack_app
from watcher.web.metrics import ScrapeState

TOKEN = "5f0c8a1e-7b2d-4c3e-9f10-aa11bb22cc33"


@dataclass
class Rig:
    cfg: Path
    db: Path
    env: dict[str, str]
    sim: SimThread
    slack: SlackState
    scenario_id: int


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """A simulated organization polled every second, and a Slack bot channel on the stand-in."""
    world = World(seed=5, clock=SystemClock())
    org = world.add_organization(name="Solo", plan="pro")
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    sc = world.add_scenario(team.id, name="Nightly export", first_run_at=time.time() + 10**8)
    slack = SlackState()
    db = tmp_path / "state.db"
    with SimThread(world) as sim, AppThread(create_slack_app(slack)) as stand_in:
        cfg = tmp_path / "makewatch.toml"
        cfg.write_text(
            f'[[organizations]]\nname = "Solo"\nbase_url = "http://127.0.0.1:{sim.port}/api/v2"\n'
            f'organization_id = {org.id}\ntoken_env = "TOK"\n'
            f'[state]\ndb_path = "{db}"\n[polling]\npoll_interval_s = 1.0\n'
            '[web]\nlisten = "127.0.0.1:0"\n'
            '[alerts]\ngroup_wait_s = 0\ndefault_channels = ["slack"]\n'
            '[channels.slack]\ntype = "slack_bot"\ntoken_env = "BOT"\nchannel = "#alerts"\n'
            f'base_url = "http://127.0.0.1:{stand_in.port}/api/"\n'
        )
        yield Rig(cfg, db, {**os.environ, "TOK": token, "BOT": DEFAULT_TOKEN}, sim, slack, sc.id)


def wait_for(predicate, timeout_s: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def outbox(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT status FROM outbox ORDER BY id")]


def posts(slack: SlackState) -> list:  # noqa: ANN201
    return [r for r in slack.requests if r.method == "chat.postMessage"]


def with_service(rig: Rig, text: str) -> None:
    rig.cfg.write_text(rig.cfg.read_text() + text)


def test_sigterm_lets_the_delivery_in_flight_finish_and_exits_0(rig: Rig) -> None:
    """Slack takes 2 s to answer; SIGTERM comes while it is answering. The notice is recorded
    as sent (not sent again after the restart) and the process exits 0."""
    with_service(rig, "[service]\nshutdown_timeout_s = 10\n")
    rig.slack.delay_s = 2.0
    proc = start_run(rig.cfg, rig.env)
    try:
        wait_for(lambda: cycles(rig.db) >= 1)
        rig.sim.inject_error(rig.scenario_id, 1)
        wait_for(lambda: len(posts(rig.slack)) == 1)  # the post is in flight (Slack is slow)
    finally:
        stderr = stop(proc)  # SIGTERM; asserts exit code 0
    assert outbox(rig.db) == ["sent"], stderr
    assert len(rig.slack.messages) == 1
    assert "stopping: polling ends now; deliveries in flight get up to 10 s" in stderr

    rig.slack.delay_s = 0.0
    again = start_run(rig.cfg, rig.env)  # a restart does not send it again
    try:
        before = cycles(rig.db)
        wait_for(lambda: cycles(rig.db) >= before + 2)
    finally:
        stop(again)
    assert len(posts(rig.slack)) == 1 and outbox(rig.db) == ["sent"]


def test_a_delivery_slower_than_the_shutdown_timeout_stays_in_the_outbox(rig: Rig) -> None:
    with_service(rig, "[service]\nshutdown_timeout_s = 1\n")
    rig.slack.delay_s = 30.0
    proc = start_run(rig.cfg, rig.env)
    try:
        wait_for(lambda: cycles(rig.db) >= 1)
        rig.sim.inject_error(rig.scenario_id, 1)
        wait_for(lambda: len(posts(rig.slack)) == 1)
    finally:
        stderr = stop(proc)  # exits 0 long before Slack would have answered
    assert outbox(rig.db) == ["pending"], stderr  # not lost: sent after the restart
    assert "deliveries still in flight after 1 s are cancelled" in stderr


def test_json_logs_are_one_object_a_line_with_the_org_and_no_secret(rig: Rig) -> None:
    proc = subprocess.Popen(
        makewatch("run", "--config", str(rig.cfg), "--log-format", "json"),
        env=rig.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: cycles(rig.db) >= 1)
        rig.sim.inject_error(rig.scenario_id, 1)
        wait_for(lambda: len(rig.slack.messages) == 1)
    finally:
        stderr = stop(proc)
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is one object
    assert all({"ts", "level", "logger", "message"} <= set(obj) for obj in lines)
    cycle = [o for o in lines if o.get("org") == "Solo" and o.get("events")]
    assert cycle and cycle[0]["events"] == {"execution_error": 1}, lines
    assert any(o["message"] == "stopped" for o in lines)
    assert rig.env["TOK"] not in stderr and DEFAULT_TOKEN not in stderr


def test_secrets_are_redacted_in_both_formats(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        '[[organizations]]\nname = "A"\nzone = "eu1.make.com"\norganization_id = 1\ntoken_env = "TOK"\n'
        '[channels.hook]\ntype = "slack_webhook"\nwebhook_url_env = "HOOK"\n'
    )
    hook = "https://hooks.slack.com/services/T0/B0/sEcReT"
    settings = load_config(cfg, env={"TOK": TOKEN, "HOOK": hook})
    assert set(secrets_of(settings)) == {TOKEN, hook}
    for fmt in ("text", "json"):
        out = io.StringIO()
        configure(logging.INFO, fmt, secrets_of(settings), stream=out)
        try:
            logging.getLogger("t").warning("sent %s to %s", TOKEN, hook, extra={"org": "A"})
        finally:
            configure(logging.WARNING, "text")
        assert TOKEN not in out.getvalue() and "sEcReT" not in out.getvalue()
        assert out.getvalue().count("***") == 2
    assert json.loads(JsonFormatter().format(logging.makeLogRecord({"msg": "x", "org": "A"})))["org"] == "A"


# --- a crashed task -------------------------------------------------------------------------


@pytest.fixture
async def watcher(tmp_path: Path):  # noqa: ANN201
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'[[organizations]]\nname = "A"\nzone = "eu1.make.com"\norganization_id = 1\ntoken_env = "TOK"\n'
        f'[state]\ndb_path = "{tmp_path / "s.db"}"\n'
    )
    settings = load_config(cfg, env={"TOK": TOKEN})
    clock = ManualClock()
    with Store.open(settings.state.db_path) as store:
        async with aiohttp.ClientSession() as session:
            w = Watcher(settings, store, session, clock)
            yield w, clock
            await w.aclose()


def restarts(w: Watcher, task: str) -> float:
    text = w.metrics.exposition(ScrapeState()).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "makewatch_task_restarts_total" and sample.labels.get("task") == task:
                return sample.value
    return 0.0


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_crashing_round_is_started_again_after_a_growing_backoff_and_counted(watcher) -> None:  # noqa: ANN001
    w, clock = watcher
    calls: list[float] = []

    async def work() -> None:
        calls.append(clock.time())
        if len(calls) <= 3:
            raise RuntimeError(f"bug number {len(calls)}")

    stop = asyncio.Event()
    t0 = clock.time()
    task = asyncio.create_task(w._every(1.0, stop, work, "alerts"))
    await settle()
    for step in [4.9, 0.2, 9.8, 0.2, 19.8, 0.2, 1.0]:  # 5 s, 10 s, 20 s, then every 1 s again
        clock.advance(step)
        await settle()
    stop.set()
    await task
    assert [round(c - t0, 1) for c in calls] == [0.0, 5.1, 15.1, 35.1, 36.1]
    assert restarts(w, "alerts") == 3
    assert [restart_backoff_s(n) for n in (1, 2, 3, 8, 50)] == [5, 10, 20, 300, 300]


async def test_a_task_that_dies_is_supervised_back_to_life(watcher) -> None:  # noqa: ANN001
    w, clock = watcher
    starts: list[float] = []
    stop = asyncio.Event()

    async def loop() -> None:
        starts.append(clock.time())
        if len(starts) < 3:
            raise KeyError("the loop itself broke")
        await stop.wait()

    task = asyncio.create_task(w._supervised("poll", stop, loop))
    await settle()
    clock.advance(5)
    await settle()
    clock.advance(10)
    await settle()
    assert len(starts) == 3 and restarts(w, "poll") == 2
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_news_from_a_poll_wakes_the_alert_loop_before_its_tick(watcher) -> None:  # noqa: ANN001
    """A poll that found events sets the wake event: the alerts are decided at once, not up to
    alert_tick_s later (5 s of every first notice's latency)."""
    w, clock = watcher
    rounds: list[float] = []
    stop, news = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        rounds.append(clock.time())

    task = asyncio.create_task(w._every(5.0, stop, work, "alerts", news))
    await settle()
    clock.advance(1.0)
    await settle()
    assert len(rounds) == 1  # the tick is 5 s away
    news.set()
    await settle()
    assert len(rounds) == 2 and rounds[1] - rounds[0] == 1.0 and not news.is_set()
    stop.set()
    await task
