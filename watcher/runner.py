"""Entry points behind ``makewatch once`` and ``makewatch run``."""

from __future__ import annotations

import asyncio
import logging
import signal

import aiohttp

from watcher.clock import Clock
from watcher.config import Settings
from watcher.service import Watcher, format_reports
from watcher.store import Store
from watcher.web.app import start_web

log = logging.getLogger(__name__)


async def run_once(settings: Settings, clock: Clock | None = None) -> tuple[bool, str]:
    with Store.open(settings.state.db_path) as store:
        async with aiohttp.ClientSession() as session:
            watcher = Watcher(settings, store, session, clock)
            try:
                reports, alerts = await watcher.cycle()
            finally:
                await watcher.aclose()
    return all(r.ok for r in reports), format_reports(reports) + "\n" + alerts.summary()


async def run_forever(settings: Settings, clock: Clock | None = None) -> None:
    """The service loop; SIGTERM/SIGINT stop it between cycles (a cycle in flight is cancelled
    at once: every write it made is a whole transaction, so nothing is half done)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    with Store.open(settings.state.db_path) as store:
        async with aiohttp.ClientSession() as session:
            watcher = Watcher(settings, store, session, clock)
            web_server = await start_web(settings, store, watcher)  # None with [web] enabled = false
            task = asyncio.create_task(watcher.run(stop))
            stopper = asyncio.create_task(stop.wait())
            try:
                # The service ends on a signal, or by itself (a state file it cannot use).
                await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
                log.info("stopping")
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            finally:
                stopper.cancel()
                if web_server is not None:
                    await web_server.aclose()
                await watcher.aclose()  # the notifiers are closed whichever way it ended
