"""Kill the poller (SIGKILL) at random points while errors keep coming: none lost, none twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SimThread, makewatch

from watcher.clock import SystemClock
from watcher.simulator import World
from watcher.store import Store

KILLS = 20


@pytest.mark.timeout(180)
def test_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path: Path):
    rng = random.Random(20261124)
    world = World(seed=9, clock=SystemClock())
    org = world.add_organization(name="Crashy", plan="enterprise")
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    far = time.time() + 10**8
    scenarios = [world.add_scenario(team.id, name=f"s{i}", first_run_at=far, max_errors=0) for i in range(12)]
    db = tmp_path / "state.db"
    with SimThread(world) as sim:
        cfg = tmp_path / "makewatch.toml"
        cfg.write_text(
            f'[[organizations]]\nname = "Crashy"\nbase_url = "http://127.0.0.1:{sim.port}/api/v2"\n'
            f'organization_id = {org.id}\ntoken_env = "TOK"\n'
            f'[state]\ndb_path = "{db}"\n[polling]\npoll_interval_s = 1.0\n'
            '[web]\nlisten = "127.0.0.1:0"\n'  # never the default port: another run may hold it
        )
        env = {**os.environ, "TOK": token}
        subprocess.run(makewatch("once", "--config", str(cfg)), env=env, check=True, capture_output=True, timeout=60)

        injected: list[str] = []
        for i in range(KILLS):
            proc = subprocess.Popen(makewatch("run", "--config", str(cfg)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + rng.uniform(0.3, 1.6)
            while time.monotonic() < deadline:
                sc = rng.choice(scenarios)
                injected.append(sim.inject_error(sc.id, len(injected)))
                time.sleep(rng.uniform(0.02, 0.25))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL, f"kill {i}: the poller had already exited"

        # Drain what the kills left pending: each `once` reads what its share of the budget
        # allows (here 1 s of a 250/min budget), so it may take a few; and a cycle whose
        # listing would take over a tenth of that share lists only every few cycles
        # (watcher.poller.INVENTORY_SHARE), so nothing pending is known only when several
        # cycles in a row found nothing.
        quiet = 0
        for _ in range(25):
            subprocess.run(makewatch("once", "--config", str(cfg)), env=env, check=True, capture_output=True, timeout=60)
            with Store.open(db) as store:
                left = store.read_sync(lambda d: d["scenarios"].count_where("pending_since IS NOT NULL"))
            quiet = quiet + 1 if left == 0 else 0
            if quiet == 4:
                break
        assert quiet == 4, f"{left} scenarios still waiting to be read"

    with Store.open(db) as store:
        rows = store.read_sync(lambda d: list(d["events"].rows_where("kind = 'execution_error'")))
    seen = [json.loads(r["payload_json"])["execution_id"] for r in rows]
    assert len(injected) > KILLS
    assert sorted(seen) == sorted(injected)  # every injected error, each exactly once


def test_run_stops_cleanly_on_sigterm(service):
    cfg, db, env = service  # the simulator runs in the fixture's thread
    proc = subprocess.Popen(
        makewatch("run", "--config", str(cfg)), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until it has polled at least twice
        if db.exists():
            with Store.open(db) as store:
                if store.read_sync(lambda d: d["cycles"].count if d["cycles"].exists() else 0) >= 2:
                    break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "stopping" in stderr and "Traceback" not in stderr
