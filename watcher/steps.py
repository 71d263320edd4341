"""What a scenario's operations step between two listings says about its runs.

Make lists each scenario's operations used in the period; between two listings the counter
moves by the operations of the runs in between. A run that fails at module k has consumed
only k operations, so a step that no usual run of that scenario makes hints at a failure,
before any logs read. What is usual is learnt per scenario: a small decaying histogram of
the steps seen (a check run of a polling trigger is 1 operation, a full run its modules'
count, a run with an iterator more), kept in the scenario's snapshot (``steps`` column, a
few hundred bytes).

A step is *explained* when it is a usual value, or a sum of up to as many usual values as
runs could have happened since the listing before (two runs between listings make one
step). A step smaller than the biggest usual value and not explained is a hint; a bigger
one is a bigger run (more bundles to process), learnt as usual. A hint whose read finds no failure teaches that value (see
:meth:`StepProfile.learn`), so a scenario with varied runs stops hinting within a few
reads. bench/detect.py prints the hint's precision and recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Each observation multiplies the older weights by this (a memory of about 30 steps).
DECAY = 0.97
# A value is usual once its weight reaches this (about once in the memory, or twice lately).
USUAL_WEIGHT = 0.9
# No hint before this many steps were seen (a new scenario: nothing is usual yet).
WARMUP_STEPS = 3
# At most this many values are remembered (the lightest go first).
MAX_VALUES = 24
# At most this many runs are assumed between two listings when explaining a step.
MAX_RUNS = 4
# How early or late Make may start a scheduled run.
JITTER_S = 5.0


@dataclass
class StepProfile:
    """The steps seen of one scenario: value -> decayed weight, and how many were seen."""

    weights: dict[int, float] = field(default_factory=dict)
    seen: int = 0

    @classmethod
    def from_json(cls, data: Any) -> StepProfile:
        if not isinstance(data, dict):
            return cls()
        raw = data.get("w")
        weights: dict[int, float] = {}
        if isinstance(raw, dict):
            for k, v in raw.items():
                try:
                    weights[int(k)] = float(v)
                except (TypeError, ValueError):
                    continue
        seen = data.get("n")
        return cls(weights, seen if isinstance(seen, int) and not isinstance(seen, bool) else 0)

    def to_json(self) -> dict[str, Any]:
        return {"w": {str(k): round(v, 3) for k, v in sorted(self.weights.items())}, "n": self.seen}

    def usual(self) -> list[int]:
        return sorted(k for k, v in self.weights.items() if v >= USUAL_WEIGHT)

    def explains(self, step: int, runs: int) -> bool:
        """Whether ``step`` is a sum of 1 to ``runs`` usual values."""
        values = self.usual()
        if not values:
            return False
        reach = {0}
        for _ in range(max(1, min(runs, MAX_RUNS))):
            reach |= {r + v for r in reach for v in values if r + v <= step}
            if step in reach:
                return True
        return step in reach

    def observe(self, step: int, gap_s: float | None, interval_s: float | None) -> str | None:
        """Take one step (> 0) seen between two listings ``gap_s`` apart and say what it
        hints at: ``"partial"``, a run that stopped early (smaller than a usual full run and
        no sum of usual values); ``"newstep"``, a step bigger than any usual value while
        only check runs (1 operation) are known, which is the first full run far more often
        than a failed one; None, nothing. A hinted value is not learnt until its read finds
        no failure."""
        if step <= 0:
            return None
        # Runs of a fixed schedule fit the gap (give or take a few seconds of Make's timing);
        # anything else (a webhook, a daily schedule) may have run several times.
        runs = (
            MAX_RUNS
            if not interval_s or gap_s is None
            else math.ceil((gap_s + JITTER_S) / interval_s)
        )
        # A failed run stops at some module: it used fewer operations than the scenario's
        # biggest usual run. A bigger step is a bigger run (more bundles), not a failure,
        # once a run bigger than a check run (1 operation) is known.
        usual = self.usual()
        hint: str | None = None
        if self.seen >= WARMUP_STEPS and not self.explains(step, runs):
            if not usual or step < usual[-1]:
                hint = "partial"
            elif usual[-1] <= 1:
                hint = "newstep"
        self.seen += 1
        if hint is None:
            self.learn(step)
        return hint

    def learn(self, step: int) -> None:
        """``step`` is a usual value (seen, or a hint whose read found no failure)."""
        for k in list(self.weights):
            self.weights[k] *= DECAY
            if self.weights[k] < 0.05:
                del self.weights[k]
        self.weights[step] = self.weights.get(step, 0.0) + 1.0
        if len(self.weights) > MAX_VALUES:
            del self.weights[min(self.weights, key=lambda k: (self.weights[k], k))]
