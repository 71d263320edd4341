"""Detection against the simulator: baseline, exact event recording, cost, budget, isolation."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import START, log_messages

from watcher.clock import ManualClock
from watcher.config import load_config
from watcher.service import Watcher
from watcher.simulator import World
from watcher.store import Store


def settings_for(tmp_path: Path, sim, orgs: list[tuple[str, int, str]], extra: str = "", org_extra: str = ""):
    """orgs: (name, organization id, token). Returns validated Settings."""
    env = {}
    parts = []
    for i, (name, org_id, token) in enumerate(orgs):
        env[f"TOK{i}"] = token
        parts.append(
            f'[[organizations]]\nname = "{name}"\nbase_url = "{sim.base_url}"\n'
            f'organization_id = {org_id}\ntoken_env = "TOK{i}"\n{org_extra}\n'
        )
    cfg = tmp_path / "makewatch.toml"
    cfg.write_text("\n".join(parts) + f'\n[state]\ndb_path = "{tmp_path / "state.db"}"\n{extra}\n')
    return load_config(cfg, env=env)


class Rig:
    """Simulator + store + watcher sharing one ManualClock."""

    def __init__(self, sim, settings, store: Store) -> None:
        self.sim = sim
        self.world: World = sim.world
        self.clock: ManualClock = sim.world.clock
        self.store = store
        self.watcher = Watcher(settings, store, sim.session, self.clock)

    async def cycle(self):
        return await self.watcher.poll_once()

    def events(self, kind: str | None = None) -> list[dict]:
        def q(db):
            where = "kind = ?" if kind else "1 = 1"
            return [dict(r) for r in db["events"].rows_where(where, [kind] if kind else [], order_by="id")]

        return self.store.read_sync(q)


@pytest.fixture
async def rig_factory(start_sim, tmp_path):
    stores: list[Store] = []

    async def make(world: World, orgs, extra: str = "", org_extra: str = "") -> Rig:
        sim = await start_sim(world)
        settings = settings_for(tmp_path, sim, orgs, extra, org_extra)
        store = Store.open(settings.state.db_path)
        stores.append(store)
        return Rig(sim, settings, store)

    yield make
    for s in stores:
        s.close()


def agency_world(clock) -> tuple[World, dict]:
    world = World(seed=11, clock=clock)
    org = world.add_organization(name="Acme Agency", plan="enterprise", operations_limit=10000, operations_used=9200)
    team = world.add_team(org.id, name="Ops")
    ids = {
        "org": org,
        "team": team,
        "token": world.add_token(org_ids=[org.id]),
        "steady": world.add_scenario(team.id, name="Steady", interval_s=900),
        "flaky": world.add_scenario(team.id, name="Flaky <CRM>", interval_s=900, max_errors=0),
        "dlq": world.add_scenario(team.id, name="Orders", interval_s=900, store_incomplete=True, max_errors=0),
        "fragile": world.add_scenario(team.id, name="Fragile", interval_s=900, max_errors=2),
        "idle": world.add_scenario(team.id, name="Idle", interval_s=900),
    }
    return world, ids


def only(world_org, ids) -> list[tuple[str, int, str]]:
    return [("Acme", ids["org"].id, ids["token"])]


async def test_first_start_is_a_baseline_and_reports_standing_problems_once(rig_factory):
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    # History before makewatch ever looked: errors, a deactivation, a DLQ backlog, a hook queue.
    for _ in range(2):
        world.inject_run(ids["fragile"].id, status=3)
    world.inject_run(ids["flaky"].id, status=3)
    world.inject_run(ids["dlq"].id, status=3, error_name="ConnectionError", error_message="refused")
    world.add_hook(ids["team"].id, scenario_id=ids["steady"].id, queue_limit=50, queue_count=45)
    clock.advance(600)
    rig = await rig_factory(world, only(world, ids))

    (report,) = await rig.cycle()
    assert report.ok, report.error
    kinds = Counter(e["kind"] for e in rig.events())
    assert kinds == {"scenario_deactivated": 1, "incomplete_executions": 1, "quota": 1, "hook_backlog": 1}
    quota = rig.events("quota")[0]
    assert '"threshold_pct":90' in quota["payload_json"]

    clock.advance(60)
    (again,) = await rig.cycle()
    assert again.ok and sum(again.events.values()) == 0
    assert len(rig.events()) == 4


async def test_backfill_turns_recent_history_into_events(rig_factory):
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    old = world.inject_run(ids["flaky"].id, status=3, at=START - 30 * 3600)
    recent = [world.inject_run(ids["flaky"].id, status=3, at=START - h * 3600) for h in (20, 5, 1)]
    rig = await rig_factory(world, only(world, ids), extra='[polling]\nbackfill = "24h"')
    await rig.cycle()
    keys = {e["key"].rsplit(":", 1)[1] for e in rig.events("execution_error")}
    assert keys == {r["id"] for r in recent}
    assert old["id"] not in keys


async def test_it_records_exactly_the_failures_the_simulator_produced(rig_factory):
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    rig = await rig_factory(world, only(world, ids))
    await rig.cycle()  # baseline
    baseline = len(rig.events())

    produced = []
    clock.advance(120)
    for i in range(7):
        produced.append(world.inject_run(ids["flaky"].id, status=3, error_name="DataError", error_message=f"bad row {i}"))
        world.inject_run(ids["steady"].id, status=1)
    produced.append(world.inject_run(ids["dlq"].id, status=3, error_name="ConnectionError", error_message="refused"))
    produced += [world.inject_run(ids["fragile"].id, status=3) for _ in range(2)]  # deactivates it
    world.inject_run(ids["idle"].id, status=1, check=True)  # a check run: moves counters only
    clock.advance(60)

    await rig.cycle()
    errors = rig.events("execution_error")
    assert sorted(e["key"].rsplit(":", 1)[1] for e in errors) == sorted(r["id"] for r in produced)
    assert [e["kind"] for e in rig.events("scenario_deactivated")] == ["scenario_deactivated"]
    dlq_events = [e for e in rig.events("incomplete_executions") if "baseline" not in e["key"]]
    assert len(dlq_events) == 1 and '"reason":"refused"' in dlq_events[0]["payload_json"]
    flaky_error = next(e for e in errors if '"bad row 3"' in e["payload_json"])
    assert f'/scenarios/{ids["flaky"].id}/logs/' in flaky_error["payload_json"]
    assert flaky_error["team_id"] == ids["team"].id
    assert json.loads(flaky_error["payload_json"])["team_name"] == "Ops"

    # The same cycle again finds nothing new; a success resolves the flaky scenario.
    clock.advance(60)
    world.inject_run(ids["flaky"].id, status=1)
    clock.advance(60)
    await rig.cycle()
    assert len(rig.events("execution_error")) == len(produced)
    assert len(rig.events("execution_recovered")) == 1
    total_new = len(rig.events()) - baseline
    assert total_new == len(produced) + 1 + 1 + 1  # + deactivation, DLQ item, recovery


def big_world(clock: ManualClock, n: int) -> tuple[World, Any, str, list[Any]]:
    """One Enterprise organization of ``n`` daily scenarios that do not run by themselves."""
    world = World(seed=5, clock=clock)
    org = world.add_organization(name="Big", plan="enterprise", operations_limit=10**7)
    team = world.add_team(org.id, name="All")
    token = world.add_token(org_ids=[org.id])
    scenarios = [world.add_scenario(team.id, name=f"s{i}", interval_s=86400, first_run_at=START + 10**7) for i in range(n)]
    return world, org, token, scenarios


async def test_a_cycle_costs_list_pages_plus_reads_of_what_ran(rig_factory):
    clock = ManualClock(START)
    world, org, token, scenarios = big_world(clock, 1000)
    # (Enterprise analytics off: its own pages are counted in the next test)
    rig = await rig_factory(world, [("Big", org.id, token)], extra="[polling]\nanalytics = false", org_extra="budget_share = 1.0")
    await rig.cycle()  # baseline (org, usage, hooks, 2 list pages)
    clock.advance(30)
    ran = scenarios[::20]  # 50 scenarios (5 %) ran, 10 of them failed
    for i, sc in enumerate(ran):
        world.inject_run(sc.id, status=3 if i % 5 == 0 else 1)
    clock.advance(30)
    before = len(world.requests)
    (report,) = await rig.cycle()
    spent = world.requests[before:]
    assert report.requests == len(spent)
    list_pages = sum(1 for r in spent if r.path == "/api/v2/scenarios")
    log_reads = sum(1 for r in spent if r.path.endswith("/logs"))
    # 1000 // 1000 + 1 pages: a full last page needs one more (empty) page to know it was last
    assert list_pages == 2 and log_reads == 50
    assert len(spent) == list_pages + log_reads
    assert len(rig.events("execution_error")) == 10


async def test_a_cycle_writes_only_the_scenarios_that_changed_and_its_memory_matches_the_file(rig_factory):
    """Issue 16.3: every inventory rewrote all 10,000 rows, and every cycle reloaded them."""
    from watcher import store as st

    clock = ManualClock(START)
    world, org, token, scenarios = big_world(clock, 300)
    rig = await rig_factory(world, [("Big", org.id, token)], org_extra="budget_share = 1.0")
    await rig.cycle()
    ran = scenarios[::30]
    for sc in ran:
        world.inject_run(sc.id, status=1)
    clock.advance(60)
    await rig.cycle()
    stored = rig.store.read_sync(lambda db: st.get_scenarios(db, org.id))
    touched = {sid for sid, r in stored.items() if r["updated_at"] > START}
    assert touched == {sc.id for sc in ran}  # the 290 others were not rewritten
    poller = rig.watcher.pollers[0]
    for _ in range(3):
        world.inject_run(ran[0].id, status=3)
        clock.advance(60)
        await rig.cycle()
    stored = rig.store.read_sync(lambda db: st.get_scenarios(db, org.id))
    assert poller._rows is not None
    for sid, r in stored.items():
        mem = poller._rows[sid]
        diff = {k: (mem.get(k), v) for k, v in r.items() if mem.get(k) != v}
        assert not diff, (sid, diff)  # (a column the memory lacks is NULL in the file)
    assert poller._rows.keys() == stored.keys()
    cursors = rig.store.read_sync(lambda db: st.get_cursors(db, org.id))
    assert poller._cursors.keys() == cursors.keys()
    for key, cur in cursors.items():
        assert {c: v for c, v in cur.items() if v is not None} == {
            c: v for c, v in poller._cursors[key].items() if v is not None
        }, key


async def test_work_that_does_not_fit_carries_over_and_nothing_starves(rig_factory):
    clock = ManualClock(START)
    world = World(seed=6, clock=clock)
    org = world.add_organization(name="Tight", plan="core")  # 60/min, share 0.5 -> 30 per cycle
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    scs = [world.add_scenario(team.id, name=f"s{i}", interval_s=86400, first_run_at=START + 10**7, max_errors=3) for i in range(80)]
    rig = await rig_factory(world, [("Tight", org.id, token)])
    await rig.cycle()
    clock.advance(62)  # a poll interval, and past the limiter's 1 s margin
    for sc in scs:
        world.inject_run(sc.id, status=1)
    for sc in scs[70:73]:  # three of them fail until Make switches them off
        for _ in range(3):
            world.inject_run(sc.id, status=3)
    clock.advance(62)  # a poll interval, and past the limiter's 1 s margin
    (first,) = await rig.cycle()
    assert first.carried_over > 0 and first.requests <= 30
    deactivated = {e["scenario_id"] for e in rig.events("scenario_deactivated")}
    assert deactivated == {sc.id for sc in scs[70:73]}
    errors_first = {e["scenario_id"] for e in rig.events("execution_error")}
    assert errors_first == deactivated  # switched-off scenarios were read first
    cycles = 1
    while True:
        clock.advance(62)  # a poll interval, and past the limiter's 1 s margin
        (r,) = await rig.cycle()
        cycles += 1
        assert r.requests <= 30
        if r.carried_over == 0:
            break
        assert cycles < 10
    checked = rig.store.read_sync(lambda db: [row["last_checked_at"] for row in db["scenarios"].rows])
    assert all(t > START + 60 for t in checked)  # every scenario was read after it ran


# --- isolation and health ----------------------------------------------------------------


def two_orgs(clock):
    world = World(seed=21, clock=clock)
    good = world.add_organization(name="Good", plan="pro")
    bad = world.add_organization(name="Broken", plan="pro")
    gt, bt = world.add_team(good.id, name="G"), world.add_team(bad.id, name="B")
    far = START + 10**8
    ids = {
        "good": good,
        "bad": bad,
        "good_token": world.add_token(org_ids=[good.id]),
        "bad_token": world.add_token(org_ids=[bad.id]),
        "good_sc": world.add_scenario(gt.id, name="Good one", first_run_at=far, max_errors=0),
        "bad_sc": world.add_scenario(bt.id, name="Bad one", first_run_at=far, max_errors=0),
        "bad_sc2": world.add_scenario(bt.id, name="Bad two", first_run_at=far, max_errors=0),
    }
    return world, ids


@pytest.mark.parametrize("fault", ["token", "5xx_storm", "malformed_json", "logs_404"])
async def test_a_broken_organization_does_not_stop_the_others(rig_factory, fast_clock, fault):
    world, ids = two_orgs(fast_clock)
    bad_token = ids["bad_token"] if fault != "token" else "00000000-1111-4222-8333-444444444444"
    rig = await rig_factory(
        world, [("Good", ids["good"].id, ids["good_token"]), ("Broken", ids["bad"].id, bad_token)]
    )
    await rig.cycle()  # baseline (the broken org fails already in the "token" case)
    bad = ids["bad"].id
    if fault == "5xx_storm":
        world.set_faults(error_5xx_count=10**6, org_id=bad)
    elif fault == "malformed_json":
        world.set_faults(malformed_json_count=10**6, org_id=bad)
    elif fault == "logs_404":
        world.set_faults(error_5xx_count=10**6, error_5xx_status=404, path_regex=rf"/scenarios/{ids['bad_sc'].id}/logs$")
    good_run = world.inject_run(ids["good_sc"].id, status=3)
    world.inject_run(ids["bad_sc"].id, status=3)
    other_bad = world.inject_run(ids["bad_sc2"].id, status=3)
    good_report, bad_report = await rig.cycle()
    assert good_report.ok
    keys = {e["key"] for e in rig.events("execution_error")}
    assert any(good_run["id"] in k for k in keys)
    if fault == "logs_404":
        assert bad_report.ok  # the rest of that organization is read too
        assert any(other_bad["id"] in k for k in keys)
    else:
        assert not bad_report.ok
        assert not any(other_bad["id"] in k for k in keys)


async def test_a_slow_organization_does_not_delay_the_others(rig_factory):
    from watcher.clock import ScaledClock

    clock = ScaledClock(speed=100.0, start=START)
    world, ids = two_orgs(clock)
    # The slow organization comes first: a sequential poller would make the good one wait.
    rig = await rig_factory(world, [("Broken", ids["bad"].id, ids["bad_token"]), ("Good", ids["good"].id, ids["good_token"])])
    await rig.cycle()
    world.set_faults(latency_s=60.0, org_id=ids["bad"].id)
    world.inject_run(ids["good_sc"].id, status=3)
    start = clock.time()
    await rig.cycle()
    good_t = [r.t for r in world.requests if r.org_id == ids["good"].id and r.t >= start]
    bad_t = [r.t for r in world.requests if r.org_id == ids["bad"].id and r.t >= start]
    assert good_t and bad_t
    # done (a few requests, milliseconds of real time) while the slow one still waits for
    # its first answer; 30 simulated seconds is 0.3 s of real time of margin
    assert max(good_t) - start < 30
    assert len(rig.events("execution_error")) == 1


async def test_it_reports_an_unreachable_organization_once_and_its_recovery(rig_factory, fast_clock):
    world, ids = two_orgs(fast_clock)
    rig = await rig_factory(world, [("Broken", ids["bad"].id, ids["bad_token"])], extra="[http]\nmax_attempts = 2")
    await rig.cycle()
    world.set_faults(error_5xx_count=10**6, org_id=ids["bad"].id)
    for _ in range(4):
        (r,) = await rig.cycle()
        assert not r.ok
    health = rig.events("watcher_health")
    assert [h["key"].split(":")[2] for h in health] == ["unreachable"]
    world.set_faults(reset=True)
    (r,) = await rig.cycle()
    assert r.ok
    health = rig.events("watcher_health")
    assert [h["key"].split(":")[2] for h in health] == ["unreachable", "recovered"]


async def test_a_rejected_token_is_reported_at_once(rig_factory, fast_clock):
    world, ids = two_orgs(fast_clock)
    wrong = "00000000-1111-4222-8333-444444444444"
    rig = await rig_factory(world, [("Broken", ids["bad"].id, wrong)])
    for _ in range(3):
        (r,) = await rig.cycle()
        assert not r.ok and "401" in r.error
    health = rig.events("watcher_health")
    assert len(health) == 1 and health[0]["key"].split(":")[2] == "token_rejected"
    assert wrong not in health[0]["payload_json"]


# --- the other event kinds after the baseline ------------------------------------------------


async def test_quota_hooks_pause_reactivation_and_warnings_after_the_baseline(rig_factory):
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    hook = world.add_hook(ids["team"].id, scenario_id=ids["steady"].id, queue_limit=50, queue_count=10)
    rig = await rig_factory(world, only(world, ids), extra="[polling]\nwarnings = true")
    await rig.cycle()
    assert [e["kind"] for e in rig.events()] == ["quota"]  # 92 % at start: the 90 % line, once

    world.inject_run(ids["fragile"].id, status=3)
    world.inject_run(ids["fragile"].id, status=3)  # Make switches it off
    warning = world.inject_run(ids["steady"].id, status=2)
    clock.advance(60)
    await rig.cycle()
    assert len(rig.events("scenario_deactivated")) == 1
    assert [e["key"].rsplit(":", 1)[1] for e in rig.events("execution_warning")] == [warning["id"]]

    world.set_active(ids["fragile"].id, True)
    world.hooks[hook.id].queue_count = 45
    world.inject_run(ids["steady"].id, status=1, operations=900)  # 10100 of 10000: quota gone
    clock.advance(901)  # past usage_interval_s: organization, usage and hooks are read again
    await rig.cycle()
    kinds = Counter(e["kind"] for e in rig.events())
    assert kinds["scenario_reactivated"] == 1
    assert kinds["hook_backlog"] == 1
    assert kinds["scenario_paused"] == 1  # the organization, once, not each scenario
    quota = rig.events("quota")
    assert len(quota) == 2 and quota[-1]["severity"] == "critical"
    assert '"threshold_pct":100' in quota[-1]["payload_json"]

    clock.advance(901)
    (r,) = await rig.cycle()
    assert sum(r.events.values()) == 0  # still full, still paused: nothing new


async def test_the_sweep_finds_a_failure_that_moved_no_counter(rig_factory):
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    rig = await rig_factory(world, only(world, ids), extra="[polling]\nsweep_interval_s = 3600.0")
    await rig.cycle()
    silent = world.inject_run(ids["idle"].id, status=3, operations=0)  # failed before module 1
    clock.advance(60)
    await rig.cycle()
    assert rig.events("execution_error") == []
    clock.advance(3600)
    await rig.cycle()
    assert [e["key"].rsplit(":", 1)[1] for e in rig.events("execution_error")] == [silent["id"]]


async def test_a_missing_scope_is_reported_once_and_the_rest_still_works(rig_factory):
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    token = world.add_token(org_ids=[ids["org"].id], scopes=["organizations:read", "scenarios:read", "teams:read"])
    world.add_hook(ids["team"].id, queue_limit=50)
    rig = await rig_factory(world, [("Acme", ids["org"].id, token)])
    await rig.cycle()
    clock.advance(60)
    world.inject_run(ids["flaky"].id, status=3)
    world.inject_run(ids["dlq"].id, status=3)  # dlqCount rises, but dlqs:read is missing
    clock.advance(60)
    await rig.cycle()
    clock.advance(901)
    await rig.cycle()
    scopes = sorted(e["key"].split(":scope_missing:")[1] for e in rig.events("watcher_health"))
    assert scopes == ["dlqs:read", "hooks:read"]
    assert len(rig.events("execution_error")) == 2


def test_a_counter_that_went_down_means_a_new_period_and_counts_as_moved():
    from watcher.make import Scenario
    from watcher.poller import _moved

    prev = {"operations": 500, "centicredits": 50000, "dlq_count": 0, "is_active": 1, "is_invalid": 0}
    after_reset = Scenario.parse({"id": 1, "isActive": True, "operations": 3, "centicredits": 300})
    same = Scenario.parse({"id": 1, "isActive": True, "operations": 500, "centicredits": 50000})
    assert _moved(prev, after_reset) == ["counters"]
    assert _moved(prev, same) == []


async def test_each_cycle_is_recorded_with_its_cost_and_the_quota_summary_kept(rig_factory, fast_clock):
    world, ids = two_orgs(fast_clock)
    rig = await rig_factory(world, [("Broken", ids["bad"].id, ids["bad_token"])], extra="[http]\nmax_attempts = 1")
    await rig.cycle()
    world.set_faults(error_5xx_count=10**6, org_id=ids["bad"].id)
    await rig.cycle()
    cycles = rig.store.read_sync(lambda db: [dict(r) for r in db["cycles"].rows_where(order_by="id")])
    assert [c["ok"] for c in cycles] == [1, 0]
    assert cycles[0]["requests"] == len([r for r in world.requests if r.status == 200])
    assert cycles[0]["budget_per_minute"] == 60
    assert cycles[1]["error"].startswith("Make API 5")
    usage = rig.store.read_sync(lambda db: db["organizations"].get(ids["bad"].id)["usage_json"])
    summary = json.loads(usage)
    assert summary["operations_limit"] > 0 and summary["used_pct"] is not None


async def test_a_long_run_listed_after_a_later_one_is_still_recorded(rig_factory):
    """A run's imtId carries its start time: a long run that ends after a short, later one
    appears behind the cursor. The overlap re-read finds it; nothing else is repeated."""
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    rig = await rig_factory(world, only(world, ids))
    await rig.cycle()
    clock.advance(300)
    world.inject_run(ids["flaky"].id, status=3, error_message="first")
    world.inject_run(ids["flaky"].id, status=1)
    clock.advance(60)
    await rig.cycle()
    assert len(rig.events("execution_error")) == 1 and len(rig.events("execution_recovered")) == 1
    late = world.inject_run(ids["flaky"].id, status=3, error_message="long run", at=clock.time() - 200)
    clock.advance(60)
    (r,) = await rig.cycle()
    assert [e["key"].rsplit(":", 1)[1] for e in rig.events("execution_error")][-1] == late["id"]
    assert r.events == {"execution_error": 1}  # only the late one is new
    assert len(rig.events("execution_recovered")) == 1


async def test_a_new_billing_period_and_an_emptied_queue_resolve_their_alerts(rig_factory):
    clock = ManualClock(START)
    world = World(seed=12, clock=clock)
    org = world.add_organization(name="Quota", plan="core", operations_limit=10000, operations_used=9500)
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    sc = world.add_scenario(team.id, name="s", first_run_at=START + 10**8)
    hook = world.add_hook(team.id, scenario_id=sc.id, queue_limit=50, queue_count=45)
    rig = await rig_factory(world, [("Quota", org.id, token)])
    await rig.cycle()
    assert Counter(e["kind"] for e in rig.events()) == {"quota": 1, "hook_backlog": 1}
    # Issue 13: the backlog names the scenario behind the hook and links to it; the quota
    # links to the organization's usage in Make.
    backlog = json.loads(rig.events("hook_backlog")[0]["payload_json"])
    assert backlog["scenario_name"] == "s"
    assert backlog["scenario_url"].endswith(f"/{team.id}/scenarios/{sc.id}/edit")
    assert json.loads(rig.events("quota")[0]["payload_json"])["usage_url"].endswith(
        f"/organization/{org.id}/dashboard"
    )

    world.hooks[hook.id].queue_count = 3
    clock.advance(32 * 86400)  # past nextReset: Make starts a new period with fresh counters
    await rig.cycle()
    quota = rig.events("quota")
    hooks = rig.events("hook_backlog")
    assert len(quota) == 2 and json.loads(quota[1]["payload_json"])["recovered"] is True
    assert len(hooks) == 2 and json.loads(hooks[1]["payload_json"])["recovered"] is True
    assert quota[1]["severity"] == hooks[1]["severity"] == "info"


# --- what to read first when the budget cannot read everything ------------------------------


async def drain(rig, clock, step: float = 62.0, limit: int = 20) -> None:
    for _ in range(limit):
        clock.advance(step)
        (r,) = await rig.cycle()
        if r.carried_over == 0:
            return
    raise AssertionError("pending reads never drained")


async def test_a_run_that_used_fewer_operations_than_usual_is_read_first(rig_factory):
    from watcher.steps import WARMUP_STEPS

    clock = ManualClock(START)
    world = World(seed=14, clock=clock)
    org = world.add_organization(name="Busy", plan="core")  # 30 requests per cycle
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    far = START + 10**8
    scs = [world.add_scenario(team.id, name=f"s{i}", first_run_at=far, operations_per_run=5, max_errors=0) for i in range(200)]
    rig = await rig_factory(world, [("Busy", org.id, token)])
    await rig.cycle()
    for _ in range(WARMUP_STEPS):  # ordinary runs: makewatch learns a run costs 5 operations
        for sc in scs:
            world.inject_run(sc.id, status=1)
        clock.advance(62)
        await drain(rig, clock)

    clock.advance(62)
    for sc in scs[:-1]:
        world.inject_run(sc.id, status=1)
    failed = world.inject_run(scs[-1].id, status=3, operations=2)  # stopped at module 2
    clock.advance(62)
    (r,) = await rig.cycle()
    assert r.carried_over > 100  # most of the 200 wait for later cycles...
    assert [e["key"].rsplit(":", 1)[1] for e in rig.events("execution_error")] == [failed["id"]]  # ...not this one


@pytest.mark.parametrize("busy", [True, False])
async def test_an_expensive_inventory_is_listed_every_fourth_cycle_while_reads_need_the_budget(rig_factory, busy):
    """And every cycle when the budget would sit idle (issue 16.3: after a big listing the
    next one waited 13.5 minutes while nothing else was read)."""
    clock = ManualClock(START)
    world = World(seed=15, clock=clock)
    org = world.add_organization(name="Big", plan="core")  # 30 per cycle; 1000 scenarios = 11 pages
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    scs = [world.add_scenario(team.id, name=f"s{i}", first_run_at=START + 10**8) for i in range(1000)]
    rig = await rig_factory(world, [("Big", org.id, token)])
    rig.watcher.pollers[0].scenario_page_size = 100  # (of 100, as a Make capping pages at 100 would)
    pages = []
    for _ in range(8):
        if busy:
            for sc in scs[::5]:  # 200 scenarios ran: their reads need more than a cycle
                world.inject_run(sc.id, status=1)
        before = len(world.requests)
        await rig.cycle()
        pages.append(sum(1 for r in world.requests[before:] if r.path == "/api/v2/scenarios"))
        clock.advance(62)
    # (the second cycle lists: nothing was known to be pending before it.) 11 pages are more
    # than a tenth of a 30-request cycle: listed every fourth cycle, the rest reads logs.
    assert pages == ([11, 11, 0, 0, 0, 11, 0, 0] if busy else [11] * 8)


def test_priority_follows_the_learnt_error_rate_and_grows_with_waiting():
    from watcher.reads import priority

    def prio(_self: None, row: dict, now: float) -> float:
        return priority(row, now)

    base = {"is_active": 1, "scheduling": {"interval": 900}, "last_checked_at": 0.0, "pending_reason": "counters"}
    flaky = {**base, "runs_seen": 20, "errors_seen": 6}
    steady = {**base, "runs_seen": 20, "errors_seen": 0}
    assert prio(None, flaky, 900) > prio(None, steady, 900)
    assert prio(None, steady, 900 * 50) > prio(None, flaky, 900)  # waiting long enough wins: no starvation
    assert prio(None, {**steady, "pending_reason": "partial"}, 900) > prio(None, flaky, 900 * 50)
    assert prio(None, {**steady, "pending_reason": "state"}, 900) > prio(None, {**steady, "pending_reason": "partial"}, 900)


async def test_a_quiet_organization_polls_sooner_and_each_cycle_takes_its_share(rig_factory):
    clock = ManualClock(START)
    world = World(seed=16, clock=clock)
    org = world.add_organization(name="Quiet", plan="core")  # 30 requests per minute
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    scs = [world.add_scenario(team.id, name=f"s{i}", first_run_at=START + 10**8) for i in range(40)]
    rig = await rig_factory(world, [("Quiet", org.id, token)])
    poller = rig.watcher.pollers[0]
    (first,) = await rig.cycle()  # baseline: org, usage, hooks, one page = 4 requests
    assert first.requests == 4
    assert poller.next_interval_s(first) == 10.0  # 4 / 30 min x 1.25 = 10 s: the floor
    for sc in scs:
        world.inject_run(sc.id, status=1)
    clock.advance(10)
    (busy,) = await rig.cycle()
    assert busy.requests == 5  # a 10 s cycle's share of 30/min: 1 page + 4 reads
    assert busy.carried_over == 36
    assert poller.next_interval_s(busy) == 12.5
    failed = dataclasses.replace(busy, error="Make API 503")
    assert poller.next_interval_s(failed) == 5.0  # an outage: try again within seconds
    rejected = dataclasses.replace(busy, error="Make API 401", retryable=False)
    assert poller.next_interval_s(rejected) == 60.0  # a config problem: the longest


async def test_a_check_run_after_a_failure_is_not_a_recovery(rig_factory):
    """Make's docs and practice disagree on whether /logs lists check runs; if it does, an
    empty poll after a failure must not resolve the alert."""
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    rig = await rig_factory(world, only(world, ids))
    await rig.cycle()
    clock.advance(60)
    world.set_faults(check_runs_listed=True)
    world.inject_run(ids["flaky"].id, status=3)
    world.inject_run(ids["flaky"].id, status=1, check=True)  # an empty poll, listed
    clock.advance(60)
    await rig.cycle()
    assert len(rig.events("execution_error")) == 1
    assert rig.events("execution_recovered") == []
    clock.advance(60)
    world.inject_run(ids["flaky"].id, status=1)  # a real run that worked
    clock.advance(60)
    await rig.cycle()
    assert len(rig.events("execution_recovered")) == 1


async def test_history_before_the_first_start_never_becomes_an_event(rig_factory):
    """Issue 12.2: the 10-minute re-read before a cursor once reached back before the baseline
    and alerted an error from 06:55 that had recovered at 06:57."""
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    flaky = ids["flaky"].id
    world.inject_run(flaky, status=3, error_message="before makewatch", at=START - 300)
    world.inject_run(flaky, status=1, at=START - 180)
    rig = await rig_factory(world, only(world, ids))
    await rig.cycle()  # the baseline
    for _ in range(3):  # later runs: each read re-reads 10 minutes before its cursor
        clock.advance(60)
        world.inject_run(flaky, status=1)
        clock.advance(30)
        await rig.cycle()
    assert rig.events("execution_error") == [] and rig.events("execution_recovered") == []
    logs = [r for r in world.requests if r.path.endswith(f"/scenarios/{flaky}/logs")]
    assert len(logs) >= 2  # it did read them, with the overlap
    after = world.inject_run(flaky, status=3, error_message="after the start")
    clock.advance(30)
    await rig.cycle()
    assert [e["key"].rsplit(":", 1)[1] for e in rig.events("execution_error")] == [after["id"]]


async def test_a_failed_cycle_is_tried_again_within_seconds_and_backs_off(rig_factory, fast_clock):
    """Issue 12.6: a 2-minute API outage must cost about 2 minutes of detection, not 6."""
    world, ids = two_orgs(fast_clock)
    rig = await rig_factory(world, [("Broken", ids["bad"].id, ids["bad_token"])], extra="[http]\nmax_attempts = 2")
    (poller,) = rig.watcher.pollers
    (r,) = await rig.cycle()
    assert r.ok and poller.next_interval_s(r) >= 10
    for kind in ("error_5xx_count", "html_error_count", "malformed_json_count"):
        world.set_faults(reset=True)
        world.set_faults(**{kind: 10**6}, org_id=ids["bad"].id)
        waits = []
        for _ in range(5):
            (r,) = await rig.cycle()
            assert not r.ok and r.retryable
            waits.append(poller.next_interval_s(r))
        assert waits == [5, 10, 20, 30, 30], kind
        world.set_faults(reset=True)
        (r,) = await rig.cycle()
        assert r.ok and poller.next_interval_s(r) >= 10


async def test_a_rejected_token_is_not_hammered(rig_factory, fast_clock):
    world, ids = two_orgs(fast_clock)
    wrong = "00000000-1111-4222-8333-444444444444"
    rig = await rig_factory(world, [("Broken", ids["bad"].id, wrong)])
    (poller,) = rig.watcher.pollers
    (r,) = await rig.cycle()
    assert not r.retryable and poller.next_interval_s(r) == 60.0  # poll_interval_s


async def test_a_rate_limit_pause_is_bounded_and_a_long_one_raises_watcher_health(rig_factory, fast_clock):
    world, ids = two_orgs(fast_clock)
    rig = await rig_factory(world, [("Broken", ids["bad"].id, ids["bad_token"])], extra="[http]\nmax_attempts = 3")
    (poller,) = rig.watcher.pollers
    await rig.cycle()
    # Make says: come back in an hour. A 60 s window never needs more than about 2 minutes.
    world.set_faults(storm_429_count=10**6, retry_after_s=3600.0, org_id=ids["bad"].id)
    start = fast_clock.time()
    (r,) = await rig.cycle()
    assert not r.ok and "429" in r.error
    took = fast_clock.time() - start
    assert 2 * 120 <= took < 3 * 120 + 30  # three attempts, each pause cut to 120 s
    health = [e for e in rig.events("watcher_health") if "rate_limited" in e["key"]]
    assert len(health) == 1 and '"problem":"rate_limited"' in health[0]["payload_json"]
    (r,) = await rig.cycle()  # still limited: told once
    assert len([e for e in rig.events("watcher_health") if "rate_limited" in e["key"]]) == 1
    world.set_faults(reset=True)
    (r,) = await rig.cycle()
    assert r.ok
    keys = [e["key"] for e in rig.events("watcher_health") if "rate_limited" in e["key"]]
    assert len(keys) == 2 and keys[1].endswith(":ok")


async def test_quota_and_hook_reads_come_every_few_minutes_and_sooner_near_a_threshold(rig_factory):
    clock = ManualClock(START)
    world, ids = agency_world(clock)  # 92 % used: the 100 % threshold is 8 points away
    world.add_hook(ids["team"].id, scenario_id=ids["steady"].id, queue_limit=100, queue_count=10)
    rig = await rig_factory(world, only(world, ids))

    def org_reads() -> list[float]:
        return [r.t for r in world.requests if r.path == f"/api/v2/organizations/{ids['org'].id}"]

    for _ in range(40):  # 20 minutes
        await rig.cycle()
        clock.advance(30)
    reads = org_reads()
    gaps = [b - a for a, b in zip(reads, reads[1:], strict=False)]
    assert gaps and max(gaps) <= 330, gaps  # every 5 minutes, not 15
    # A queue half way to its alert: read every minute, so a crossing is found within one.
    world.hooks[next(iter(world.hooks))].queue_count = 45
    before = len(org_reads())
    for _ in range(20):
        await rig.cycle()
        clock.advance(30)
    near = org_reads()[before:]
    assert max(b - a for a, b in zip(near[1:], near[2:], strict=False)) <= 90


async def test_once_from_cron_keeps_to_the_usage_interval(rig_factory):
    """Issue 12.11: every `makewatch once` re-read organization, usage and hooks."""
    from watcher.service import Watcher

    clock = ManualClock(START)
    world, ids = agency_world(clock)
    rig = await rig_factory(world, only(world, ids), extra="[polling]\nusage_interval_s = 900")
    await rig.cycle()
    for _ in range(6):  # a new process each minute, as cron runs it
        clock.advance(60)
        fresh = Watcher(rig.watcher.settings, rig.store, rig.sim.session, clock)
        (r,) = await fresh.poll_once()
        assert r.ok
        assert fresh.pollers[0].client.limiter.per_window == rig.watcher.pollers[0].client.limiter.per_window
    reads = [r for r in world.requests if r.path == f"/api/v2/organizations/{ids['org'].id}"]
    assert len(reads) == 2  # the first cycle and once the 5-minute floor had passed


async def test_a_deactivation_names_the_errors_that_caused_it(rig_factory):
    """Issue 12.5: a deactivation says why: its last failed runs, read at once."""
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    rig = await rig_factory(world, only(world, ids))
    await rig.cycle()
    clock.advance(60)
    fragile = ids["fragile"].id
    world.inject_run(fragile, status=3, error_name="AccountValidationError", error_message="Token expired for Gmail")
    clock.advance(5)
    world.inject_run(fragile, status=3, error_name="AccountValidationError", error_message="Token expired again")
    clock.advance(30)
    await rig.cycle()
    (deact,) = rig.events("scenario_deactivated")
    payload = json.loads(deact["payload_json"])
    assert [e["error_message"] for e in payload["errors"]] == ["Token expired for Gmail", "Token expired again"]
    assert payload["error_name"] == "AccountValidationError"
    assert f"/scenarios/{fragile}/logs/" in payload["run_url"]
    assert payload["is_active"] is False and payload["is_invalid"] is True


async def test_a_deactivation_is_read_even_when_the_cycle_budget_is_spent(rig_factory):
    clock = ManualClock(START)
    world = World(seed=5, clock=clock)
    org = world.add_organization(name="Tight", plan="core")
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    scs = [world.add_scenario(team.id, name=f"s{i}", interval_s=86400, first_run_at=START + 10**7, max_errors=2) for i in range(60)]
    rig = await rig_factory(world, [("Tight", org.id, token)])
    await rig.cycle()
    clock.advance(62)
    for sc in scs:
        world.inject_run(sc.id, status=1)
    for _ in range(2):
        world.inject_run(scs[-1].id, status=3, error_message="quota of the CRM exceeded")
    clock.advance(62)
    (r,) = await rig.cycle()
    assert r.carried_over > 0  # the budget did not cover everything that moved
    (deact,) = rig.events("scenario_deactivated")
    assert "quota of the CRM exceeded" in deact["payload_json"]


async def test_malformed_scenarios_in_a_listing_are_skipped_and_counted_and_the_rest_polled(rig_factory):
    clock = ManualClock(START)
    world = World(seed=5, clock=clock)
    orgs = []
    for name in ("Acme", "Globex"):
        org = world.add_organization(name=name, plan="pro")
        team = world.add_team(org.id, name="Ops")
        # Listed by id ascending: the first two of Acme's listing are the ones corrupted.
        bad = [world.add_scenario(team.id, name=f"bad {i}", interval_s=900) for i in range(2)]
        good = world.add_scenario(team.id, name="good", interval_s=900, max_errors=5)
        orgs.append((name, org, bad, good, world.add_token(org_ids=[org.id])))
    acme, globex = orgs[0][1], orgs[1][1]
    world.set_faults(corrupt_entries=2, scopes={"corrupt_entries": {"org_id": acme.id, "path_regex": "/scenarios$"}})
    rig = await rig_factory(world, [(name, org.id, token) for name, org, _, _, token in orgs])

    with log_messages(logging.WARNING) as logged:
        reports = await rig.cycle()
        for _, _, _, good, _ in orgs:
            world.inject_run(good.id, status=3, error_name="DataError", error_message="row 7")
        clock.advance(120)
        reports += await rig.cycle()

    assert all(r.ok for r in reports), [r.error for r in reports]
    assert [r.scenarios for r in reports] == [1, 3, 1, 3]  # Acme, Globex; twice
    errors = {(e["org_id"], e["scenario_id"]) for e in rig.events("execution_error")}
    assert errors == {(acme.id, orgs[0][3].id), (globex.id, orgs[1][3].id)}
    assert sum("skipping malformed scenario" in m for m in logged) == 2  # once each, not per cycle
    sample = rig.watcher.metrics.registry.get_sample_value
    assert sample("makewatch_api_entries_skipped_total", {"org": "Acme", "endpoint": "/scenarios"}) == 4
    assert sample("makewatch_api_entries_skipped_total", {"org": "Globex", "endpoint": "/scenarios"}) is None


def _analytics_world(clock, scopes=None):
    world = World(seed=21, clock=clock)
    world.signals.knobs.update({"analytics_lag_s": 0})
    org = world.add_organization(name="Big", plan="enterprise", operations_limit=10**8)
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id], scopes=scopes)
    far = START + 10**8
    scs = [world.add_scenario(team.id, name=f"s{i}", first_run_at=far, operations_per_run=5, max_errors=0) for i in range(200)]
    return world, org, token, scs


def analytics_reads(world, org_id: int) -> int:
    return sum(1 for r in world.requests if r.path == f"/api/v2/analytics/{org_id}")


async def test_an_error_counted_by_enterprise_analytics_is_read_first(rig_factory):
    """Issue 16.2: a failed run whose operations look like a good one's is found at once
    where Make's analytics count it, though 199 other scenarios wait for a tight budget."""
    clock = ManualClock(START)
    world, org, token, scs = _analytics_world(clock)
    rig = await rig_factory(world, [("Big", org.id, token)], org_extra="budget_share = 0.01")  # 10 a minute
    await rig.cycle()  # baseline, the analytics' too
    assert analytics_reads(world, org.id) == 1
    clock.advance(61)
    for sc in scs[:-1]:
        world.inject_run(sc.id, status=1, operations=5)
    failed = world.inject_run(scs[-1].id, status=3, operations=5)  # failed at the last module
    clock.advance(61)
    (r,) = await rig.cycle()
    assert analytics_reads(world, org.id) == 2
    assert r.analytics_rose == 1 and r.reads["signal:analytics"] == 1 and r.found["signal:analytics"] == 1
    assert r.carried_over > 150  # the others wait...
    assert [e["key"].rsplit(":", 1)[1] for e in rig.events("execution_error")] == [failed["id"]]  # ...not this one


async def test_analytics_are_read_only_where_the_license_has_them(rig_factory):
    clock = ManualClock(START)
    world = World(seed=22, clock=clock)
    org = world.add_organization(name="Core org", plan="core")
    team = world.add_team(org.id, name="T")
    world.add_scenario(team.id, name="s")
    rig = await rig_factory(world, [("Core org", org.id, world.add_token(org_ids=[org.id]))])
    for _ in range(3):
        (r,) = await rig.cycle()
        assert r.ok
        clock.advance(61)
    assert analytics_reads(world, org.id) == 0


async def test_a_token_without_the_analytics_scope_turns_the_signal_off_for_an_hour(rig_factory, caplog):
    from watcher.simulator import ALL_READ_SCOPES

    clock = ManualClock(START)
    world, org, token, scs = _analytics_world(clock, scopes=[s for s in ALL_READ_SCOPES if s != "analytics:read"])
    rig = await rig_factory(world, [("Big", org.id, token)])
    with caplog.at_level(logging.WARNING, logger="watcher.poller"):
        for _ in range(5):
            (r,) = await rig.cycle()
            assert r.ok
            clock.advance(61)
    assert analytics_reads(world, org.id) == 1  # one 403, then nothing for an hour
    assert sum("analytics not readable" in m for m in caplog.messages) == 1
    clock.advance(3600)
    await rig.cycle()
    assert analytics_reads(world, org.id) == 2


async def test_an_in_app_notification_names_the_scenario_to_read_first(rig_factory):
    """Issue 16.2: GET /notifications, opt-in; it names the scenario only in its subject."""
    clock = ManualClock(START)
    world = World(seed=23, clock=clock)
    world.signals.knobs.update({"notification_missing_share": 0.0, "notification_lag_min_s": 0, "notification_lag_max_s": 0})
    org = world.add_organization(name="Busy", plan="core")
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    far = START + 10**8
    scs = [world.add_scenario(team.id, name=f"s{i}", first_run_at=far, operations_per_run=5, max_errors=0) for i in range(60)]
    twin = world.add_scenario(team.id, name="s59", first_run_at=far, operations_per_run=5, max_errors=0)
    rig = await rig_factory(world, [("Busy", org.id, token)], extra="[polling]\nnotifications = true", org_extra="budget_share = 0.1")
    await rig.cycle()  # baseline of the feed too
    notices = [r for r in world.requests if r.path == "/api/v2/notifications"]
    assert len(notices) == 1
    clock.advance(61)
    for sc in scs[:-1]:
        world.inject_run(sc.id, status=1, operations=5)
    failed = world.inject_run(scs[-1].id, status=3, operations=5)  # looks like a good run
    clock.advance(61)
    (r,) = await rig.cycle()
    assert r.notified == 2  # "s59" names two scenarios: both are read
    assert r.reads["signal:notified"] == 2 and r.found["signal:notified"] == 1
    assert r.carried_over > 30
    assert [e["key"].rsplit(":", 1)[1] for e in rig.events("execution_error")] == [failed["id"]]
    assert twin.id != scs[-1].id


async def test_in_app_notifications_are_not_read_unless_asked(rig_factory):
    clock = ManualClock(START)
    world, ids = agency_world(clock)
    rig = await rig_factory(world, only(world, ids))
    for _ in range(3):
        await rig.cycle()
        clock.advance(61)
    assert not [r for r in world.requests if r.path == "/api/v2/notifications"]
