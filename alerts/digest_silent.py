"""The digest's "silent failures" section: overdue scheduled runs, idle webhooks, unusual
volumes (watcher.silent), each with a bar sparkline of its last 14 days of operations.

Pure, like :mod:`alerts.digest`: read inside the caller's transaction, no clock. The text of
each item is the headline its notice had (:func:`alerts.render.headline`), so the digest and
the alert say the same thing in the same words. The bars come from what the poller stored:
a scenario's daily operations (``scenarios.volume_json``), an organization's usage days.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

from alerts.digest_model import DayBar, Links, Moment, SilentFailure
from alerts.render import KIND_TITLES, headline

__all__ = ["BAR_DAYS", "SILENT_KINDS", "day_bars", "silent_failures"]

SILENT_KINDS = ("scenario_overdue", "scenario_idle", "volume_anomaly")
#: Days in each sparkline.
BAR_DAYS = 14


def day_bars(ops_by_day: Mapping[str, float], last: str, days: int = BAR_DAYS) -> tuple[DayBar, ...]:
    """The ``days`` days up to ``last`` (ISO dates), a missing one as 0, on their own scale."""
    end = date.fromisoformat(last).toordinal()
    keys = [date.fromordinal(end - n).isoformat() for n in range(days - 1, -1, -1)]
    values = [max(0.0, float(ops_by_day.get(k) or 0.0)) for k in keys]
    top = max(values, default=0.0)
    return tuple(
        DayBar(k, date.fromisoformat(k).strftime("%a %d"), round(v), round(v / top, 3) if top else 0.0)
        for k, v in zip(keys, values, strict=True)
    )


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def silent_failures(
    rows: Sequence[Mapping[str, Any]],
    scenarios: Mapping[int, Mapping[str, Any]],
    org_usage_days: Any,
    start: float,
    *,
    moment: Callable[[float], Moment],
    day: Callable[[float], date],
    name: Callable[[Any, Mapping[str, Any]], str],
    links: Callable[[Any, Any, Mapping[str, Any]], Links],
    tz: Any,
) -> tuple[SilentFailure, ...]:
    """One item per (kind, scenario) whose silent-failure events (``rows``: every event of
    :data:`SILENT_KINDS` before the period's end, oldest first, payload decoded) opened or
    ended in the period, or are still open at its end; open ones first."""
    latest: dict[tuple[str, Any], Mapping[str, Any]] = {}
    opened: dict[tuple[str, Any], Mapping[str, Any]] = {}
    for row in rows:
        key = (row["kind"], row["scenario_id"])
        latest[key] = row
        if not row["payload"].get("recovered"):
            opened[key] = row
    org_days = {
        str(d.get("date")): max(float(d.get("operations") or 0), float(d.get("centicredits") or 0) / 100)
        for d in (org_usage_days if isinstance(org_usage_days, list) else [])
        if isinstance(d, dict)
    }
    out = []
    for key, last in latest.items():
        kind, sid = key
        is_open = not last["payload"].get("recovered")
        if not is_open and last["occurred_at"] < start:
            continue
        first = opened.get(key, last)
        p = dict(first["payload"])
        subject = name(sid, p) if sid is not None else str(p.get("organization") or "The organization")
        if sid is not None:
            volume = _json((scenarios.get(sid) or {}).get("volume_json")) or {}
            ops = volume.get("ops") if isinstance(volume, dict) else None
        else:
            ops = org_days
        # Up to the day judged (a volume anomaly), else the day it was noticed: that day last.
        judged = p.get("day") if isinstance(p.get("day"), str) else None
        bars = day_bars(ops or {}, judged or day(first["occurred_at"]).isoformat())
        out.append(
            SilentFailure(
                kind=kind,
                kind_title=KIND_TITLES.get(kind, kind),
                scenario_name=subject if sid is not None else None,
                text=headline(kind, p, subject, tz),
                open_now=is_open,
                at=moment(first["occurred_at"]),
                ended_at=None if is_open else moment(last["occurred_at"]),
                links=links(sid, first.get("team_id"), p),
                bars=bars if any(b.operations for b in bars) else (),
            )
        )
    out.sort(key=lambda f: (not f.open_now, SILENT_KINDS.index(f.kind), -f.at.epoch, f.text.casefold()))
    return tuple(out)
