"""A Make.com API v2 simulator for tests, benchmarks and demos.

``World`` holds organizations, teams, scenarios, hooks and tokens; its scenarios run on an
injected clock (check runs, successes, warnings, errors with their side effects). ``create_app``
serves it with the live API's shapes, auth, per-organization rate limits and fault knobs;
``watcher.testing.standins`` serves the demo world (``World.generate``) with the other stand-ins
(``makewatch simulate``). ``world.signals`` (:mod:`watcher.simulator.signals`) holds the
cheap signals beyond the logs (Enterprise analytics, the notification feed, the spread of
operations per run) and the knobs of their imperfections. ``world.actions``
(:mod:`watcher.simulator.actions`) is what Make's write endpoints do (start, stop, run, replay,
DLQ retry), with the knobs tests use: ``queue_outcome`` (the next API-started run fails),
``set_replayable``, ``knobs.replay_answer``. Write endpoints need a token created with
``WRITE_SCOPES`` (``world.add_token([org.id], scopes=[*ALL_READ_SCOPES, *WRITE_SCOPES])``).

    world = World.generate(seed=1, clock=ManualClock())
    app = create_app(world)            # GET /api/v2/..., admin under /_sim/...
"""

from watcher.simulator.actions import ActionKnobs, Actions
from watcher.simulator.app import create_app
from watcher.simulator.signals import Notice, SignalKnobs, Signals
from watcher.simulator.world import (
    ALL_READ_SCOPES,
    WRITE_SCOPES,
    Faults,
    FaultScope,
    Hook,
    LedgerEntry,
    Organization,
    RequestRecord,
    Scenario,
    Team,
    World,
)

__all__ = [
    "ALL_READ_SCOPES",
    "WRITE_SCOPES",
    "ActionKnobs",
    "Actions",
    "FaultScope",
    "Faults",
    "Hook",
    "LedgerEntry",
    "Notice",
    "Organization",
    "RequestRecord",
    "Scenario",
    "SignalKnobs",
    "Signals",
    "Team",
    "World",
    "create_app",
]
