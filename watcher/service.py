"""The watcher: every configured organization polled concurrently, cycle after cycle."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import aiohttp

from watcher.clock import Clock, SystemClock
from watcher.config import Settings
from watcher.orgs import make_client
from watcher.poller import CycleReport, OrgPoller
from watcher.store import StateFileError, Store
from watcher.web.metrics import Metrics

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

    async def _poll(self, poller: OrgPoller) -> CycleReport:
        """One cycle of one organization, timed and counted (watcher.web.metrics)."""
        started = self.clock.time()
        report = await poller.poll_once()
        self.metrics.cycle_done(poller.org.name, self.clock.time() - started, report.events)
        return report

    async def poll_once(self) -> list[CycleReport]:
        """One cycle of every organization, concurrently.

        A failing organization (Make errors are reported in its CycleReport; anything else is
        logged) never stops or delays the others.
        """
        results = await asyncio.gather(*(self._poll(p) for p in self.pollers), return_exceptions=True)
        reports: list[CycleReport] = []
        for poller, result in zip(self.pollers, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                problem = self.store.state_file_error(result)
                if problem is not None:
                    raise problem from result
                log.error("organization %s: cycle crashed: %r", poller.org.name, result, exc_info=result)
                reports.append(CycleReport(poller.org.name, error=f"internal error: {result!r}"[:300]))
            else:
                reports.append(result)
        return reports

    async def alert(self):  # noqa: ANN201 - alerts.service.AlertsReport
        """Decide on new events (and elapsed group waits), then deliver what is due."""
        return await self.alerter.tick(self.clock.time())

    async def cycle(self) -> tuple[list[CycleReport], object]:
        """``makewatch once``: poll every organization, then alert."""
        reports = await self.poll_once()
        return reports, await self.alert()

    async def _every(self, interval, stop: asyncio.Event, work) -> None:  # noqa: ANN001
        """Run ``work`` every ``interval`` seconds (a number, or a function giving the next one)."""
        while not stop.is_set():
            started = self.clock.time()
            try:
                await work()
                # A deleted state file raises nothing by itself (the open connection writes on
                # to the unlinked inode), so look at the path after each round.
                self.store.check_file()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                problem = self._state_file_problem(exc)
                if problem is not None:
                    # Retrying cannot mend the file: stop everything, run() raises it.
                    self.fatal = self.fatal or problem
                    stop.set()
                    return
                log.exception("unexpected error; going on")
            every = interval() if callable(interval) else interval
            wait = max(0.0, started + every - self.clock.time())
            sleeper = asyncio.ensure_future(self.clock.sleep(wait))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sleeper, stopper):
                task.cancel()

    def _state_file_problem(self, exc: Exception) -> StateFileError | None:
        problem = self.store.state_file_error(exc)
        if problem is None:
            # Whatever failed, a vanished file explains it better than the error itself.
            try:
                self.store.check_file()
            except StateFileError as gone:
                problem = gone
        return problem

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``poll_interval_s`` and alert every few seconds until ``stop`` is set.

        Raises :class:`StateFileError` (after setting ``stop``) when the state file becomes
        unusable: read-only, corrupt, deleted or replaced, disk full.
        """

        async def alert() -> None:
            report = await self.alert()
            if report.processed.events or report.delivered.sent or report.delivered.retried:
                log.info("%s", report.summary())

        try:
            await asyncio.gather(
                *(self._poll_loop(poller, stop) for poller in self.pollers),
                self._every(self.alert_tick_s, stop, alert),
            )
        except asyncio.CancelledError:
            # The caller cancels us when it sees ``stop``, which a fatal problem sets: that
            # cancellation is our own stop, and the problem is the outcome to report.
            if self.fatal is None:
                raise
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
            log.log(level, "%s", format_report(report))
            interval = poller.next_interval_s(report)

        await self._every(lambda: interval, stop, poll)

    async def aclose(self) -> None:
        await self.alerter.aclose()


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
