"""``/healthz``: is every organization polled in time, and does every channel drain?

An organization is healthy while its last successful poll is recent enough: within its own
planned interval (``OrgPoller.interval_s``, which adapts to its budget and backs off after
failures) times ``web.health_grace_factor``, plus the time one cycle may take in flight
(``http.timeout_s`` × ``http.max_attempts``: a cycle that is slow is not yet a cycle that
failed). The clock starts at the service's start for an organization not polled since, so
a restart after a long stop is not unhealthy before it had a chance.

A channel is unhealthy when its deliveries have failed for
:data:`alerts.delivery.CHANNEL_FAILING_AFTER_S` (the same 10 minutes after which the other
channels are told), or when its oldest pending notice has waited that long.

Pure: everything comes in as arguments (``now`` included), so it is tested with plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from alerts.delivery import CHANNEL_FAILING_AFTER_S
from watcher.status import ChannelStatus, OrgStatus, age

__all__ = ["ChannelHealth", "Health", "OrgHealth", "OrgRuntime", "assess"]

STALE_NOTICE_S = CHANNEL_FAILING_AFTER_S


@dataclass(frozen=True)
class OrgRuntime:
    """What the running service knows of an organization beyond the store."""

    org_id: int
    name: str
    interval_s: float  # its poller's planned time to the next cycle
    budget_used: int
    budget_allowed: int
    rate_limited_since: float | None


@dataclass(frozen=True)
class OrgHealth:
    name: str
    org_id: int
    ok: bool
    reason: str
    last_ok_at: float | None
    lag_s: float | None
    allowed_s: float
    last_error: str | None
    rate_limited_since: float | None
    budget_used: int
    budget_allowed: int
    pending_reads: int


@dataclass(frozen=True)
class ChannelHealth:
    name: str
    ok: bool
    reason: str
    status: ChannelStatus


@dataclass(frozen=True)
class Health:
    orgs: Sequence[OrgHealth]
    channels: Sequence[ChannelHealth]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.orgs) and all(c.ok for c in self.channels)

    def to_json(self, *, detailed: bool) -> dict[str, Any]:
        """The /healthz body. Without ``detailed`` (an unauthenticated caller while a token is
        configured) only the overall status: no names, no error texts."""
        out: dict[str, Any] = {"status": "ok" if self.ok else "unhealthy"}
        if not detailed:
            return out
        out["organizations"] = {
            o.name: {
                "ok": o.ok,
                "reason": o.reason,
                "last_ok_at": o.last_ok_at,
                "lag_s": None if o.lag_s is None else round(o.lag_s, 1),
                "allowed_s": round(o.allowed_s, 1),
                "rate_limited_since": o.rate_limited_since,
            }
            for o in self.orgs
        }
        out["channels"] = {
            c.name: {
                "ok": c.ok,
                "reason": c.reason,
                "pending": c.status.pending,
                "failing_since": c.status.failing_since,
            }
            for c in self.channels
        }
        return out


def _org(
    rt: OrgRuntime, stored: OrgStatus | None, *, started_at: float, now: float, grace: float, in_flight_s: float
) -> OrgHealth:
    last_ok = stored.last_ok_at if stored else None
    allowed = rt.interval_s * grace + in_flight_s
    since = max(last_ok or started_at, started_at)  # not before this process could poll
    ok = now - since <= allowed
    last = stored.last_cycle if stored else None
    error = last["error"] if last and not last["ok"] else None
    lag = None if last_ok is None else max(0.0, now - last_ok)
    if ok:
        reason = f"polled {age(lag)} ago" if lag is not None else "not polled yet; started " + age(now - started_at) + " ago"
        reason += f" (allowed {age(allowed)})"
    else:
        what = f"last successful poll {age(lag)} ago" if lag is not None else "never polled successfully"
        reason = f"overdue: {what}, allowed {age(allowed)} (interval {age(rt.interval_s)} × {grace:g} + {age(in_flight_s)})"
    if error:
        reason += f"; last cycle failed: {error}"
    if rt.rate_limited_since is not None:
        reason += f"; Make has answered 429 for {age(now - rt.rate_limited_since)}"
    return OrgHealth(
        name=rt.name,
        org_id=rt.org_id,
        ok=ok,
        reason=reason,
        last_ok_at=last_ok,
        lag_s=lag,
        allowed_s=allowed,
        last_error=error,
        rate_limited_since=rt.rate_limited_since,
        budget_used=rt.budget_used,
        budget_allowed=rt.budget_allowed,
        pending_reads=stored.pending_reads if stored else 0,
    )


def _channel(status: ChannelStatus, now: float) -> ChannelHealth:
    failing_for = None if status.failing_since is None else now - status.failing_since
    oldest = status.oldest_age_s(now)
    if failing_for is not None and failing_for >= CHANNEL_FAILING_AFTER_S:
        return ChannelHealth(status.name, False, f"failing for {age(failing_for)}: {status.last_error or 'unknown error'}", status)
    if oldest is not None and oldest >= STALE_NOTICE_S:
        return ChannelHealth(status.name, False, f"not draining: the oldest of {status.pending} pending notice(s) waits for {age(oldest)}", status)
    if failing_for is not None:
        reason = f"retrying: failing for {age(failing_for)}"
    elif status.pending:
        reason = f"draining: {status.pending} pending, oldest {age(oldest or 0.0)}"
    else:
        reason = "nothing pending"
    return ChannelHealth(status.name, True, reason, status)


def assess(
    runtime: Iterable[OrgRuntime],
    orgs: Iterable[OrgStatus],
    channels: Iterable[ChannelStatus],
    channel_names: Iterable[str],
    *,
    started_at: float,
    now: float,
    grace: float,
    in_flight_s: float,
) -> Health:
    """Health of every configured organization (``runtime``) and channel (``channel_names``,
    plus any the outbox still names)."""
    stored = {o.id: o for o in orgs}
    by_name = {c.name: c for c in channels}
    for name in channel_names:
        by_name.setdefault(name, ChannelStatus(name))
    return Health(
        orgs=[
            _org(rt, stored.get(rt.org_id), started_at=started_at, now=now, grace=grace, in_flight_s=in_flight_s)
            for rt in runtime
        ],
        channels=[_channel(by_name[n], now) for n in sorted(by_name)],
    )
