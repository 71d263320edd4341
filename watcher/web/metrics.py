"""Prometheus metrics of one service instance.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never the process-global one), so
two services in one process, or two tests, never share counts. Counters are incremented
where things happen (the Make client, the alert pipeline, delivery, digests, the service
loop); gauges that describe the state (outbox depth, budget, poll lag, pending reads) are
computed at scrape time from a :class:`ScrapeState` the web handler reads from the store
just before rendering, so they can never drift from what the state file says.

Label values are bounded: organizations and channels come from the configuration, an
endpoint is the request's path *template* (``/scenarios/{id}/logs``, see
:func:`endpoint_template`), never a raw id or a query string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "Metrics",
    "OrgGauges",
    "ScrapeState",
    "endpoint_template",
]

# What generate_latest() writes is the classic text format; prometheus_client itself serves
# it under this type when the scraper asks for nothing newer (exposition.choose_encoder), and
# every Prometheus version reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Path segments after these name one object of the collection: they become "{id}".
_COLLECTIONS = frozenset({"scenarios", "organizations", "teams", "dlqs", "hooks", "logs", "executions"})
# Words that follow a collection but are not ids.
_STATIC = frozenset({"consumptions", "usage", "logs", "executions", "me", "retry"})

# A quiet cycle takes a few requests (well under a second); a busy one reading many logs at
# a Core budget may take minutes.
CYCLE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

OUTCOMES = ("sent", "held", "failed", "parked")


def endpoint_template(path: str) -> str:
    """``/scenarios/123/logs/ab12cd`` -> ``/scenarios/{id}/logs/{id}``: a bounded label."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    out: list[str] = []
    for i, part in enumerate(parts):
        after_collection = i > 0 and parts[i - 1] in _COLLECTIONS
        if (after_collection and part not in _STATIC) or any(c.isdigit() for c in part):
            out.append("{id}")
        else:
            out.append(part)
    return "/" + "/".join(out)


@dataclass(frozen=True)
class OrgGauges:
    """One organization's state at scrape time (label ``org`` is its configured name)."""

    org: str
    budget_used: int
    budget_allowed: int
    poll_lag_s: float | None  # since the last successful poll; None before the first
    pending_reads: int
    rate_limited: bool = False


@dataclass(frozen=True)
class ChannelGauges:
    channel: str
    outbox_pending: int
    outbox_oldest_age_s: float  # 0 when nothing is pending
    failing: bool = False


@dataclass
class ScrapeState:
    orgs: Sequence[OrgGauges] = ()
    channels: Sequence[ChannelGauges] = ()
    open_alerts: dict[str, int] = field(default_factory=dict)  # by severity
    #: A replica on PostgreSQL (watcher.replicas): leases held now, and lease changes since
    #: start by kind (gained, lost, released, taken_over). None on SQLite: not exported.
    leases_held: int | None = None
    lease_changes: dict[str, int] = field(default_factory=dict)


class _StateCollector(Collector):
    """Yields the scrape-time gauges from the state the handler set just before rendering."""

    def __init__(self) -> None:
        self.state = ScrapeState()

    def collect(self) -> Iterator[Metric]:
        s = self.state
        gauges = {
            "used": GaugeMetricFamily(
                "makewatch_budget_used_requests",
                "Requests to Make counting against the organization's budget now (in flight or in the last 60 s).",
                labels=["org"],
            ),
            "allowed": GaugeMetricFamily(
                "makewatch_budget_allowed_requests",
                "Requests to Make the organization's budget allows per 60 s window.",
                labels=["org"],
            ),
            "lag": GaugeMetricFamily(
                "makewatch_poll_lag_seconds",
                "Seconds since the organization's last successful poll ended.",
                labels=["org"],
            ),
            "pending": GaugeMetricFamily(
                "makewatch_pending_reads",
                "Scenarios whose logs are waiting to be read (work carried over).",
                labels=["org"],
            ),
            "limited": GaugeMetricFamily(
                "makewatch_rate_limited",
                "1 while Make answers 429 to this organization's requests.",
                labels=["org"],
            ),
        }
        for o in s.orgs:
            gauges["used"].add_metric([o.org], o.budget_used)
            gauges["allowed"].add_metric([o.org], o.budget_allowed)
            if o.poll_lag_s is not None:
                gauges["lag"].add_metric([o.org], o.poll_lag_s)
            gauges["pending"].add_metric([o.org], o.pending_reads)
            gauges["limited"].add_metric([o.org], int(o.rate_limited))
        yield from gauges.values()
        depth = GaugeMetricFamily(
            "makewatch_outbox_pending", "Notifications waiting in the outbox.", labels=["channel"]
        )
        oldest = GaugeMetricFamily(
            "makewatch_outbox_oldest_age_seconds",
            "Age of the oldest notification waiting in the outbox (0 when none waits).",
            labels=["channel"],
        )
        failing = GaugeMetricFamily(
            "makewatch_channel_failing", "1 while the channel's deliveries fail.", labels=["channel"]
        )
        for c in s.channels:
            depth.add_metric([c.channel], c.outbox_pending)
            oldest.add_metric([c.channel], c.outbox_oldest_age_s)
            failing.add_metric([c.channel], int(c.failing))
        yield from (depth, oldest, failing)
        alerts = GaugeMetricFamily(
            "makewatch_alerts_open", "Alerts not resolved, by severity.", labels=["severity"]
        )
        for severity, n in sorted(s.open_alerts.items()):
            alerts.add_metric([severity], n)
        yield alerts
        if s.leases_held is not None:
            held = GaugeMetricFamily(
                "makewatch_leases_held", "Leases (organizations, the alert loop) this replica holds now."
            )
            held.add_metric([], s.leases_held)
            yield held
            changes = CounterMetricFamily(
                "makewatch_lease_changes",
                "Lease changes of this replica since it started: gained, lost (expired, taken, "
                "or not renewable), released (handed over), taken_over (gained from a replica "
                "whose lease had expired).",
                labels=["change"],
            )
            for change, n in sorted(s.lease_changes.items()):
                changes.add_metric([change], n)
            yield changes


class Metrics:
    """Every metric of one service instance, in its own registry.

    The service loop counts a restarted task with :meth:`task_restarted`; the Make client
    reports each response through :meth:`request_observer` and each malformed entry it
    skipped through :meth:`skip_observer`; the alert side calls
    :meth:`notification`, :meth:`digest_sent`; the poller loop :meth:`cycle_done`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # prometheus_client appends "_total" to counter names in the exposition.
        self.requests = Counter(
            "makewatch_make_requests",
            "Requests to the Make API, by organization, endpoint template and HTTP status "
            '("error": no response, a timeout or a network error).',
            ["org", "endpoint", "status"],
            registry=r,
        )
        self.rate_limited = Counter(
            "makewatch_make_rate_limited_responses",
            "429 (rate limited) answers from Make, by organization.",
            ["org"],
            registry=r,
        )
        self.entries_skipped = Counter(
            "makewatch_api_entries_skipped",
            "Entries of Make's list answers skipped as malformed (no id, not an object), by "
            "organization and endpoint template; the rest of the answer is used.",
            ["org", "endpoint"],
            registry=r,
        )
        self.events = Counter(
            "makewatch_events", "New events detected and stored, by organization and kind.", ["org", "kind"], registry=r
        )
        self.notifications = Counter(
            "makewatch_notifications",
            "Notifications by channel and outcome: sent; held (by the flood cap); failed (an "
            "attempt that will be retried); parked (given up after a permanent error).",
            ["channel", "outcome"],
            registry=r,
        )
        self.digests = Counter("makewatch_digests_sent", "Digest e-mails sent.", registry=r)
        self.cycle_seconds = Histogram(
            "makewatch_poll_cycle_duration_seconds",
            "Duration of one polling cycle of one organization.",
            ["org"],
            buckets=CYCLE_BUCKETS_S,
            registry=r,
        )
        self.task_restarts = Counter(
            "makewatch_task_restarts",
            "Service tasks restarted after they crashed, by task.",
            ["task"],
            registry=r,
        )
        self.actions = Counter(
            "makewatch_actions",
            "Presses of alert buttons and CLI actions, by action and outcome.",
            ["action", "outcome"],
            registry=r,
        )
        self.socket_reconnects = Counter(
            "makewatch_slack_socket_reconnects",
            "Socket Mode connections the watchdog replaced (silent or dropped).",
            registry=r,
        )
        self._state = _StateCollector()
        r.register(self._state)

    # --- where things happen ------------------------------------------------------------

    def request_observer(self, org: str) -> Callable[[str, int | None], None]:
        """A callback for :class:`watcher.make.MakeClient` (``on_response``): counts each
        response of ``org``'s client by endpoint template and status."""

        def observe(path: str, status: int | None) -> None:
            self.requests.labels(org, endpoint_template(path), "error" if status is None else str(status)).inc()
            if status == 429:
                self.rate_limited.labels(org).inc()

        return observe

    def skip_observer(self, org: str) -> Callable[[str], None]:
        """A callback for :class:`watcher.make.MakeClient` (``on_skip``): counts each entry
        of ``org``'s list answers skipped as malformed, by endpoint template."""

        def observe(path: str) -> None:
            self.entries_skipped.labels(org, endpoint_template(path)).inc()

        return observe

    def cycle_done(self, org: str, duration_s: float, events: dict[str, int]) -> None:
        self.cycle_seconds.labels(org).observe(max(0.0, duration_s))
        for kind, n in events.items():
            if n:
                self.events.labels(org, kind).inc(n)

    def notification(self, channel: str, outcome: str, n: int = 1) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        if n:
            self.notifications.labels(channel, outcome).inc(n)

    def digest_sent(self) -> None:
        self.digests.inc()

    def action_done(self, action: str, outcome: str) -> None:
        """Count one button press (``action``: ack, silence, start, replay, retry; ``outcome``:
        done, already, refused, failed, not_allowed, duplicate, unknown_alert)."""
        self.actions.labels(action, outcome).inc()

    def socket_reconnected(self, n: int = 1) -> None:
        self.socket_reconnects.inc(n)

    def task_restarted(self, task: str) -> None:
        """Count a crashed service task that was started again (``task``: a short, bounded
        name such as ``"poll"`` or ``"alerts"``, never an id)."""
        self.task_restarts.labels(task).inc()

    # --- exposition ---------------------------------------------------------------------

    def exposition(self, state: ScrapeState) -> bytes:
        """The text format of every metric, the gauges taken from ``state``."""
        self._state.state = state
        return generate_latest(self.registry)
