"""Issue 17's "Done when", end to end: from a deactivation alert in Slack, an allowed user
reactivates the scenario with one click (behind a confirmation), the message and the thread
say who did it, the next poll confirms it (or says it failed again), and a user not on the
list cannot.

Real parts on 127.0.0.1: the Make simulator (with its write endpoints and scopes), the Slack
stand-in (Web API and a Socket Mode WebSocket) reached by slack-sdk's own clients, the real
Watcher (poller, alert engine, delivery, interactions) on a ManualClock.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import START, Sim

from watcher.actions import list_actions
from watcher.actions_cli import alerts_report
from watcher.clock import ManualClock
from watcher.config import Settings, load_config
from watcher.service import Watcher
from watcher.simulator import WRITE_SCOPES, World
from watcher.simulator.world import ALL_READ_SCOPES
from watcher.slack_actions import Outcome
from watcher.store import Store
from watcher.testing.slack_standin import (
    DEFAULT_APP_TOKEN,
    DEFAULT_TOKEN,
    SlackMessage,
    SlackState,
    create_slack_app,
)

CHANNEL = "C0ONCALL"
ANA, BOB, CARL = "U0ANA", "U0BOB", "U0CARL"
WAIT_S = 15.0  # bounds a wait on a loaded machine; never what is asserted


SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"


def config(tmp_path: Path, sim: Sim, org_id: int, slack_url: str, write_env: str, receive: str) -> Path:
    cfg = tmp_path / "makewatch.toml"
    cfg.write_text(
        f"""
[[organizations]]
name = "Kontor"
base_url = "{sim.base_url}"
organization_id = {org_id}
token_env = "READ"
write_token_env = "{write_env}"

[state]
db_path = "{tmp_path / "state.db"}"

[alerts]
group_wait_s = 0

[actions]
enabled = true

[[routes]]
channels = ["oncall"]
# Ana through the on-call user group, Carl by id; Bob is on neither.
actors = ["S0ONCALL", "{CARL}"]

[channels.oncall]
type = "slack_bot"
token_env = "BOT"
{receive}
channel = "#oncall"
base_url = "{slack_url}/api/"
""",
        encoding="utf-8",
    )
    return cfg


@dataclass
class Stack:
    world: World
    sim: Sim
    slack: SlackState
    settings: Settings
    store: Store
    watcher: Watcher
    scenario_id: int
    outcomes: list[Outcome]
    arrived: asyncio.Queue[Outcome]

    @property
    def clock(self) -> ManualClock:
        return self.world.clock  # type: ignore[return-value]

    async def cycle(self, advance_s: float = 60.0) -> None:
        self.clock.advance(advance_s)
        await self.watcher.cycle()

    def deactivation_message(self) -> SlackMessage:
        return self.message_of("scenario_deactivated")

    def message_of(self, kind: str) -> SlackMessage:
        (msg,) = [
            m for m in self.slack.messages
            if m.channel == CHANNEL and m.thread_ts is None and f"makewatch.{kind}." in json.dumps(m.blocks)
        ]
        return msg

    def scenario_named(self, name: str) -> int:
        return next(sc.id for sc in self.world.scenarios.values() if sc.name == name)

    def button(self, msg: SlackMessage, action_id: str) -> dict[str, Any]:
        for block in msg.blocks:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == action_id:
                    return element
        raise AssertionError(f"no button {action_id} in {msg.blocks}")

    async def click(self, user: str, action_id: str, msg: SlackMessage) -> Outcome:
        """Press a button over Socket Mode; wait for the ack and for the handler's outcome."""
        envelope = await self.slack.click(
            user_id=user, action_id=action_id, value=self.button(msg, action_id)["value"],
            channel=CHANNEL, message_ts=msg.ts,
        )
        assert await envelope.wait_ack(WAIT_S) < 3.0  # Slack's deadline
        return await asyncio.wait_for(self.arrived.get(), WAIT_S)

    def starts(self) -> list[Any]:
        return [r for r in self.world.requests if r.method == "POST" and r.path.endswith("/start")]

    def thread(self, msg: SlackMessage) -> list[str]:
        return [m.text for m in self.slack.replies(msg.ts)]


@pytest.fixture
async def stack(start_sim, aiohttp_server, tmp_path):
    made: list[Stack] = []

    async def make(write_scopes: tuple[str, ...] = WRITE_SCOPES, receive: str = 'app_token_env = "APP"') -> Stack:
        clock = ManualClock(START)
        world = World(seed=17, clock=clock)
        org = world.add_organization(name="Kontor", plan="core")
        team = world.add_team(org.id, name="Ops")
        far = START + 10**8
        scenario = world.add_scenario(team.id, name="Leads <!channel> sync", first_run_at=far, max_errors=2)
        # An instant scenario whose failed runs Make keeps for replay, and one with a DLQ.
        world.add_scenario(team.id, name="Typeform hook", first_run_at=far, max_errors=0, webhook=True)
        world.add_scenario(team.id, name="Orders queue", first_run_at=far, max_errors=0, store_incomplete=True)
        read = world.add_token(org_ids=[org.id])
        write = world.add_token(org_ids=[org.id], scopes=[*ALL_READ_SCOPES, *write_scopes])
        sim = await start_sim(world)
        slack = SlackState(
            channels={"oncall": CHANNEL}, usergroups={"S0ONCALL": [ANA]},
            users={ANA: "ana", BOB: "bob", CARL: "carl"},
        )
        server = await aiohttp_server(create_slack_app(slack))
        slack_url = str(server.make_url("")).rstrip("/")
        env = {"READ": read, "WRITE": write, "BOT": DEFAULT_TOKEN, "APP": DEFAULT_APP_TOKEN, "SIGN": SIGNING}
        settings = load_config(config(tmp_path, sim, org.id, slack_url, "WRITE", receive), env=env)
        store = Store.open(settings.state.db_path)
        watcher = Watcher(settings, store, sim.session, clock)
        outcomes: list[Outcome] = []
        arrived: asyncio.Queue[Outcome] = asyncio.Queue()

        assert watcher.interactions is not None
        counted = watcher.interactions.handler.on_outcome  # /metrics counts the presses

        def record(outcome: Outcome) -> None:
            assert counted is not None
            counted(outcome)
            outcomes.append(outcome)
            arrived.put_nowait(outcome)

        watcher.interactions.handler.on_outcome = record
        st = Stack(world, sim, slack, settings, store, watcher, scenario.id, outcomes, arrived)
        made.append(st)
        return st

    yield make
    for st in made:
        if st.watcher.interactions is not None:
            await st.watcher.interactions.stop()
        await st.watcher.aclose()
        st.store.close()


async def deactivated(st: Stack) -> SlackMessage:
    """Baseline, two errors (Make switches it off), the alert in Slack, the socket open."""
    await st.cycle(0)
    for n in range(2):
        st.world.inject_run(st.scenario_id, status=3, error_name="ConnectionError", error_message=f"refused {n}")
    await st.cycle()
    assert st.world.scenarios[st.scenario_id].is_active is False
    await st.watcher.interactions.start()
    await st.slack.wait_connections(1)
    return st.deactivation_message()


async def test_an_allowed_user_reactivates_with_one_click_and_the_next_poll_confirms_it(stack):
    st = await stack()
    msg = await deactivated(st)
    start = st.button(msg, "makewatch:start")
    assert start["text"]["text"] == "Reactivate scenario"
    assert "Reactivate Leads <!channel> sync in Make now?" in start["confirm"]["text"]["text"]

    # Bob is on no list: told so, privately; nothing reaches Make.
    refused = await st.click(BOB, "makewatch:start", msg)
    assert refused.status == "not_allowed"
    assert any("not allowed" in e.text for e in st.slack.ephemerals_for(BOB))
    assert st.starts() == [] and st.world.scenarios[st.scenario_id].is_active is False
    assert any("<@U0BOB> tried to reactivate the scenario" in t and "not allowed" in t for t in st.thread(msg))

    # Ana, through the on-call user group: one click, the scenario runs again.
    done = await st.click(ANA, "makewatch:start", msg)
    assert done.status == "done", done
    assert st.world.scenarios[st.scenario_id].is_active is True
    assert len(st.starts()) == 1
    thread = st.thread(msg)
    assert any(t.startswith("✅ Reactivated by <@U0ANA>") and f"scenario {st.scenario_id} is now active" in t
               for t in thread), thread
    shown = st.slack.find(CHANNEL, msg.ts).all_text()
    assert "Reactivated by <@U0ANA>" in shown  # the message itself says who did it

    # A double click, and the same click redelivered after a restart: Make is not called again.
    again = await st.click(ANA, "makewatch:start", msg)
    assert again.status == "duplicate"
    replayed = st.slack.envelopes[-1]
    from watcher.slack_interactions import interactions_from_payload

    (same,) = interactions_from_payload(
        st.slack.envelopes[-2].payload, envelope_id=replayed.envelope_id, retry_attempt=1, transport="socket"
    )
    assert (await st.watcher.interactions.handler.handle(same)).status == "duplicate"
    assert len(st.starts()) == 1

    # The next poll sees it active, then its next run succeed: both told in the thread.
    await st.cycle()
    assert any("Make shows it active" in t for t in st.thread(msg)), st.thread(msg)
    await st.cycle(st.world.scenarios[st.scenario_id].interval_s + 60)
    assert any("confirmed: it ran without error at" in t for t in st.thread(msg)), st.thread(msg)

    # The audit trail: every press, allowed or not, with who and how it ended.
    trail = await list_actions(st.store)
    assert [(a.actor, a.action, a.status) for a in reversed(trail)] == [
        ("@bob", "start", "not_allowed"), ("@ana", "start", "done"),
    ]
    report = st.store.read_sync(lambda db: alerts_report(db))
    assert "@ana: start -> done" in report and "@bob: start -> not_allowed" in report


async def test_the_next_poll_says_when_it_failed_again(stack):
    st = await stack()
    msg = await deactivated(st)
    assert (await st.click(CARL, "makewatch:start", msg)).status == "done"  # Carl: by user id
    await st.cycle()
    st.world.inject_run(st.scenario_id, status=3, error_name="ConnectionError", error_message="refused again")
    await st.cycle()
    assert any("reactivated, but failed again at" in t and "ConnectionError" in t for t in st.thread(msg)), st.thread(msg)


async def test_a_token_without_the_write_scope_changes_nothing_and_says_which_scope(stack):
    st = await stack(write_scopes=("scenarios:run",))
    msg = await deactivated(st)
    outcome = await st.click(ANA, "makewatch:start", msg)
    assert outcome.status == "refused"
    assert st.world.scenarios[st.scenario_id].is_active is False
    assert any("lacks scope scenarios:write" in t for t in st.thread(msg)), st.thread(msg)


async def test_acknowledge_and_silence_from_slack(stack):
    st = await stack()
    msg = await deactivated(st)
    assert (await st.click(ANA, "makewatch:ack", msg)).status == "done"
    row = st.store.read_sync(lambda db: next(db["alerts"].rows_where("kind = 'scenario_deactivated'")))
    assert row["acked_by"] == "@ana"
    shown = st.slack.find(CHANNEL, msg.ts)
    assert "Acknowledged by <@U0ANA>" in shown.all_text()
    assert "makewatch:ack" not in json.dumps(shown.blocks)  # the button is gone once used
    assert (await st.click(CARL, "makewatch:silence:3600", msg)).status == "done"
    silences = st.store.read_sync(lambda db: list(db["silences"].rows))
    assert len(silences) == 1 and json.loads(silences[0]["matchers_json"])["scenario_id"] == st.scenario_id
    assert silences[0]["ends_at"] - silences[0]["starts_at"] == 3600


async def test_replay_and_retry_buttons_act_on_make(stack):
    st = await stack()
    hook, queue = st.scenario_named("Typeform hook"), st.scenario_named("Orders queue")
    await st.cycle(0)
    st.world.inject_run(hook, status=3, error_name="DataError", error_message="bad row")
    st.world.inject_run(queue, status=3, error_name="ConnectionError", error_message="refused")
    await st.cycle()
    await st.watcher.interactions.start()
    await st.slack.wait_connections(1)

    errors = [m for m in st.slack.messages if m.thread_ts is None and "makewatch.execution_error." in json.dumps(m.blocks)]
    replay_msg = next(m for m in errors if "Typeform hook" in m.all_text())
    scheduled = next(m for m in errors if "Orders queue" in m.all_text())
    assert "makewatch:replay" not in json.dumps(scheduled.blocks)  # no input kept to replay with
    replayed = await st.click(ANA, "makewatch:replay", replay_msg)
    assert replayed.status == "done", replayed
    replays = [r for r in st.world.requests if r.method == "POST" and r.path.endswith("/replay")]
    assert len(replays) == 1
    assert any(log.body.get("replayOfExecutionId") for log in st.world.scenarios[hook].logs), "no replayed run"

    dlq_msg = st.message_of("incomplete_executions")
    assert st.world.scenarios[queue].dlqs
    retried = await st.click(CARL, "makewatch:retry", dlq_msg)
    assert retried.status == "done", retried
    assert [d for d in st.world.scenarios[queue].dlqs if not d.resolved] == []
    assert any("Retried the incomplete executions by <@U0CARL>" in t for t in st.thread(dlq_msg))


async def test_clicks_over_signed_http_and_a_forged_one_changes_nothing(stack, aiohttp_server):
    from watcher.web.app import create_app

    st = await stack(receive='signing_secret_env = "SIGN"')
    assert st.watcher.interactions.receivers == []  # no app token: no Socket Mode
    msg = await deactivated_http(st)
    server = await aiohttp_server(create_app(st.settings, st.store, st.watcher, st.clock))
    url = str(server.make_url("/slack/interactions"))
    value = st.button(msg, "makewatch:start")["value"]
    payload = st.slack.block_actions_payload(
        user_id=ANA, action_id="makewatch:start", value=value, channel=CHANNEL, message_ts=msg.ts
    )
    forged = await st.slack.post_interaction(url, payload, SIGNING, timestamp=st.clock.time(), forge=True)
    stale = await st.slack.post_interaction(url, payload, SIGNING, timestamp=st.clock.time() - 600)
    assert forged[0] == 401 and stale[0] == 401
    assert st.starts() == [] and st.outcomes == []
    status, _ = await st.slack.post_interaction(url, payload, SIGNING, timestamp=st.clock.time())
    assert status == 200
    outcome = await asyncio.wait_for(st.arrived.get(), WAIT_S)
    assert outcome.status == "done" and len(st.starts()) == 1
    assert st.world.scenarios[st.scenario_id].is_active is True


async def deactivated_http(st: Stack) -> SlackMessage:
    await st.cycle(0)
    for n in range(2):
        st.world.inject_run(st.scenario_id, status=3, error_name="ConnectionError", error_message=f"refused {n}")
    await st.cycle()
    return st.deactivation_message()


async def test_healthz_shows_the_socket_and_metrics_count_the_presses(stack, aiohttp_server):
    from watcher.web.app import create_app

    st = await stack()
    msg = await deactivated(st)
    await st.click(BOB, "makewatch:start", msg)
    await st.click(ANA, "makewatch:start", msg)
    server = await aiohttp_server(create_app(st.settings, st.store, st.watcher, st.clock))
    async with st.sim.session.get(server.make_url("/healthz")) as resp:
        health = await resp.json()
    (sock,) = health["slack_socket_mode"]
    assert sock["channel"] == "oncall" and sock["connected"] is True and sock["reconnects"] == 0
    async with st.sim.session.get(server.make_url("/metrics")) as resp:
        text = await resp.text()
    assert 'makewatch_actions_total{action="start",outcome="done"} 1.0' in text
    assert 'makewatch_actions_total{action="start",outcome="not_allowed"} 1.0' in text
    assert "makewatch_slack_socket_reconnects_total 0.0" in text
