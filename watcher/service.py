"""The watcher: every configured organization polled concurrently, cycle after cycle."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp

from watcher.clock import Clock, SystemClock
from watcher.config import Settings, budget_per_minute
from watcher.leases import LeaseLost
from watcher.orgs import make_client
from watcher.poller import CycleReport, OrgPoller
from watcher.store import StateFileError, Store, StoreUnavailable
from watcher.web.metrics import Metrics

if TYPE_CHECKING:
    from watcher.interactions_service import Interactions
    from watcher.replicas import Replica

log = logging.getLogger(__name__)


class Watcher:
    """Owns the pollers of all organizations; the caller owns store and session."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        session: aiohttp.ClientSession,
        clock: Clock | None = None,
        *,
        alert_tick_s: float = 5.0,
        metrics: Metrics | None = None,
        lease_clock: Callable[[], float] | None = None,
    ) -> None:
        from alerts.service import Alerter

        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        #: Set when the state file became unusable: :meth:`run` then stops and raises it.
        self.fatal: StateFileError | None = None
        #: This instance's Prometheus metrics (its own registry): served on /metrics; the
        #: loop counts a restarted task with ``self.metrics.task_restarted(name)``.
        self.metrics = metrics if metrics is not None else Metrics()
        self.alerter = Alerter(settings, store, session, metrics=self.metrics)
        self.alert_tick_s = alert_tick_s
        #: Slack buttons (receivers, handler, the poll's verdicts) when [actions] is on.
        self.interactions: Interactions | None = None
        if settings.actions.enabled:
            from watcher.interactions_service import Interactions as _Interactions

            self.interactions = _Interactions(settings, store, session, self.clock, self.metrics)
        #: Set when a poll found new events: the alert loop decides at once instead of at
        #: its next tick (up to alert_tick_s of latency saved on every first notice).
        self._news = asyncio.Event()
        self.pollers = [
            OrgPoller(
                org,
                make_client(session, org, settings.http, self.clock, self.metrics),
                store,
                settings.polling,
                self.clock,
            )
            for org in settings.organizations
        ]
        #: On PostgreSQL: this replica's leases (watcher.replicas); None on SQLite.
        self.replica: Replica | None = None
        if getattr(store, "engine", "sqlite") == "postgres" and settings.state.url is not None:
            from watcher.replicas import ALERTS_LEASE, Replica, org_lease

            self.replica = Replica(
                settings.state.url.reveal(),
                [org_lease(o.organization_id) for o in settings.organizations] + [ALERTS_LEASE],
                replica_id=settings.state.replica_id,
                ttl_s=settings.state.lease_ttl_s,
                clock=self.clock,
                lease_clock=lease_clock,
            )

    async def _poll(self, poller: OrgPoller) -> CycleReport:
        """One cycle of one organization, timed and counted (watcher.web.metrics)."""
        started = self.clock.time()
        report = await poller.poll_once()
        self.metrics.cycle_done(poller.org.name, self.clock.time() - started, report.events)
        return report

    def _held_pollers(self) -> list[OrgPoller]:
        """The pollers to run now: all of them, or on a replica those whose lease it holds
        (each given a store fenced by its lease)."""
        if self.replica is None:
            return list(self.pollers)
        from watcher.replicas import org_lease

        held = []
        for poller in self.pollers:
            lease = self.replica.lease(org_lease(poller.org.organization_id))
            if lease is not None:
                poller.store = self.replica.fenced(self.store, lease)
                self.replica.quota_from_now(org_lease(poller.org.organization_id))
                poller.client.limiter.gate = self.replica.gate(lease, poller.client.limiter)
                held.append(poller)
        return held

    async def poll_once(self) -> list[CycleReport]:
        """One cycle of every organization (on a replica: every one it holds), concurrently.

        A failing organization (Make errors are reported in its CycleReport; anything else is
        logged) never stops or delays the others.
        """
        pollers = self._held_pollers()
        results = await asyncio.gather(*(self._poll(p) for p in pollers), return_exceptions=True)
        reports: list[CycleReport] = []
        for poller, result in zip(pollers, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, LeaseLost):
                    reports.append(CycleReport(poller.org.name, error="lease lost to another replica"))
                    continue
                problem = self.store.state_file_error(result)
                if problem is not None:
                    raise problem from result
                log.error("organization %s: cycle crashed: %r", poller.org.name, result, exc_info=result)
                reports.append(CycleReport(poller.org.name, error=f"internal error: {result!r}"[:300]))
            else:
                reports.append(result)
        return reports

    async def alert(self, budget_s: float | None = None):  # noqa: ANN201 - alerts.service.AlertsReport
        """Decide on new events (and elapsed group waits), then deliver what is due (for about
        ``budget_s`` at most when given: alerts.service.PASS_BUDGET_S).

        A replica does so only while it holds the ``alerts`` lease, with every write fenced
        by it; otherwise (or once it is lost midway) the report is empty."""
        if self.replica is not None:
            from alerts.service import AlertsReport
            from watcher.replicas import ALERTS_LEASE

            lease = self.replica.lease(ALERTS_LEASE)
            if lease is None:
                return AlertsReport.empty()
            self.alerter.store = self.replica.fenced(self.store, lease)
            try:
                report = await self.alerter.tick(self.clock.time(), budget_s=budget_s)
            except LeaseLost:
                log.info("replica %s: the alerts lease was lost during a tick", self.replica.id)
                return AlertsReport.empty()
        else:
            report = await self.alerter.tick(self.clock.time(), budget_s=budget_s)
        if self.interactions is not None:
            # After the alerts: a reactivation's verdict follows its own notices.
            await self.interactions.tick(self.clock.time())
        return report

    async def cycle(self) -> tuple[list[CycleReport], object]:
        """``makewatch once``: poll every organization, then alert. A replica polls what its
        leases give it (everything, when no other replica runs) and hands them back after."""
        if self.replica is None:
            reports = await self.poll_once()
            return reports, await self.alert()
        await self.replica.start()
        try:
            reports = await self.poll_once()
            return reports, await self.alert()
        finally:
            await self.replica.stop()

    async def _every(self, interval, stop: asyncio.Event, work, name: str = "task", wake: asyncio.Event | None = None) -> None:  # noqa: ANN001
        """Run ``work`` every ``interval`` seconds (a number, or a function giving the next one).

        A round that crashes (an error makewatch did not foresee) is logged, counted in
        ``makewatch_task_restarts_total{task=name}`` and started again after a backoff that
        doubles from 5 s to 5 min while it keeps crashing, so a persistent bug neither stops
        the service nor spins it."""
        crashes = 0
        while not stop.is_set():
            started = self.clock.time()
            pause = 0.0
            try:
                await work()
                # A deleted state file raises nothing by itself (the open connection writes on
                # to the unlinked inode), so look at the path after each round.
                self.store.check_file()
                crashes = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, LeaseLost):
                    # Another replica holds it now: not a crash; the caller waits for a lease.
                    log.info("%s: %s; this replica stops it", name, exc)
                    raise
                if isinstance(exc, StoreUnavailable):
                    # The database server is restarting or unreachable: a round later.
                    pause = min(restart_backoff_s(crashes + 1), 30.0)
                    crashes += 1
                    log.warning("%s: %s; again in %.0f s", name, exc, pause)
                    if not await self._sleep_unless(stop, pause):
                        return
                    continue
                problem = self._state_file_problem(exc)
                if problem is not None:
                    # Retrying cannot mend the file: stop everything, run() raises it.
                    self.fatal = self.fatal or problem
                    stop.set()
                    return
                crashes += 1
                pause = restart_backoff_s(crashes)
                self.metrics.task_restarted(name)
                log.exception("%s: unexpected error (%d in a row); starting it again in %.0f s", name, crashes, pause)
            every = interval() if callable(interval) else interval
            wait = max(pause, started + every - self.clock.time(), 0.0)
            if not await self._sleep_unless(stop, wait, None if pause else wake):
                return

    async def _sleep_unless(self, stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> bool:
        """Sleep ``seconds`` on the service clock, or until ``wake`` is set (then cleared);
        False (at once) when ``stop`` is set."""
        waits = {asyncio.ensure_future(self.clock.sleep(seconds)), asyncio.ensure_future(stop.wait())}
        if wake is not None:
            waits.add(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if wake is not None:
            wake.clear()
        return not stop.is_set()

    async def _supervised(self, name: str, stop: asyncio.Event, loop) -> None:  # noqa: ANN001
        """Keep the coroutine ``loop()`` running until ``stop``: if it dies of an error (not of
        a state-file problem, which stops the service), log it, count it and start it again
        after a backoff."""
        crashes = 0
        while not stop.is_set():
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                crashes += 1
                pause = restart_backoff_s(crashes)
                self.metrics.task_restarted(name)
                log.exception("%s: the task died (%d in a row); starting it again in %.0f s", name, crashes, pause)
                if not await self._sleep_unless(stop, pause):
                    return

    def _state_file_problem(self, exc: Exception) -> StateFileError | None:
        problem = self.store.state_file_error(exc)
        if problem is None:
            # Whatever failed, a vanished file explains it better than the error itself.
            try:
                self.store.check_file()
            except StateFileError as gone:
                problem = gone
        return problem

    async def run(self, stop: asyncio.Event, shutdown_timeout_s: float = 8.0) -> None:
        """Poll every organization at its own pace and alert every few seconds until ``stop``.

        On ``stop``, polling ends at once (a cycle in flight is cancelled: each of its writes
        is a whole transaction) and the alert round in flight, with its deliveries, gets up to
        ``shutdown_timeout_s`` to finish, so a notice Slack or the SMTP server is accepting
        right now is recorded as sent rather than sent again after the restart. What is not
        done by then stays in the outbox.

        Raises :class:`StateFileError` (after setting ``stop``) when the state file becomes
        unusable: read-only, corrupt, deleted or replaced, disk full.
        """

        from alerts.service import PASS_BUDGET_S

        async def alert() -> None:
            report = await self.alert(budget_s=PASS_BUDGET_S)
            if report.processed.events or report.delivered.sent or report.delivered.retried:
                log.info("%s", report.summary())
            if report.delivered.deferred:
                self._news.set()  # a backlog: decide on what came meanwhile, then deliver on

        if self.replica is not None:
            # Leases first: each organization's loop starts polling once its lease is held.
            await self.replica.start()
            polls = [
                asyncio.create_task(self._supervised("poll", stop, lambda i=i: self._leased_poll_loop(i, stop)))
                for i in range(len(self.pollers))
            ]
            polls.append(
                asyncio.create_task(
                    self._supervised("leases", stop, lambda: self.replica.run(stop, self._publish_budgets))
                )
            )
        else:
            polls = [
                asyncio.create_task(self._supervised("poll", stop, lambda p=p: self._poll_loop(p, stop)))
                for p in self.pollers
            ]
        alerts = asyncio.create_task(
            self._supervised("alerts", stop, lambda: self._every(self.alert_tick_s, stop, alert, "alerts", self._news))
        )
        tasks = [*polls, alerts]
        if self.interactions is not None:
            await self.interactions.start()
        try:
            await stop.wait()
            for task in polls:
                task.cancel()
            _, late = await asyncio.wait({alerts}, timeout=shutdown_timeout_s)
            if late:
                log.warning(
                    "stopping: deliveries still in flight after %.0f s are cancelled; "
                    "they stay in the outbox and are sent after the restart",
                    shutdown_timeout_s,
                )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.interactions is not None:
                await self.interactions.stop()
            if self.replica is not None:
                # After the last write: the others take over at once, not after the TTL,
                # knowing every request this one made (the budget travels with the release).
                try:
                    self._publish_budgets()
                    await self.replica.stop()
                except Exception as exc:  # the database is gone: the leases expire by themselves
                    log.warning("replica %s: could not release the leases (%s); they expire in %.0f s",
                                self.replica.id, type(exc).__name__, self.replica.ttl_s)
        if self.fatal is not None:
            raise self.fatal

    async def _poll_loop(self, poller: OrgPoller, stop: asyncio.Event) -> None:
        """One organization at its own pace (OrgPoller.next_interval_s): a slow or failing
        organization never holds the others back."""
        interval = self.settings.polling.poll_interval_s

        async def poll() -> None:
            nonlocal interval
            report = await self._poll(poller)
            # A quiet cycle every 10 s is not news: log it at debug level only.
            level = logging.INFO if (report.events or not report.ok or report.carried_over) else logging.DEBUG
            log.log(level, "%s", format_report(report), extra={"org": report.org, "events": dict(report.events)})
            if report.events:
                self._news.set()
            interval = poller.next_interval_s(report)

        await self._every(lambda: interval, stop, poll, "poll")

    def _publish_budgets(self) -> None:
        """Hand each held organization's recent requests to the lease manager (stored with the
        next renewal, for whoever holds the organization next)."""
        assert self.replica is not None
        from watcher.replicas import org_lease

        for poller in self.pollers:
            name = org_lease(poller.org.organization_id)
            if self.replica.lease(name) is not None:
                self.replica.manager.set_budget(name, poller.client.limiter.recent())

    async def _leased_poll_loop(self, index: int, stop: asyncio.Event) -> None:
        """A replica's loop for one organization: poll it while its lease is held, with a
        fresh poller each time the lease is (re)gained (what another replica did meanwhile
        is in the database, not in a poller's memory), and stop as soon as it is lost."""
        assert self.replica is not None
        from watcher.replicas import org_lease, takeover_budget

        replica = self.replica
        old = self.pollers[index]
        name = org_lease(old.org.organization_id)
        while not stop.is_set():
            lease = replica.lease(name)
            if lease is None:
                await replica.wait_change(stop)
                continue
            poller = OrgPoller(old.org, old.client, replica.fenced(self.store, lease), self.settings.polling, self.clock)
            self.pollers[index] = old = poller
            limiter = poller.client.limiter
            previous = replica.previous.pop(name, None)
            if previous is not None:
                # The window the previous holder may have filled is its budget, known from the
                # organization's API limit (stored by whoever calibrated it), not this fresh
                # limiter's start value (the Free plan's until the first calibration).
                known = await self.store.get_organization(old.org.organization_id)
                budget = budget_per_minute(old.org, (known or {}).get("api_limit"))
                seed = takeover_budget(previous, self.clock.time(), replica.ttl_s, max(budget, limiter.per_window))
                if seed:
                    limiter.seed(seed)
                    # Stored now: if this replica dies before its first renewal, the next
                    # taker still knows what the previous holders spent.
                    try:
                        await replica.manager.save_budget(name, limiter.recent())
                    except Exception as exc:  # the lease loop will notice a lost database
                        log.warning("replica %s: could not store %s's budget now: %s", replica.id, name, exc)
            replica.quota_from_now(name)
            limiter.gate = replica.gate(lease, limiter)
            task = asyncio.create_task(self._poll_loop(poller, stop))
            while not stop.is_set() and not task.done() and replica.lease(name) == lease:
                await replica.wait_change(stop, task)
            task.cancel()
            results = await asyncio.gather(task, return_exceptions=True)
            if isinstance(results[0], LeaseLost) and replica.lease(name) == lease:
                # The database says it is gone before the manager noticed: wait for its tick.
                await replica.wait_change(stop, timeout_s=replica.ttl_s / 3)

    async def aclose(self) -> None:
        await self.alerter.aclose()


def restart_backoff_s(crashes: int) -> float:
    """The pause before starting a crashed task again: 5 s, doubling, at most 5 minutes."""
    return min(300.0, 5.0 * 2 ** (max(crashes, 1) - 1))


def format_report(r: CycleReport) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.events.items())) or "none"
    status = "ok" if r.ok else f"FAILED ({r.error})"
    return (
        f"{r.org}: {status}; requests {r.requests} (budget {r.budget_per_minute}/min); "
        f"scenarios {r.scenarios}, logs read {r.logs_read}, DLQs read {r.dlqs_read}, "
        f"carried over {r.carried_over}; new events: {kinds}"
    )


def format_reports(reports: list[CycleReport]) -> str:
    total: Counter[str] = Counter()
    for r in reports:
        total.update(r.events)
    lines = [format_report(r) for r in reports]
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(total.items())) or "none"
    lines.append(f"total: requests {sum(r.requests for r in reports)}; new events: {kinds}")
    return "\n".join(lines)
