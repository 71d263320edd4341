"""Enterprise analytics as a failure signal: which scenarios' error counts rose.

``GET /analytics/{organizationId}`` (Enterprise, scope ``analytics:read``) gives every
scenario's executions and errors over a timeframe in one paged call for the whole
organization (make-api.md §11.2). A scenario whose ``errors`` for today went up since the
last read has failed since: its logs are read in the signal band (watcher.reads), before
anything chosen by likelihood, whatever its operations step said. No event comes from
analytics alone: the logs stay the source of truth.

What is guessed (nobody has published an answer): counts cover whole UTC days, and may lag
the logs by minutes (the simulator's default lag is 5 minutes). So the read is of today,
and when the day turns the day before is read one last time, which catches its last
minutes' errors; a first read (a new process, the first start) is only a baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from watcher.make.models import AnalyticsEntry

# Read at most this often (the counts lag the logs anyway), and only while the pages cost at
# most this share of the organization's budget.
ANALYTICS_INTERVAL_S = 60.0
ANALYTICS_SHARE = 0.1
PAGE_SIZE = 1000


def utc_day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).date().isoformat()


def day_before(day: str) -> str:
    return (datetime.fromisoformat(day) - timedelta(days=1)).date().isoformat()


def has_analytics(license_raw: Mapping[str, Any] | None) -> bool:
    """Whether the organization's license says analytics are on (``analyticsAccess``)."""
    return bool(license_raw) and license_raw.get("analyticsAccess") is True  # type: ignore[union-attr]


@dataclass
class ErrorCounts:
    """Today's error count of every scenario that had one, as last read (``watch_state``
    ``org:<id>:analytics``; only scenarios with errors are kept, a few KB)."""

    day: str | None = None
    errors: dict[int, int] = field(default_factory=dict)
    read_at: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> ErrorCounts:
        if not isinstance(data, dict):
            return cls()
        errors: dict[int, int] = {}
        raw = data.get("errors")
        if isinstance(raw, dict):
            for k, v in raw.items():
                try:
                    errors[int(k)] = int(v)
                except (TypeError, ValueError):
                    continue
        day = data.get("day") if isinstance(data.get("day"), str) else None
        read_at = data.get("read_at")
        return cls(day, errors, float(read_at) if isinstance(read_at, int | float) else 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day, "errors": {str(k): v for k, v in sorted(self.errors.items())}, "read_at": self.read_at}

    def rose(self, entries: Iterable[AnalyticsEntry]) -> tuple[set[int], dict[int, int]]:
        """The scenarios whose errors went up against these counts, and the new counts."""
        counts = {e.scenario_id: e.errors for e in entries if e.errors}
        up = {sid for sid, n in counts.items() if n > self.errors.get(sid, 0)}
        return up, counts
