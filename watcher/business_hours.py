"""Business hours (``Mon-Fri 08:00-18:00`` in a time zone): when a silence counts.

Its own module, without dependencies, because the settings validate it and the detectors
(watcher.silent) use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

__all__ = ["BusinessHours"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class BusinessHours:
    """When silence counts: ``Mon-Fri 08:00-18:00`` in a time zone (a webhook idle on
    Sunday is not a problem). ``spans``: (weekday 0 = Monday, start minute, end minute)."""

    spans: tuple[tuple[int, int, int], ...]
    tz: tzinfo = UTC

    @classmethod
    def parse(cls, text: str, tz: str = "UTC") -> BusinessHours:
        """``"Mon-Fri 08:00-18:00"``, ``"Mon,Wed,Sat 09:00-12:30"``; ``;`` separates several."""
        spans: list[tuple[int, int, int]] = []
        for part in text.split(";"):
            m = re.fullmatch(r"\s*([A-Za-z,\- ]+?)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", part)
            if not m:
                raise ValueError(f"not business hours like 'Mon-Fri 08:00-18:00': {part.strip()!r}")
            days: list[int] = []
            for item in m[1].replace(" ", "").lower().split(","):
                first, _, last = item.partition("-")
                if first[:3] not in _DAYS or (last and last[:3] not in _DAYS):
                    raise ValueError(f"unknown day in {item!r}; use Mon, Tue, ... Sun")
                a, b = _DAYS.index(first[:3]), _DAYS.index((last or first)[:3])
                days += list(range(a, b + 1)) if a <= b else [*range(a, 7), *range(0, b + 1)]
            start, end = int(m[2]) * 60 + int(m[3]), int(m[4]) * 60 + int(m[5])
            if not (0 <= start < end <= 24 * 60):
                raise ValueError(f"the time range of {part.strip()!r} must start before it ends, within a day")
            spans += [(d, start, end) for d in days]
        return cls(tuple(spans), ZoneInfo(tz))

    def contains(self, t: float) -> bool:
        local = datetime.fromtimestamp(t, self.tz)
        minute = local.hour * 60 + local.minute
        return any(d == local.weekday() and s <= minute < e for d, s, e in self.spans)
