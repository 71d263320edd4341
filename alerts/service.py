"""The alerting side of the worker: decide on new events, then drain the outbox."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from alerts.delivery import DeliveryReport, RetryPolicy, deliver_due, release_backoff
from alerts.notify import Notifier, build_notifier
from alerts.pipeline import ProcessReport, process_events
from alerts.policy import Policy
from alerts.render import Renderer
from watcher.config import Settings
from watcher.store import Store

if TYPE_CHECKING:
    from sqlite_utils import Database

    from watcher.web.metrics import Metrics

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
# Older history keeps only what is still read of it (watcher.store.compact_history): two
# weeks of events cover any digest period (at most a week) and a digest sent days late; a
# sent notice is never rendered again, a day of them is kept whole to look at.
COMPACT_AFTER_S = 14 * 86400.0
COMPACT_SENT_AFTER_S = 86400.0
# How long one delivery pass of `makewatch run` may hold the next decision on new events: a
# backlog (a restart after an outage) drains in passes of about this long, each after a new
# decision, instead of new events waiting for the whole backlog (alerts.delivery). Two seconds
# cost one new SMTP connection and one idle decision per pass, little beside the messages sent.
PASS_BUDGET_S = 2.0


@dataclass
class AlertsReport:
    processed: ProcessReport
    delivered: DeliveryReport
    digests: list = field(default_factory=list)

    @classmethod
    def empty(cls) -> AlertsReport:
        """Nothing decided, nothing sent (a replica without the alerts lease)."""
        return cls(ProcessReport(), DeliveryReport())

    def summary(self) -> str:
        d = self.delivered
        return (
            f"alerts: {self.processed.events} events decided, {self.processed.notifications} "
            f"notifications queued; sent {d.sent}, retrying {d.retried}, waiting {d.waiting}, parked {d.parked}"
            + (f", {d.deferred} due for the next pass" if d.deferred else "")
            + (f"; digests sent {sum(1 for r in self.digests if r.sent)}" if self.digests else "")
        )


class Alerter:
    """Owns the notifiers; ``tick(now)`` decides and delivers what is due."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        session: aiohttp.ClientSession,
        *,
        rng: random.Random | None = None,
        retry: RetryPolicy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.settings = settings
        self._digest_retry_at: dict[str, float] = {}
        self.policy = Policy.from_settings(settings)
        self.renderer = Renderer(settings.alerts.templates_dir)
        self.notifiers: dict[str, Notifier] = {
            name: build_notifier(name, channel, session=session, renderer=self.renderer)
            for name, channel in settings.channels.items()
        }
        actions = getattr(settings, "actions", None)
        if actions is not None and actions.enabled:
            from alerts.notify.slack import SlackBotNotifier

            for name, notifier in self.notifiers.items():
                channel = settings.channels[name]
                if isinstance(notifier, SlackBotNotifier) and (channel.app_token or channel.signing_secret):
                    notifier.button_silences = tuple(actions.silence_choices_s)
        self.rng = rng or random.Random()
        self.retry = retry or RetryPolicy()
        self._pruned_at = 0.0
        self._started = False

    async def tick(self, now: float, *, budget_s: float | None = None) -> AlertsReport:
        """Decide on new events, deliver what is due (for at most about ``budget_s`` when
        given: see :data:`PASS_BUDGET_S`; then ``report.delivered.deferred`` counts what is
        left, due at once), send due digests, prune hourly."""
        if not self._started:
            # Retry at once after a restart: the previous process's backoff helps nobody.
            self._started = True
            released = await release_backoff(self.store, now)
            if released:
                log.info("start: %d pending notification(s) retried now", released)
        processed = await process_events(self.store, self.policy, now, metrics=self.metrics)
        delivered = await deliver_due(
            self.store, self.notifiers, now, rng=self.rng, policy=self.retry, metrics=self.metrics,
            budget_s=budget_s,
        )
        digests = []
        if self.settings.digests:
            from alerts.digest_send import send_due_digests

            digests = await send_due_digests(
                self.settings, self.store, self.notifiers, self.renderer, now, self._digest_retry_at,
                metrics=self.metrics,
            )
        if now - self._pruned_at >= PRUNE_EVERY_S:
            await self.prune(now)
        return AlertsReport(processed, delivered, digests)

    async def prune(self, now: float) -> dict[str, int]:
        """Forget history older than ``state.retention_days``, and shrink what is older than
        :data:`COMPACT_AFTER_S` to what is still read of it (hourly, from ``tick``)."""
        from watcher.store import compact_history, prune

        self._pruned_at = now
        before = now - self.settings.state.retention_days * 86400.0

        def tx(db: Database) -> dict[str, int]:
            deleted = prune(db, before)
            compact_history(db, now - COMPACT_AFTER_S, now - COMPACT_SENT_AFTER_S)
            return deleted

        deleted = await self.store.write(tx)
        if any(deleted.values()):
            log.info("forgot history older than %d days: %s", self.settings.state.retention_days, deleted)
        return deleted

    async def aclose(self) -> None:
        for notifier in self.notifiers.values():
            try:
                await notifier.aclose()
            except Exception:  # closing must not hide the real outcome
                log.exception("closing channel %s", notifier.name)
