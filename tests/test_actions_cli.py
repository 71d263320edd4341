"""`makewatch scenario …`, `makewatch dlq …` and `makewatch check`'s actions line, against the
simulator on 127.0.0.1 (served from its own thread, so the CLI's event loop is its own)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SimThread

from watcher.cli import main
from watcher.clock import ManualClock
from watcher.simulator import WRITE_SCOPES, World
from watcher.simulator.world import ALL_READ_SCOPES
from watcher.store import Store

START = 1_790_000_000.0


@pytest.fixture
def sim():
    world = World(seed=5, clock=ManualClock(START))
    org = world.add_organization(name="Kontor", plan="core")
    team = world.add_team(org.id, name="Ops")
    far = START + 10**8
    ids = {
        "org": org.id,
        "flaky": world.add_scenario(team.id, name="Flaky", first_run_at=far, max_errors=2).id,
        "queue": world.add_scenario(team.id, name="Queue", first_run_at=far, max_errors=0, store_incomplete=True).id,
        "hook": world.add_scenario(team.id, name="Hook", first_run_at=far, max_errors=0, webhook=True).id,
    }
    env = {
        "READ": world.add_token(org_ids=[org.id]),
        "WRITE": world.add_token(org_ids=[org.id], scopes=[*ALL_READ_SCOPES, *WRITE_SCOPES]),
        "RUN_ONLY": world.add_token(org_ids=[org.id], scopes=[*ALL_READ_SCOPES, "scenarios:run"]),
    }
    with SimThread(world) as thread:
        yield world, thread, ids, env


def config(tmp_path: Path, port: int, org_id: int, write_env: str | None = "WRITE", enabled: bool = True) -> Path:
    cfg = tmp_path / "makewatch.toml"
    write = f'write_token_env = "{write_env}"' if write_env else ""
    cfg.write_text(
        f"""
[[organizations]]
name = "Kontor"
base_url = "http://127.0.0.1:{port}/api/v2"
organization_id = {org_id}
token_env = "READ"
{write}

[state]
db_path = "{tmp_path / "state.db"}"

[actions]
enabled = {str(enabled).lower()}
"""
    )
    return cfg


def run(cfg: Path, env: dict[str, str], *args: str):
    return CliRunner().invoke(main, [*args, "--config", str(cfg)], env=env)


def posts(world: World, suffix: str) -> int:
    return sum(1 for r in world.requests if r.method == "POST" and r.path.endswith(suffix))


def test_stop_then_start_prints_makes_answer_and_the_new_state(sim, tmp_path):
    world, thread, ids, env = sim
    cfg = config(tmp_path, thread.port, ids["org"])
    stopped = run(cfg, env, "scenario", "stop", str(ids["flaky"]), "--org", "Kontor", "--by", "ana")
    assert stopped.exit_code == 0, stopped.output
    assert f"stop scenario {ids['flaky']}: done: scenario {ids['flaky']} is now inactive (isActive: false)" in stopped.output
    assert world.scenarios[ids["flaky"]].is_active is False
    again = run(cfg, env, "scenario", "stop", str(ids["flaky"]), "--org", str(ids["org"]))  # by id
    assert again.exit_code == 0 and ": already:" in again.output  # "Scenario is not running": success
    started = run(cfg, env, "scenario", "start", str(ids["flaky"]), "--org", "kontor")  # any case
    assert started.exit_code == 0 and "(isActive: true)" in started.output
    # The polling token has no write scope: these writes went with the write token.
    assert world.scenarios[ids["flaky"]].is_active is True
    with Store.open(tmp_path / "state.db") as store:
        rows = store.read_sync(lambda db: [(r["actor"], r["action"], r["status"], r["source"]) for r in db["actions"].rows])
    assert rows[0] == ("ana", "stop", "done", "cli") and [r[2] for r in rows] == ["done", "already", "done"]


def test_a_token_without_the_scope_changes_nothing_and_names_it(sim, tmp_path):
    world, thread, ids, env = sim
    cfg = config(tmp_path, thread.port, ids["org"], write_env="RUN_ONLY")
    result = run(cfg, env, "scenario", "stop", str(ids["flaky"]), "--org", "Kontor")
    assert result.exit_code == 1
    assert "refused" in result.output and "lacks scope scenarios:write" in result.output
    assert env["RUN_ONLY"] not in result.output
    assert world.scenarios[ids["flaky"]].is_active is True


def test_run_once_and_a_run_of_an_inactive_scenario(sim, tmp_path):
    world, thread, ids, env = sim
    cfg = config(tmp_path, thread.port, ids["org"])
    before = len(world.scenarios[ids["flaky"]].logs)
    ran = run(cfg, env, "scenario", "run", str(ids["flaky"]), "--org", "Kontor")
    assert ran.exit_code == 0, ran.output
    assert "run started: execution" in ran.output
    assert len(world.scenarios[ids["flaky"]].logs) == before + 1
    world.set_active(ids["flaky"], False)
    refused = run(cfg, env, "scenario", "run", str(ids["flaky"]), "--org", "Kontor")
    assert refused.exit_code == 1 and "Scenario is not activated" in refused.output
    assert posts(world, "/run") == 2


def test_replay_of_a_replayable_run_and_of_one_make_refuses(sim, tmp_path):
    world, thread, ids, env = sim
    cfg = config(tmp_path, thread.port, ids["org"])
    failed = world.inject_run(ids["hook"], status=3, error_name="DataError")["id"]
    done = run(cfg, env, "scenario", "replay", str(ids["hook"]), "--org", "Kontor", "--execution", failed)
    assert done.exit_code == 0, done.output
    assert "replay" in done.output and ": done:" in done.output
    world.actions.set_replayable(failed, False)
    refused = run(cfg, env, "scenario", "replay", str(ids["hook"]), "--org", "Kontor", "--execution", failed)
    assert refused.exit_code == 1 and "Execution is not replayable" in refused.output


def test_dlq_list_and_retry_all(sim, tmp_path):
    world, thread, ids, env = sim
    cfg = config(tmp_path, thread.port, ids["org"])
    for n in range(2):
        world.inject_run(ids["queue"], status=3, error_name="ConnectionError", error_message=f"refused {n}")
    listed = run(cfg, env, "dlq", "list", "--scenario", str(ids["queue"]), "--org", "Kontor")
    assert listed.exit_code == 0 and "2 incomplete execution(s)" in listed.output, listed.output
    assert "refused 1" in listed.output or "refused 0" in listed.output
    usage = run(cfg, env, "dlq", "retry", "--scenario", str(ids["queue"]), "--org", "Kontor")
    assert usage.exit_code == 2 and "--all or at least one --id" in usage.output
    retried = run(cfg, env, "dlq", "retry", "--scenario", str(ids["queue"]), "--org", "Kontor", "--all")
    assert retried.exit_code == 0, retried.output
    assert ": done: 2 incomplete executions queued for retry" in retried.output
    assert run(cfg, env, "dlq", "list", "--scenario", str(ids["queue"]), "--org", "Kontor").output.strip().endswith(
        "no incomplete executions"
    )


def test_check_lists_which_actions_each_token_allows(sim, tmp_path):
    world, thread, ids, env = sim
    cfg = config(tmp_path, thread.port, ids["org"], write_env="RUN_ONLY", enabled=False)
    result = run(cfg, env, "check")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "actions (" in x)
    assert "actions (off ([actions] enabled = false)) with the write token:" in line
    assert "start no, needs scenarios:write" in line and "run yes" in line and "retry no, needs dlqs:write" in line
    cfg = config(tmp_path, thread.port, ids["org"], write_env=None)
    line = next(x for x in run(cfg, env, "check").output.splitlines() if "actions (" in x)
    assert "actions (on) with the polling token: start no" in line  # a read-only polling token
