"""Which scenarios' logs to read in a cycle, within its share of the budget.

Every scenario whose counters moved since its last read is *pending*. A cycle cannot always
read them all (1,000 scenarios every 15 minutes move about 67 times a minute; a Core plan's
share is 30 requests), so reads are chosen in three bands:

1. **signals**: what says a failure happened: Make switched the scenario off or a state
   moved, an incomplete execution was stored (``dlqCount`` rose), a counter step smaller
   than a usual run of that scenario. Exact or nearly so, and few.
2. **the floor**: a pending scenario whose last read is as old as a round-robin poller with
   the whole budget would let it get (``round_robin_s``) is read before anything chosen by
   likelihood, oldest first, and before all but :data:`HINT_SHARE` of the first-step hints. Whatever the priorities, a failure therefore waits about as long
   as a plain round-robin would make it wait, never much longer (bench/detect.py measures it
   against one).
3. **likelihood**: the rest by :func:`priority`, the chance that its unread runs hold a
   failure.

DESIGN.md, "Scheduling under a tight budget", has the reasoning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# Priority of pending scenarios: a prior error rate of 2 %, worth 25 runs, and the run
# interval assumed for scenarios without a schedule (webhooks).
PRIOR_ERRORS, PRIOR_RUNS = 0.5, 25.0
DEFAULT_RUN_INTERVAL_S = 900.0
# Priorities of the signal band (above any likelihood, which is at most 1), most precise
# first. A first step bigger than a check run ("newstep", see watcher.steps) is a full run
# far more often than a failed one: last of the band. At 10,000 scenarios, such first runs
# ranked with the unusual steps were most of the band's reads and found a failure one time
# in six, crowding out the unusual steps, which find one two times in three
# (bench/detect.py --regime c).
STATE_PRIORITY, DLQ_PRIORITY, PARTIAL_PRIORITY, NEWSTEP_PRIORITY = 2.0, 1.8, 1.5, 1.2
# Enterprise analytics said the scenario's error count rose (watcher.analytics): exact, late.
# An in-app notification named it ("Encountered error in <name> scenario"): by name only.
ANALYTICS_PRIORITY, NOTIFIED_PRIORITY = 1.9, 1.6
SIGNAL_PRIORITY = NEWSTEP_PRIORITY
# While the floor has rows due, first-step hints (the least precise signal, and at 10,000
# scenarios the most numerous) take at most this share of a cycle's reads before the floor:
# uncapped, they took the whole budget and scenarios that never gave a hint were never read
# (bench/detect.py --regime c --drain-hours 8: 121 of 910 failures never found).
HINT_SHARE = 0.25
# A pending reason "deactivated@<seq>": Make switched the scenario off; its event is made
# with the errors that caused it when its logs are read (at once, whatever the allowance).
DEACTIVATED = "deactivated@"


def priority(row: dict[str, Any], now: float) -> float:
    """How likely the scenario's unread runs hold a failure (0..1); signals above that.

    The error rate is estimated from what makewatch has read of that scenario, shrunk
    towards a prior of 2 %; the number of unread runs grows with the time since its last
    read (its schedule interval, else 15 min). Expected latency over all scenarios is
    lowest when reads go where a failure is most likely; since the chance climbs towards 1
    with waiting, nothing starves.
    """
    reason = row.get("pending_reason") or ""
    if (
        "state" in reason
        or DEACTIVATED in reason
        or (row.get("is_invalid") and not row.get("is_active"))
    ):
        return STATE_PRIORITY  # Make switched it off, or a state moved: read its last errors now
    if "analytics" in reason:
        return ANALYTICS_PRIORITY  # Make counted an error of it since the last analytics read
    if "dlq" in reason:
        return DLQ_PRIORITY  # an incomplete execution was stored: a run failed
    if "notified" in reason:
        return NOTIFIED_PRIORITY  # Make told its user of an error of a scenario of that name
    if "partial" in reason:
        return PARTIAL_PRIORITY  # a run used fewer operations than usual: it probably failed
    if "newstep" in reason:
        return NEWSTEP_PRIORITY  # a first full run, or one that failed
    p = ((row.get("errors_seen") or 0) + PRIOR_ERRORS) / ((row.get("runs_seen") or 0) + PRIOR_RUNS)
    interval = (row.get("scheduling") or {}).get("interval") or DEFAULT_RUN_INTERVAL_S
    last_read = row.get("last_checked_at")
    if last_read is None:
        last_read = row.get("pending_since")
    since = now - (now if last_read is None else last_read)
    unread_runs = max(1.0, since / float(interval))
    return 1.0 - (1.0 - min(p, 1.0)) ** unread_runs


def read_cost(row: dict[str, Any]) -> int:
    """Requests a read of ``row`` takes: its logs, and its DLQs when they moved."""
    return 2 if "dlq" in (row.get("pending_reason") or "") else 1


def round_robin_s(scenarios: int, budget_per_minute: int) -> float:
    """How long a round-robin poller spending the whole budget on logs reads takes to read
    each of ``scenarios`` once: the wait makewatch's floor never lets a pending one exceed."""
    return scenarios / max(1, budget_per_minute) * 60.0


def choose_reads(
    pending: Iterable[dict[str, Any]],
    now: float,
    allowance: int,
    priority_of: Callable[[dict[str, Any], float], float] = priority,
    round_robin: float = float("inf"),
    interval_s: float = 60.0,
) -> list[tuple[str, dict[str, Any]]]:
    """The pending rows to read this cycle, in order, with the band each was chosen in
    ("signals", "floor", "likelihood"), costing at most ``allowance`` requests (a
    deactivation is read whatever the allowance: rare, and it must say why at once).

    ``round_robin``: see :func:`round_robin_s`. A row whose last read lies that long ago, or
    will by the next cycle (``interval_s`` from now), is due on the floor.
    """
    rows = list(pending)
    scored = {r["id"]: priority_of(r, now) for r in rows}
    signals = sorted(
        (r for r in rows if scored[r["id"]] >= SIGNAL_PRIORITY),
        key=lambda r: (-scored[r["id"]], r.get("pending_since") or now, r["id"]),
    )
    horizon = now + interval_s - round_robin
    floor = sorted(
        (r for r in rows if scored[r["id"]] < SIGNAL_PRIORITY and _last_read(r, now) <= horizon),
        key=lambda r: (_last_read(r, now), r["id"]),
    )
    rest = sorted(
        (r for r in rows if scored[r["id"]] < SIGNAL_PRIORITY),
        key=lambda r: (-scored[r["id"]], r.get("pending_since") or now, r["id"]),
    )
    signal_ids = {r["id"] for r in signals}
    if floor:
        exact = [r for r in signals if scored[r["id"]] > NEWSTEP_PRIORITY]
        hints = [r for r in signals if scored[r["id"]] <= NEWSTEP_PRIORITY]
        cap = max(1, int(allowance * HINT_SHARE))
        order = [*exact, *hints[:cap], *floor, *hints[cap:], *rest]
    else:
        order = [*signals, *rest]
    chosen: list[tuple[str, dict[str, Any]]] = []
    taken: set[int] = set()
    cost = 0
    floor_ids = {r["id"] for r in floor}
    for row in order:
        if row["id"] in taken:
            continue
        need = read_cost(row)
        if cost + need > allowance and DEACTIVATED not in (row.get("pending_reason") or ""):
            if row["id"] in signal_ids:
                continue  # a two-request DLQ read may not fit where a one-request read does
            break
        band = "signals" if row["id"] in signal_ids else "floor" if row["id"] in floor_ids else "likelihood"
        chosen.append((band, row))
        taken.add(row["id"])
        cost += need
    return chosen


def signals_of(row: dict[str, Any]) -> list[str]:
    """The failure signals a pending row carries: "state" (a state moved, Make switched it
    off), "dlq" (an incomplete execution was stored), "partial" (an unusual step),
    "newstep" (a first step bigger than a check run), "analytics" (Enterprise analytics
    counted an error), "notified" (an in-app notification named it)."""
    reason = row.get("pending_reason") or ""
    out = []
    if "state" in reason or DEACTIVATED in reason:
        out.append("state")
    for token in ("analytics", "dlq", "notified", "partial", "newstep"):
        if token in reason.split(","):
            out.append(token)
    return out


def _last_read(row: dict[str, Any], now: float) -> float:
    """When the row's logs were last read (a never-read row: since it is pending)."""
    last = row.get("last_checked_at")
    if last is None:
        last = row.get("pending_since")
    return now if last is None else float(last)
