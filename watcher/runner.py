"""Entry points behind ``makewatch once`` and ``makewatch run``."""

from __future__ import annotations

import asyncio
import logging
import signal

import aiohttp

from watcher.clock import Clock
from watcher.config import Settings
from watcher.service import Watcher, format_reports
from watcher.store import open_state
from watcher.web.app import start_web

log = logging.getLogger(__name__)


async def run_once(settings: Settings, clock: Clock | None = None) -> tuple[bool, str]:
    with open_state(settings.state) as store:
        async with aiohttp.ClientSession() as session:
            watcher = Watcher(settings, store, session, clock)
            try:
                reports, alerts = await watcher.cycle()
            finally:
                await watcher.aclose()
    return all(r.ok for r in reports), format_reports(reports) + "\n" + alerts.summary()


async def run_forever(settings: Settings, clock: Clock | None = None) -> None:
    """The service loop until SIGTERM/SIGINT (or a state file it cannot use).

    On the signal polling stops at once and deliveries in flight get
    ``service.shutdown_timeout_s`` to finish (see :meth:`Watcher.run`); then the web endpoint
    and the notifiers are closed and the process exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    timeout = settings.service.shutdown_timeout_s
    with open_state(settings.state) as store:
        async with aiohttp.ClientSession() as session:
            watcher = Watcher(settings, store, session, clock)
            web_server = await start_web(settings, store, watcher)  # None with [web] enabled = false
            try:
                task = asyncio.create_task(watcher.run(stop, shutdown_timeout_s=timeout))
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                log.info("stopping: polling ends now; deliveries in flight get up to %.0f s", timeout)
                # Watcher.run bounds its own shutdown; this bound is for a bug in it.
                await asyncio.wait_for(task, timeout + 5.0)
                log.info("stopped")
            finally:
                if web_server is not None:
                    await web_server.aclose()
                await watcher.aclose()  # the notifiers are closed whichever way it ended
