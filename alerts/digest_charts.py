"""The digest's figures over time: error bars per digest period, and quota averages.

Contracts
---------
* **One bar per digest period.** The last bar is the digest's own ``[period_start,
  period_end)``; each earlier bar ends where the next begins and starts one local day before
  (the same wall-clock time: a bar across a DST change is 23 or 25 hours). No bar is cut at
  midnight, so none is a stub.
* **One scale.** :func:`scale` divides every organization's bars by the busiest bar of all of
  them: equal lengths mean equal counts, whichever organization they belong to.
* **Averages use complete days only** and say how many days they used
  (:func:`complete_day_rate`).
* Pure: ``db`` is read inside the caller's transaction; no clock is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from alerts.digest_model import PeriodCount

#: Bars in the error chart, the digest's own period last.
CHART_PERIODS = 7
#: Days of usage the quota average looks back over (as the poller's ``daily_rate`` does).
RATE_DAYS = 7


def period_bounds(start: float, end: float, timezone: str, periods: int = CHART_PERIODS) -> list[tuple[float, float]]:
    """``periods`` consecutive ``[start, end)`` pairs, oldest first, the last being the digest's."""
    tz = ZoneInfo(timezone)
    first = datetime.fromtimestamp(start, tz)
    bounds = [(start, end)]
    for n in range(1, periods):
        # Wall-clock arithmetic on an aware datetime: "the same local time, n days earlier".
        lo = (first - timedelta(days=n)).timestamp()
        bounds.append((lo, bounds[-1][0]))
    return bounds[::-1]


def error_bars(
    db: Database, org_id: int, start: float, end: float, timezone: str, moment: Any
) -> tuple[PeriodCount, ...]:
    """Unscaled bars (``ratio`` 0) of one organization; ``moment`` formats an epoch."""
    tz = ZoneInfo(timezone)
    out = []
    for lo, hi in period_bounds(start, end, timezone):
        count = db.execute(
            "SELECT COUNT(*) FROM events WHERE org_id = ? AND kind = 'execution_error' "
            "AND occurred_at >= ? AND occurred_at < ?",
            [org_id, lo, hi],
        ).fetchone()[0]
        # Labelled by the date the bar ends on, as the digest's title is.
        label = datetime.fromtimestamp(hi - 1e-6, tz).strftime("%a %d")
        out.append(PeriodCount(start=moment(lo), end=moment(hi), label=label, count=int(count), ratio=0.0))
    return tuple(out)


def scale(charts: Sequence[tuple[PeriodCount, ...]]) -> tuple[int, list[tuple[PeriodCount, ...]]]:
    """The busiest bar of all ``charts``, and the charts with ``ratio`` on that one scale."""
    top = max((bar.count for chart in charts for bar in chart), default=0)
    return top, [
        tuple(replace(bar, ratio=round(bar.count / top, 3) if top else 0.0) for bar in chart) for chart in charts
    ]


def complete_day_rate(days: Any, today: date) -> tuple[float, int] | None:
    """Average daily use over the last :data:`RATE_DAYS` days of ``days`` (the usage list the
    poller stores: ``{"date", "operations", "centicredits"}``) before ``today``, and how many
    days that is. ``today`` is still running: counting it would pull the average down."""
    if not isinstance(days, list):
        return None
    complete: dict[date, float] = {}
    for item in days:
        if not isinstance(item, dict):
            continue
        try:
            day = date.fromisoformat(str(item.get("date")))
        except ValueError:
            continue
        if day >= today:
            continue
        ops = item.get("operations") or 0
        credits = item.get("centicredits") or 0
        if isinstance(ops, int | float) and isinstance(credits, int | float):
            complete[day] = max(float(ops), float(credits) / 100)
    kept = sorted(complete)[-RATE_DAYS:]
    if not kept:
        return None
    return round(sum(complete[d] for d in kept) / len(kept), 1), len(kept)


__all__ = ["CHART_PERIODS", "RATE_DAYS", "complete_day_rate", "error_bars", "period_bounds", "scale"]
