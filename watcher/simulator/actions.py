"""What Make's write endpoints do to the simulated world: start, stop, run, replay, DLQ retry.

HTTP lives in :mod:`watcher.simulator.action_routes`; this module changes the world and knows
nothing of requests. Runs started through the API (``/run``, ``/replay``, a DLQ retry) happen
*at once*, at the clock's time, with every side effect of a scheduled run (counters, usage,
ledger, consecutive errors and deactivation, a DLQ item for a failed ``/run`` of a scenario
that stores incomplete executions). Make queues them and answers first (make-api.md §11.4);
a simulated run that is already in the logs when the answer arrives is the simplest thing a
test can check, and a client must not depend on the order anyway.

Outcomes: an API-started run succeeds unless a test queued an outcome for the scenario
(:meth:`Actions.queue_outcome`, or ``POST /_sim/actions/outcomes``): queued outcomes are used
one per run, oldest first, by ``/run``, ``/replay`` and DLQ retries alike.

Replayability (``isReplayable`` of ``GET /scenarios/{id}/logs/{executionId}``; guesses, Make
documents none of it): an execution is replayable when it failed or warned (status 3 or 2),
is a run of an instant (webhook) scenario, whose input Make keeps, and is younger than
``ActionKnobs.replay_window_s`` (default 24 h: its stored input "expired" after that, in the
words of Make's SDK). The live recording agrees as far as it goes: a failed run of a scheduled
scenario, three minutes old, had ``isReplayable: false``. ``ActionKnobs.replay_scheduled``
makes runs of scheduled scenarios replayable too; a test overrides the rule per execution
with :meth:`Actions.set_replayable`.

Everything is deterministic: the n-th API-started run of scenario ``sid`` takes its id from
``random.Random(f"{seed}:{sid}:api:{n}")``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from watcher.simulator.world import DlqItem, LogRow, Scenario, World

_DAY_S = 86_400
REPLAY_ANSWERS = ("no_content", "execution_id")
# The ERRORS entry a queued failure uses when the test names none (a ConnectionError: the
# kind of failure one retries).
_DEFAULT_ERROR = ("ConnectionError", "Connection refused: the remote server did not respond (ECONNREFUSED).")
_DEFAULT_WARNING = (
    "ExecutionInterruptedError",
    "The execution was interrupted because it exceeded the maximum execution time.",
)


class ActionRefused(Exception):
    """Make refuses the action in the state the world is in (an "already running", an
    inactive scenario, an execution that cannot be replayed...). The route turns it into
    Make's error body; ``status``/``code``/``message`` are that body's."""

    def __init__(self, status: int, code: str, message: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


# Make's texts (make-api.md §11.4). The statuses and codes of "already running" / "not
# running" are not documented anywhere found: 400 SC400, Make's generic refusal, is a guess.
ALREADY_RUNNING = (400, "SC400", "Bad Request", "Scenario is already running.")
NOT_RUNNING = (400, "SC400", "Bad Request", "Scenario is not running.")
NOT_ACTIVATED = (422, "IM325", "Unprocessable Entity", "Scenario is not activated.")
NOT_REPLAYABLE = (422, "SC422", "Unprocessable Entity", "Execution is not replayable.")
ORG_PAUSED = (
    429,
    "IM310",
    "Too Many Requests",
    "Organization is paused: its operations are used up.",
)


@dataclass
class ActionKnobs:
    """Knobs of the write endpoints (see the module docstring)."""

    # How long a failed run can be replayed (seconds).
    replay_window_s: float = float(_DAY_S)
    # Whether runs of scheduled (not instant) scenarios can be replayed as well.
    replay_scheduled: bool = False
    # What /replay answers: "no_content" (202, nothing: Make's docs) or "execution_id"
    # (200 {"executionId": "<new run>"}: Make's SDK branch). make-api.md §11.4.
    replay_answer: str = "no_content"
    # The next N write requests (whose path matches lost_answer_path_regex, if set) are
    # served, so the action takes effect, and then answered lost_answer_status with no
    # rate-limit headers, as a gateway that timed out: why a client must not repeat a
    # write blindly. (A 5xx *before* the work is the error_5xx_count fault.)
    lost_answer_count: int = 0
    lost_answer_status: int = 502
    lost_answer_path_regex: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def update(self, data: dict[str, Any]) -> None:
        """Apply a partial update (``{"reset": true}`` first restores the defaults)."""
        if data.get("reset"):
            self.__init__()  # type: ignore[misc]
        names = {f.name for f in fields(self)}
        for key, value in data.items():
            if key == "reset":
                continue
            if key not in names:
                raise ValueError(f"unknown action knob {key!r}")
            if key == "replay_answer" and value not in REPLAY_ANSWERS:
                raise ValueError(f"replay_answer must be one of {', '.join(REPLAY_ANSWERS)}")
            if key == "replay_window_s":
                value = float(value)
            setattr(self, key, value)


@dataclass
class QueuedOutcome:
    status: int
    error_name: str | None = None
    error_message: str | None = None


@dataclass
class Actions:
    """The write side of the world (``world.actions``)."""

    world: World
    knobs: ActionKnobs = field(default_factory=ActionKnobs)
    _outcomes: dict[int, list[QueuedOutcome]] = field(default_factory=dict)
    _replayable: dict[str, bool] = field(default_factory=dict)
    _runs: dict[int, int] = field(default_factory=dict)

    # ------------------------------------------------------------ test controls

    def queue_outcome(
        self,
        scenario_id: int,
        status: int = 3,
        error_name: str | None = None,
        error_message: str | None = None,
        count: int = 1,
    ) -> None:
        """The next ``count`` API-started runs of the scenario end with ``status`` (1, 2, 3)."""
        if status not in (1, 2, 3):
            raise ValueError("status must be 1, 2 or 3")
        if scenario_id not in self.world.scenarios:
            raise KeyError(scenario_id)
        queue = self._outcomes.setdefault(scenario_id, [])
        queue += [QueuedOutcome(status, error_name, error_message) for _ in range(count)]

    def set_replayable(self, execution_id: str, replayable: bool | None) -> None:
        """Force ``isReplayable`` of one execution (None: back to the default rule)."""
        if replayable is None:
            self._replayable.pop(execution_id, None)
        else:
            self._replayable[execution_id] = bool(replayable)

    def is_replayable(self, row: LogRow) -> bool:
        forced = self._replayable.get(row.body.get("id", ""))
        if forced is not None:
            return forced
        if row.status not in (2, 3) or row.check:
            return False
        if not row.body.get("instant") and not self.knobs.replay_scheduled:
            return False
        age_s = self.world.clock.time() - row.ts_ms / 1000
        return age_s <= self.knobs.replay_window_s

    def lose_answer(self, path: str) -> bool:
        """Whether the answer to this write is to be lost (consumes ``lost_answer_count``)."""
        k = self.knobs
        if k.lost_answer_count <= 0:
            return False
        if k.lost_answer_path_regex is not None and not re.search(k.lost_answer_path_regex, path):
            return False
        k.lost_answer_count -= 1
        return True

    # ------------------------------------------------------------ the actions

    def start(self, scenario_id: int) -> Scenario:
        """``POST /scenarios/{id}/start``: scheduling on. A scenario Make switched off for
        errors (``isinvalid``) is started like any other and loses ``isinvalid``, as a user's
        start does in this world (:meth:`World.set_active`; Make's behaviour is unknown)."""
        sc = self.world.scenarios[scenario_id]
        if sc.is_active:
            raise ActionRefused(*ALREADY_RUNNING)
        self.world.set_active(scenario_id, True)
        return sc

    def stop(self, scenario_id: int) -> Scenario:
        """``POST /scenarios/{id}/stop``: scheduling off (a run in progress is not modelled)."""
        sc = self.world.scenarios[scenario_id]
        if not sc.is_active:
            raise ActionRefused(*NOT_RUNNING)
        self.world.set_active(scenario_id, False)
        return sc

    def run(self, scenario_id: int) -> LogRow:
        """``POST /scenarios/{id}/run``: one manual run now. The input ``data`` is not modelled."""
        sc = self._runnable(scenario_id)
        return self._run(sc)

    def replay(self, scenario_id: int, execution_id: str) -> LogRow:
        """``POST /scenarios/{id}/replay``: a new run carrying ``replayOfExecutionId``."""
        sc = self.world.scenarios[scenario_id]
        original = sc.executions.get(execution_id)
        if original is None:
            raise ActionRefused(404, "SC404", "Not Found", "Execution not found.")
        sc = self._runnable(scenario_id)
        if not self.is_replayable(original):
            raise ActionRefused(*NOT_REPLAYABLE)
        row = self._run(sc)
        row.body.update(
            replayOfExecutionId=original.body["id"],
            replayOfExecutionName=None,
            replayOfExecutionTimestamp=original.body.get("timestamp"),
        )
        return row

    def dlq_items(
        self, scenario_id: int, ids: Sequence[str] | None, except_ids: Sequence[str] = ()
    ) -> list[DlqItem]:
        """The open items of a scenario that a ``/dlqs/retry`` names (``ids`` None: all but
        ``except_ids``). An id that is not an open item of this scenario refuses the call
        (Make: "all ids must belong to the scenario", make-api.md §11.4)."""
        sc = self.world.scenarios[scenario_id]
        open_items = {d.id: d for d in sc.dlqs if not d.deleted and not d.resolved}
        if ids is None:
            skip = set(except_ids)
            return [d for d in open_items.values() if d.id not in skip]
        strangers = [i for i in ids if i not in open_items]
        if strangers:
            raise ActionRefused(
                400,
                "SC400",
                "Bad Request",
                f"{len(strangers)} incomplete execution(s) do not belong to scenario {sc.id}.",
            )
        return [open_items[i] for i in dict.fromkeys(ids)]

    def retry_dlqs(self, items: Sequence[DlqItem]) -> list[LogRow]:
        """Retry incomplete executions now, each a new run. A success resolves the item (it
        leaves ``/dlqs`` and ``dlqCount``); a failure counts an attempt and leaves it queued."""
        rows = []
        for item in items:
            sc = self.world.scenarios[item.scenario_id]
            row = self._run(sc, dlq=False)
            item.attempts += 1
            if row.status in (1, 2):
                item.resolved = True
                item.deleted = True  # gone from the listing, as Make removes a resolved item
            rows.append(row)
        return rows

    # ------------------------------------------------------------ helpers

    def _runnable(self, scenario_id: int) -> Scenario:
        sc = self.world.scenarios[scenario_id]
        if self.world.organizations[sc.org_id].is_paused:
            raise ActionRefused(*ORG_PAUSED)
        if not sc.is_active:
            raise ActionRefused(*NOT_ACTIVATED)
        return sc

    def _run(self, sc: Scenario, dlq: bool = True) -> LogRow:
        world = self.world
        world.advance()
        n = self._runs.get(sc.id, 0) + 1
        self._runs[sc.id] = n
        sc.injected += 1
        rng = random.Random(f"{world.seed}:{sc.id}:api:{n}")
        queue = self._outcomes.get(sc.id)
        planned = queue.pop(0) if queue else QueuedOutcome(1)
        full = max(1, sc.operations_per_run)
        outcome: dict[str, Any] = {
            "id": f"{rng.getrandbits(128):032x}",
            "rng": rng,
            "status": planned.status,
            "operations": max(1, full // 2) if planned.status == 3 else full,
        }
        if planned.status in (2, 3):
            name, message = _DEFAULT_ERROR if planned.status == 3 else _DEFAULT_WARNING
            outcome["error"] = {
                "name": planned.error_name or name,
                "message": planned.error_message
                or (message if not planned.error_name else f"{planned.error_name} occurred."),
            }
        return world._execute(sc, world.clock.time(), outcome, manual=True, injected=True, dlq=dlq)
