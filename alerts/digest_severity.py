"""Which problems an organization has, and how bad: the digest's order and its headline.

:func:`problems_of` turns an :class:`~alerts.digest_model.OrgDigest` into plain-text
problems, worst first; an organization without any is "all quiet", so every warning that
the digest shows also keeps it from being called quiet. :func:`severity_key` orders the
organizations by their worst problem. Pure functions of the content model.
"""

from __future__ import annotations

from alerts.digest_model import OrgDigest, Problem

#: How bad each kind of problem is, worst first: it orders the organizations and picks the
#: summary's "worst problem". Blindness first (nothing else can be trusted), then what stops
#: scenarios now or soon, then what failed, then what merely happened.
RANKS = {
    "not polled": 0,
    "quota runs out": 1,
    "quota critical": 1,
    "switched off": 2,
    "polling failing": 3,
    "errors": 4,
    "hook backlog": 5,
    "silent failure": 5,
    "incomplete executions": 5,
    "quota warning": 6,
    "health": 7,
    "failed polls": 7,
    "state change": 8,
    "quota crossed": 8,
}

def _n(count: int, word: str, words: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def _pct(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.0f} %" if float(value).is_integer() else f"{value:.1f} %"


def problems_of(o: OrgDigest) -> tuple[Problem, ...]:
    """What in ``o`` needs a look, worst first (:data:`RANKS`); empty means "all quiet".

    Every warning shows here, so "All quiet" can never hide one: a quota forecast that runs
    out before the reset is one at any share used.
    """
    found: list[tuple[str, str]] = []
    h, q, d = o.health, o.quota, o.dlq
    if not h.cycles:
        found.append(("not polled", "no polling cycle recorded in the period"))
    if q is not None and q.exhausts_before_reset and q.forecast_exhausted_at and q.next_reset:
        found.append(
            ("quota runs out", f"quota runs out around {q.forecast_exhausted_at.local}, before the reset "
             f"{q.next_reset.local} ({_pct(q.used_pct)} used)")
        )
    elif q is not None and q.level == "critical":
        found.append(("quota critical", f"quota {_pct(q.used_pct)} used"))
    if o.still_off:
        found.append(("switched off", f"{_n(len(o.still_off), 'scenario')} switched off by Make"))
    if h.last_poll_ok is False or any(not e.recovered for e in h.events):
        found.append(("polling failing", "polling problem: " + (h.last_error or next(
            (e.text for e in h.events if not e.recovered), "the last poll failed"))))
    if o.errors_total:
        found.append(("errors", f"{_n(o.errors_total, 'error')} in {_n(len(o.errors), 'scenario')}"))
    backlogged = [k for k in o.hooks if k.backlogged_now]
    if o.hooks:
        found.append(("hook backlog", f"{_n(len(backlogged), 'webhook queue')} backlogged"))
    silent_open = [f for f in o.silent if f.open_now]
    if o.silent:
        found.append(("silent failure", f"{_n(len(silent_open), 'silent failure')} (overdue, idle or unusual volume) open"
                      + (f", {len(o.silent) - len(silent_open):,} ended" if len(silent_open) < len(o.silent) else "")))
    if d.total_now or d.new_items:
        found.append(("incomplete executions", f"{_n(d.total_now, 'incomplete execution')} waiting"))
    if q is not None and q.level == "warning" and not q.exhausts_before_reset:
        found.append(("quota warning", f"quota {_pct(q.used_pct)} used"))
    if h.failed_polls and h.last_poll_ok is not False:
        found.append(("failed polls", f"{_n(h.failed_polls, 'failed poll')}, recovered"))
    if h.events and all(e.recovered for e in h.events):
        found.append(("health", "makewatch recovered from a polling problem"))
    changes = len(o.deactivated) + len(o.reactivated)
    if changes and not o.still_off:
        found.append(("state change", f"{_n(changes, 'scenario state change')}"))
    if q is not None and q.events and q.level == "ok":
        found.append(("quota crossed", f"quota crossed {_pct(q.events[-1].threshold_pct)}"))
    ranked = sorted(enumerate(found), key=lambda item: (RANKS[item[1][0]], item[0]))
    return tuple(Problem(RANKS[kind], o.name, text) for _, (kind, text) in ranked)


def severity_key(o: OrgDigest) -> tuple[int, int, int, str, int]:
    """Worst problem first, then more problems, more errors; a quiet organization last."""
    worst = o.problems[0].rank if o.problems else len(RANKS) + 1
    return (worst, -len(o.problems), -o.errors_total, o.name.casefold(), o.org_id)
