"""Silences: "do not notify about alerts that match these matchers until ``ends_at``".

A silenced alert is still recorded and counted (its reason is ``"silenced"``); only its
notifications are dropped. Matching works on an alert's labels (see
:func:`alerts.routing.labels`), never on the clock: ``now`` is passed in.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MATCHER_KEYS", "MAX_DURATION_S", "Silence", "active_silence", "org_matches"]

#: What a silence can match on. All given matchers must match (AND).
MATCHER_KEYS = frozenset({"org", "scenario_id", "kind", "error_contains"})

#: The longest silence that can be added: a year. A longer one is a forgotten switch-off;
#: remove the route or the scenario instead.
MAX_DURATION_S = 365 * 86400.0


@dataclass(frozen=True)
class Silence:
    """One row of the ``silences`` table (``matchers`` is ``matchers_json`` decoded).

    ``matchers``:

    * ``org``: an organization id (int, or a string of digits) or name (case-insensitive,
      ``*``/``?`` globs allowed);
    * ``scenario_id``: a scenario id;
    * ``kind``: an alert kind (``execution_error`` ...) or a list of kinds;
    * ``error_contains``: a substring of the error name or message, case-insensitive.

    Active for ``starts_at <= now < ends_at``. A silence without matchers or with an unknown
    matcher is refused (ValueError): a typo must not silence everything.
    """

    id: int | str
    matchers: Mapping[str, Any]
    starts_at: float
    ends_at: float
    reason: str = ""
    created_by: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.matchers:
            raise ValueError(f"silence {self.id}: no matchers (it would silence everything)")
        unknown = set(self.matchers) - MATCHER_KEYS
        if unknown:
            raise ValueError(
                f"silence {self.id}: unknown matchers {sorted(unknown)}; "
                f"expected {sorted(MATCHER_KEYS)}"
            )
        if self.ends_at <= self.starts_at:
            raise ValueError(f"silence {self.id}: ends_at must be after starts_at")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Silence:
        """From a ``silences`` row (``matchers`` decoded, or ``matchers_json`` as text)."""
        matchers = row.get("matchers")
        if matchers is None:
            matchers = json.loads(row.get("matchers_json") or "{}")
        return cls(
            id=row["id"],
            matchers=dict(matchers),
            starts_at=float(row["starts_at"]),
            ends_at=float(row["ends_at"]),
            reason=row.get("reason") or "",
            created_by=row.get("created_by") or "",
        )

    def is_active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, Any]) -> bool:
        """Whether every matcher matches ``labels`` (time is not considered)."""
        for key, wanted in self.matchers.items():
            if key == "org" and not _match_org(wanted, labels):
                return False
            if key == "scenario_id" and str(wanted) != str(labels.get("scenario_id")):
                return False
            if key == "kind":
                kinds = [wanted] if isinstance(wanted, str) else list(wanted)
                if labels.get("kind") not in kinds:
                    return False
            if key == "error_contains":
                needle = str(wanted).casefold()
                haystack = " ".join(
                    str(labels.get(k) or "") for k in ("error_name", "error_message")
                ).casefold()
                if needle not in haystack:
                    return False
        return True


def org_matches(wanted: Any, org_id: int, name: str) -> bool:
    """Whether an ``org`` matcher (id, name or glob) matches the organization ``org_id``/``name``.

    ``makewatch silence add --org`` uses it to refuse a matcher that matches no configured
    organization: a misspelt name would otherwise silence nothing, silently.
    """
    return _match_org(wanted, {"org_id": org_id, "org": name})


def _match_org(wanted: Any, labels: Mapping[str, Any]) -> bool:
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        return wanted == labels.get("org_id")
    text = str(wanted).strip()
    if text.isdigit():
        return int(text) == labels.get("org_id")
    name = str(labels.get("org") or "")
    return fnmatch.fnmatchcase(name.casefold(), text.casefold())


def active_silence(
    silences: Sequence[Silence], labels: Mapping[str, Any], now: float
) -> Silence | None:
    """The first silence active at ``now`` that matches ``labels``, or None."""
    for silence in silences:
        if silence.is_active(now) and silence.matches(labels):
            return silence
    return None
