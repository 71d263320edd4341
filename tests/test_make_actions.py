"""Make's write calls (start, stop, run, replay, DLQ retry, the token's scopes) through the real
MakeClient against the simulator on 127.0.0.1: what each call did to the world, what a token
without the scope gets, and that a write is not repeated when Make may have acted on it.
Attempts are counted in the simulator's own request log."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from watcher.clock import ManualClock, ScaledClock
from watcher.make import ActionAnswer, MakeActionRefused, MakeApiError, MakeClient, MakeScopeError
from watcher.simulator import ALL_READ_SCOPES, WRITE_SCOPES, Scenario, World

T0 = 1_790_000_000.0
WRITER = [*ALL_READ_SCOPES, *WRITE_SCOPES]


class Acct:
    """A one-organization world with a read-only token and a token with every write scope."""

    def __init__(self, clock: Any, plan: str = "core") -> None:
        self.world = World(seed=5, clock=clock)
        self.org = self.world.add_organization("Acme Agency", plan=plan)
        self.team = self.world.add_team(self.org.id, name="Ops")
        self.reader = self.world.add_token([self.org.id], name="reader")
        self.writer = self.world.add_token([self.org.id], scopes=WRITER, name="writer")

    def scenario(self, **kwargs: Any) -> Scenario:
        kwargs.setdefault("interval_s", 3600)
        return self.world.add_scenario(self.team.id, **kwargs)

    def posts(self, suffix: str) -> list[Any]:
        return [r for r in self.world.requests if r.method == "POST" and r.path.endswith(suffix)]

    def manual_runs(self, sc: Scenario) -> list[dict[str, Any]]:
        return [e for e in self.world.logs(sc.id) if e.get("type") == "manual"]


@pytest.fixture
def acct() -> Acct:
    return Acct(ManualClock(T0))


async def writer(start_sim, acct: Acct, **kwargs: Any) -> MakeClient:
    sim = await start_sim(acct.world)
    return sim.client(acct.writer, **kwargs)


# ------------------------------------------------------------------ start / stop


async def test_stop_then_start_flip_is_active_and_the_listing_shows_it(start_sim, acct) -> None:
    sc = acct.scenario()
    client = await writer(start_sim, acct)
    stopped = await client.stop_scenario(sc.id)
    assert (stopped.status, stopped.is_active, stopped.already) == (200, False, False)
    assert stopped.summary() == f"scenario {sc.id} is now inactive"
    listed = await client.list_scenarios(organization_id=acct.org.id)
    assert [s.is_active for s in listed] == [False]
    started = await client.start_scenario(sc.id)
    assert started.is_active is True and started.summary() == f"scenario {sc.id} is now active"
    assert started.body == {"scenario": {"id": sc.id, "islinked": True, "isActive": True}}
    assert [s.is_active for s in await client.list_scenarios(team_id=acct.team.id)] == [True]


async def test_start_of_an_active_scenario_is_already_and_not_an_error(start_sim, acct) -> None:
    sc = acct.scenario()
    client = await writer(start_sim, acct)
    answer = await client.start_scenario(sc.id)
    assert answer.already is True and answer.is_active is True
    assert answer.summary() == f"scenario {sc.id} was already active"
    assert len(acct.posts("/start")) == 1  # not retried


async def test_stop_of_an_inactive_scenario_is_already_inactive(start_sim, acct) -> None:
    sc = acct.scenario(active=False)
    client = await writer(start_sim, acct)
    answer = await client.stop_scenario(sc.id)
    assert answer.already and answer.is_active is False
    assert "already inactive" in answer.summary()


async def test_start_of_a_scenario_make_deactivated_clears_isinvalid(start_sim, acct) -> None:
    sc = acct.scenario(max_errors=1)
    acct.world.inject_run(sc.id, status=3)
    assert not sc.is_active and sc.is_invalid
    client = await writer(start_sim, acct)
    assert (await client.start_scenario(sc.id)).is_active is True
    again = await client.get_scenario(sc.id)
    assert again.is_active and not again.is_invalid
    assert [e.kind for e in acct.world.ledger][-1] == "reactivation"


async def test_start_of_an_unknown_scenario_is_refused_with_404(start_sim, acct) -> None:
    client = await writer(start_sim, acct)
    with pytest.raises(MakeActionRefused) as info:
        await client.start_scenario(999)
    assert info.value.status == 404 and not info.value.retryable


# ------------------------------------------------------------------ scopes


@pytest.mark.parametrize(
    ("call", "scope"),
    [
        (lambda c, sc, d: c.stop_scenario(sc.id), "scenarios:write"),
        (lambda c, sc, d: c.run_scenario(sc.id), "scenarios:run"),
        (lambda c, sc, d: c.replay_execution(sc.id, "0" * 32), "scenarios:run"),
        (lambda c, sc, d: c.retry_dlqs(sc.id, all_items=True), "dlqs:write"),
        (lambda c, sc, d: c.retry_dlq(d), "dlqs:write"),
    ],
    ids=["stop", "run", "replay", "retry_dlqs", "retry_dlq"],
)
async def test_a_read_only_token_gets_a_scope_error_and_nothing_changes(
    start_sim, acct, call, scope
) -> None:
    sc = acct.scenario(store_incomplete=True, max_errors=0)
    acct.world.inject_run(sc.id, status=3)
    dlq_id = sc.dlqs[0].id
    logs_before = acct.world.logs(sc.id)
    sim = await start_sim(acct.world)
    client = sim.client(acct.reader)
    with pytest.raises(MakeScopeError) as info:
        await call(client, sc, dlq_id)
    err = info.value
    assert err.status == 403 and err.scope == scope and scope in str(err)
    assert not err.retryable and err.is_auth_error
    assert acct.reader not in str(err) and acct.reader not in repr(err)
    assert sc.is_active and sc.dlq_count == 1 and acct.world.logs(sc.id) == logs_before
    assert len([r for r in acct.world.requests if r.method == "POST"]) == 1


async def test_current_scopes_of_a_read_only_and_a_write_token(start_sim, acct) -> None:
    sim = await start_sim(acct.world)
    read = await sim.client(acct.reader).current_scopes()
    write = await sim.client(acct.writer).current_scopes()
    assert read is not None and "scenarios:read" in read and "scenarios:write" not in read
    assert write is not None and set(WRITE_SCOPES) <= set(write)


async def test_current_scopes_is_none_when_make_answers_403(start_sim, acct) -> None:
    acct.world.set_faults(
        html_error_count=1, scopes={"html_error_count": {"path_regex": "current-authorization"}}
    )
    sim = await start_sim(acct.world)
    assert await sim.client(acct.writer).current_scopes() is None


# ------------------------------------------------------------------ run


async def test_run_starts_a_manual_execution_that_appears_in_the_logs(start_sim, acct) -> None:
    sc = acct.scenario()
    client = await writer(start_sim, acct)
    answer = await client.run_scenario(sc.id, {"orderId": 7})
    assert answer.status == 200 and answer.execution_id
    assert answer.summary() == f"run started: execution {answer.execution_id[:8]}…"
    assert answer.body["statusUrl"].endswith(f"/scenarios/{sc.id}/executions/{answer.execution_id}")
    logs = await client.list_scenario_logs(sc.id)
    assert [(e.id, e.type, e.status) for e in logs] == [(answer.execution_id, "manual", 1)]
    assert sc.operations == sc.operations_per_run  # the counters moved
    assert acct.posts("/run")[0].status == 200


async def test_run_always_sends_responsive_false(start_sim, acct) -> None:
    sc = acct.scenario()
    client = await writer(start_sim, acct)
    await client.run_scenario(sc.id)  # the simulator refuses responsive: true with a 400
    assert len(acct.manual_runs(sc)) == 1


async def test_a_run_can_be_made_to_fail(start_sim, acct) -> None:
    sc = acct.scenario(max_errors=0)
    acct.world.actions.queue_outcome(sc.id, status=3, error_name="DataError", error_message="Bad.")
    client = await writer(start_sim, acct)
    answer = await client.run_scenario(sc.id)
    entry = await client.get_scenario_log(sc.id, answer.execution_id or "")
    assert entry.status == 3 and entry.error_name == "DataError"
    assert acct.world.ledger[-1].kind == "error"


async def test_run_of_an_inactive_scenario_is_refused_with_im325(start_sim, acct) -> None:
    sc = acct.scenario(active=False)
    client = await writer(start_sim, acct)
    with pytest.raises(MakeActionRefused) as info:
        await client.run_scenario(sc.id)
    err = info.value
    assert (err.status, err.code) == (422, "IM325") and err.reason == "Scenario is not activated."
    assert not err.retryable and acct.manual_runs(sc) == []
    assert len(acct.posts("/run")) == 1


# ------------------------------------------------------------------ replay


def failed_webhook_run(acct: Acct) -> tuple[Scenario, str]:
    sc = acct.scenario(webhook=True, max_errors=0)
    return sc, acct.world.inject_run(sc.id, status=3)["id"]


@pytest.mark.parametrize("shape", ["no_content", "execution_id"])
async def test_replay_creates_a_run_marked_as_a_replay_whatever_make_answers(
    start_sim, acct, shape
) -> None:
    sc, failed = failed_webhook_run(acct)
    acct.world.actions.knobs.replay_answer = shape
    client = await writer(start_sim, acct)
    assert (await client.log_entry(sc.id, failed))["isReplayable"] is True
    answer = await client.replay_execution(sc.id, failed)
    replays = [e for e in acct.world.logs(sc.id) if e.get("replayOfExecutionId") == failed]
    assert len(replays) == 1
    if shape == "no_content":
        assert (answer.status, answer.body, answer.execution_id) == (202, {}, None)
        assert answer.summary() == "replay accepted"
    else:
        assert answer.execution_id == replays[0]["id"]
        assert answer.summary().startswith("replay started: execution ")


async def test_replay_of_a_run_that_is_not_replayable_is_refused(start_sim, acct) -> None:
    sc = acct.scenario(max_errors=0)  # a scheduled scenario: its input is not kept
    failed = acct.world.inject_run(sc.id, status=3)["id"]
    client = await writer(start_sim, acct)
    assert (await client.log_entry(sc.id, failed))["isReplayable"] is False
    with pytest.raises(MakeActionRefused) as info:
        await client.replay_execution(sc.id, failed)
    assert info.value.status == 422 and "not replayable" in info.value.reason
    assert acct.manual_runs(sc) == []


async def test_replayability_follows_age_and_the_test_override(start_sim, acct) -> None:
    sc, failed = failed_webhook_run(acct)
    acct.world.clock.advance(acct.world.actions.knobs.replay_window_s + 1)
    client = await writer(start_sim, acct)
    assert (await client.log_entry(sc.id, failed))["isReplayable"] is False
    acct.world.actions.set_replayable(failed, True)
    assert (await client.log_entry(sc.id, failed))["isReplayable"] is True
    assert (await client.replay_execution(sc.id, failed)).status == 202


async def test_replay_of_an_unknown_execution_is_refused_with_404(start_sim, acct) -> None:
    sc = acct.scenario()
    client = await writer(start_sim, acct)
    with pytest.raises(MakeActionRefused) as info:
        await client.replay_execution(sc.id, "f" * 32)
    assert info.value.status == 404


# ------------------------------------------------------------------ incomplete executions


def dlq_backlog(acct: Acct, n: int = 3) -> Scenario:
    sc = acct.scenario(store_incomplete=True, max_errors=0)
    for _ in range(n):
        acct.world.inject_run(sc.id, status=3)
    assert sc.dlq_count == n
    return sc


async def test_retry_of_some_ids_empties_them_from_the_queue(start_sim, acct) -> None:
    sc = dlq_backlog(acct)
    client = await writer(start_sim, acct)
    ids = [d.id for d in await client.list_dlqs(sc.id)][:2]
    answer = await client.retry_dlqs(sc.id, ids)
    assert answer.summary() == "2 incomplete executions queued for retry"
    left = await client.list_dlqs(sc.id)
    assert len(left) == 1 and left[0].id not in ids
    assert (await client.get_scenario(sc.id)).dlq_count == 1
    assert len(acct.manual_runs(sc)) == 2


async def test_retry_of_all_and_of_one(start_sim, acct) -> None:
    sc = dlq_backlog(acct)
    client = await writer(start_sim, acct)
    one = (await client.list_dlqs(sc.id))[0].id
    answer = await client.retry_dlq(one)
    assert answer.body == {"dlq": one} and "queued for retry" in answer.summary()
    every = await client.retry_dlqs(sc.id, all_items=True)
    assert every.count == 2 and every.summary() == "2 incomplete executions queued for retry"
    assert await client.list_dlqs(sc.id) == []
    assert (await client.get_scenario(sc.id)).dlq_count == 0


async def test_a_failed_retry_leaves_the_item_queued(start_sim, acct) -> None:
    sc = dlq_backlog(acct, 1)
    acct.world.actions.queue_outcome(sc.id, status=3)
    client = await writer(start_sim, acct)
    await client.retry_dlq(sc.dlqs[0].id)
    [item] = await client.list_dlqs(sc.id)
    assert item.attempts == 1 and sc.dlq_count == 1 and len(sc.dlqs) == 1


async def test_retry_of_ids_of_another_scenario_is_refused(start_sim, acct) -> None:
    sc, other = dlq_backlog(acct, 1), dlq_backlog(acct, 1)
    client = await writer(start_sim, acct)
    with pytest.raises(MakeActionRefused) as info:
        await client.retry_dlqs(sc.id, [other.dlqs[0].id])
    assert info.value.status == 400 and "do not belong" in info.value.reason
    assert sc.dlq_count == 1 and other.dlq_count == 1
    with pytest.raises(ValueError):
        await client.retry_dlqs(sc.id)


# ------------------------------------------------------------------ retries and budgets


@pytest.mark.parametrize("knob", ["error_5xx_count", "lost_answer_count"])
async def test_a_5xx_on_run_is_not_retried(start_sim, acct, knob) -> None:
    sc = acct.scenario()
    if knob == "error_5xx_count":  # before Make acted
        acct.world.set_faults(
            error_5xx_count=1, error_5xx_status=502, scopes={knob: {"path_regex": "/run$"}}
        )
    else:  # after: the run happened, only the answer was lost
        acct.world.actions.knobs.update({"lost_answer_count": 1, "lost_answer_path_regex": "/run$"})
    client = await writer(start_sim, acct, max_attempts=5)
    with pytest.raises(MakeApiError) as info:
        await client.run_scenario(sc.id)
    err = info.value
    assert err.status == 502 and not err.retryable and "check before repeating" in str(err)
    assert len(acct.posts("/run")) == 1
    # After the answer was lost (lost_answer_count) the run had happened: a retry would
    # have started a second one.
    assert len(acct.manual_runs(sc)) == (1 if knob == "lost_answer_count" else 0)


async def test_a_timeout_on_run_is_not_retried(start_sim) -> None:
    acct = Acct(ScaledClock(speed=1000.0, start=T0))
    sc = acct.scenario()
    acct.world.set_faults(latency_s=600, scopes={"latency_s": {"path_regex": "/run$"}})
    client = await writer(start_sim, acct, max_attempts=5, timeout_s=0.05)
    with pytest.raises(MakeApiError) as info:
        await client.run_scenario(sc.id)
    assert info.value.code == "TIMEOUT" and not info.value.retryable
    assert len(acct.posts("/run")) == 1


async def test_a_refused_connection_is_retried(fast_clock) -> None:
    seen: list[tuple[str, int | None]] = []
    async with aiohttp.ClientSession() as session:
        client = MakeClient(
            session,
            "http://127.0.0.1:1/api/v2",  # nothing listens on port 1
            "00000000-0000-4000-8000-000000000000",
            clock=fast_clock,
            max_attempts=3,
            on_response=lambda path, status: seen.append((path, status)),
        )
        with pytest.raises(MakeApiError) as info:
            await client.start_scenario(1)
    assert info.value.code == "NETWORK" and seen == [("/scenarios/1/start", None)] * 3


async def test_a_429_on_start_is_retried_after_the_window(start_sim, fast_clock) -> None:
    acct = Acct(fast_clock)
    sc = acct.scenario(active=False)
    acct.world.set_faults(storm_429_count=1)
    client = await writer(start_sim, acct)
    assert (await client.start_scenario(sc.id)).is_active is True
    assert [r.status for r in acct.posts("/start")] == [429, 200]


async def test_start_and_stop_count_against_the_org_bucket_and_run_does_not(
    start_sim, acct
) -> None:
    sc = acct.scenario()
    sim = await start_sim(acct.world)
    client = sim.client(acct.writer)
    limit = acct.org.api_limit

    async def raw(method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        headers = {"Authorization": f"Token {acct.writer}"}
        async with sim.session.request(
            method, sim.base_url + path, headers=headers, **kwargs
        ) as resp:
            await resp.read()
            return resp

    await client.stop_scenario(sc.id)
    await client.start_scenario(sc.id)
    for _ in range(3):
        await client.run_scenario(sc.id)
    run = await raw("POST", f"/scenarios/{sc.id}/run", json={"responsive": False})
    assert run.headers["x-ratelimit-limit"] == "5000"
    read = await raw("GET", f"/scenarios/{sc.id}")
    assert read.headers["x-ratelimit-limit"] == str(limit)
    # stop + start + this read; the four runs are not in the organization's count.
    assert int(read.headers["x-ratelimit-remaining"]) == limit - 3


def test_action_answer_summaries_in_plain_words() -> None:
    assert ActionAnswer(200, action="retry_dlqs", scenario_id=1, count=1).summary() == (
        "1 incomplete execution queued for retry"
    )
    assert ActionAnswer(200, action="retry_dlqs", scenario_id=1).summary() == (
        "all incomplete executions queued for retry"
    )
    assert ActionAnswer(200, action="run").summary() == "run started"
