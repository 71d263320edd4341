"""Behind ``makewatch digest``: build, write or send one digest now."""

from __future__ import annotations

import aiohttp

from alerts.digest_send import DigestRun, digest_now
from alerts.service import Alerter
from watcher.config import Settings
from watcher.store import open_state


async def run_digest_command(
    settings: Settings,
    recipient: str,
    now: float,
    *,
    send: bool,
    record: bool,
) -> tuple[str, str, DigestRun | None]:
    """Returns the text (with its subject), the HTML part, and the send, if any."""
    with open_state(settings.state) as store:
        async with aiohttp.ClientSession() as session:
            alerter = Alerter(settings, store, session)
            try:
                (subject, text, html), run = await digest_now(
                    settings, store, alerter.notifiers, alerter.renderer, recipient, now, send=send, record=record
                )
            finally:
                await alerter.aclose()
    return f"Subject: {subject}\n\n{text}", html, run
