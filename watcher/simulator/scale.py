"""A world of K organizations × M scenarios each, for scale benchmarks and ``simulate``.

The same population as ``bench/detect.py``'s world, at any size: every scenario is scheduled
every 15 minutes from a random offset, most of its runs are check runs (a polling trigger that
found nothing: one operation, hidden from the logs, but the counters move), and its error rate
is drawn per scenario from :data:`ERROR_PROFILES` (60 % of scenarios at 0.5 %, 30 % at 3 %,
10 % at 10 %: about 2.2 % of runs fail). Nobody is ever switched off (``max_errors = 0``) and
the quota is out of reach, so the error stream stays stationary however long it runs.

Deterministic for a seed: the k-th organization and the j-th scenario of it get the same
parameters whatever K and M are, and a run's outcome depends only on the seed, the scenario
and the run number (:class:`~watcher.simulator.World`).

:func:`org_access` gives what a makewatch configuration needs per organization (name, id,
token); :func:`watcher.testing.standins.simulator_config` turns a world into that TOML.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from watcher.clock import Clock
from watcher.simulator.world import World

#: (share of scenarios, error rate per run). Mean about 2.2 % (detect.py's profiles).
ERROR_PROFILES: tuple[tuple[float, float], ...] = ((0.6, 0.005), (0.3, 0.03), (0.1, 0.10))
#: Every scenario runs this often (Make's most common schedule for polling triggers).
INTERVAL_S = 900.0
#: Teams per organization; scenarios are dealt to them in turn.
TEAMS = 2
#: A quota no run can reach: a paused organization would stop every scenario.
OPERATIONS_LIMIT = 10**12


@dataclass(frozen=True)
class OrgAccess:
    """What a makewatch ``[[organizations]]`` table needs for one simulated organization."""

    name: str
    organization_id: int
    token: str
    plan: str


def org_name(index: int, orgs: int) -> str:
    """``Scale Agency`` alone, else ``Scale Org 01`` … (names sort like their ids)."""
    return "Scale Agency" if orgs == 1 else f"Scale Org {index + 1:0{len(str(orgs))}d}"


def error_rate_of(rng: random.Random) -> float:
    """One draw from :data:`ERROR_PROFILES`."""
    u = rng.random()
    for share, rate in ERROR_PROFILES:
        if u < share:
            return rate
        u -= share
    return ERROR_PROFILES[-1][1]


def build_scale_world(
    seed: int,
    orgs: int,
    scenarios: int,
    clock: Clock,
    plan: str = "core",
    *,
    interval_s: float = INTERVAL_S,
) -> World:
    """``orgs`` organizations on ``plan``, ``scenarios`` scheduled scenarios in each, one token
    per organization (``world.tokens_by_org``). The first runs fall in the ``interval_s``
    after the clock's time: there is no history before it."""
    if orgs < 1 or scenarios < 0:
        raise ValueError("orgs must be at least 1 and scenarios not negative")
    world = World(seed=seed, clock=clock)
    start = clock.time()
    for k in range(orgs):
        org = world.add_organization(
            org_name(k, orgs), plan=plan, operations_limit=OPERATIONS_LIMIT
        )
        teams = [world.add_team(org.id, name=f"Team {i + 1}") for i in range(TEAMS)]
        rng = random.Random(f"{seed}:scale:{k}")
        for j in range(scenarios):
            error_rate = error_rate_of(rng)
            world.add_scenario(
                teams[j % TEAMS].id,
                name=f"Scenario {j + 1:05d}",
                interval_s=interval_s,
                error_rate=error_rate,
                check_run_rate=rng.uniform(0.5, 0.9),
                operations_per_run=rng.randint(3, 8),
                max_errors=0,
                first_run_at=start + rng.uniform(0, interval_s),
            )
        world.add_token([org.id], name=f"makewatch-scale-{k + 1}")
    return world


def org_access(world: World) -> list[OrgAccess]:
    """Every organization of ``world`` with its token, by id."""
    return [
        OrgAccess(org.name, org.id, world.tokens_by_org[org.id], org.plan)
        for org in sorted(world.organizations.values(), key=lambda o: o.id)
    ]
