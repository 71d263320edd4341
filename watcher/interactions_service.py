"""The service side of Slack buttons: receivers, the click handler, and the poll's verdicts.

Built by :class:`watcher.service.Watcher` only when ``[actions] enabled``:

* one Socket Mode receiver per distinct ``app_token`` of the ``slack_bot`` channels (when
  ``actions.socket_mode``), started with the service and stopped with it; a refused app token
  is logged once and that receiver stays off (the alerts still go out);
* the HTTP route for channels with a ``signing_secret`` (served by the web endpoint at
  ``actions.http_path``, outside its login: Slack's signature is the credential);
* after each alert tick, :func:`watcher.action_confirm.confirm_reactivations`, each verdict
  told in the thread of the message whose button started it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from watcher.action_confirm import confirm_reactivations
from watcher.slack_actions import SlackActions

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

    from watcher.clock import Clock
    from watcher.config import Settings
    from watcher.slack_interactions import Interaction, SocketModeReceiver
    from watcher.store import Store
    from watcher.web.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["Interactions"]


class Interactions:
    """Receivers + handler + verdicts for one service instance."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        session: aiohttp.ClientSession,
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        from watcher.slack_interactions import SocketModeReceiver

        self.settings = settings
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.handler = SlackActions(settings, store, session, clock, on_outcome=self._count)
        self.receivers: list[tuple[str, SocketModeReceiver]] = []
        self.signing_secret: str | None = None
        seen: set[str] = set()
        for name, channel in settings.channels.items():
            if getattr(channel, "type", "") != "slack_bot":
                continue
            app = channel.app_token  # type: ignore[union-attr]
            if settings.actions.socket_mode and app is not None and app.reveal() not in seen:
                seen.add(app.reveal())
                self.receivers.append((name, SocketModeReceiver(
                    app_token=app.reveal(), handler=self._on_click, base_url=channel.base_url,  # type: ignore[union-attr]
                    clock=clock.time, stale_after_s=settings.actions.stale_after_s,
                )))
            secret = channel.signing_secret  # type: ignore[union-attr]
            if secret is not None and self.signing_secret is None:
                self.signing_secret = secret.reveal()
        self._reconnects_told = 0
        self._started: list[SocketModeReceiver] = []
        if self.signing_secret is not None and not settings.web.enabled:
            log.warning(
                "a slack_bot channel has a signing_secret but web.enabled is false: "
                "Slack's interaction requests to %s cannot be received", settings.actions.http_path,
            )
        if not self.receivers and self.signing_secret is None:
            log.info("actions: no slack_bot channel has an app_token or a signing_secret; "
                     "alerts carry no buttons (the CLI actions work)")

    def _count(self, outcome: Any) -> None:
        if self.metrics is not None:
            self.metrics.action_done(outcome.action, outcome.status)

    async def _on_click(self, it: Interaction) -> None:
        await self.handler.handle(it)

    def http_route(self) -> web.RouteDef | None:
        """The interactions route for the web endpoint, when a channel has a signing secret."""
        if self.signing_secret is None:
            return None
        from watcher.slack_interactions import http_interactions_route

        return http_interactions_route(
            path=self.settings.actions.http_path, signing_secret=self.signing_secret,
            handler=self._on_click, clock=self.clock.time,
        )

    async def start(self) -> None:
        from watcher.slack_interactions import SlackInteractionsError

        for name, receiver in self.receivers:
            try:
                await receiver.start()
            except SlackInteractionsError as exc:
                log.error("channel %s: Socket Mode is off: %s", name, exc)
                continue
            self._started.append(receiver)
            log.info("channel %s: receiving button clicks over Socket Mode", name)

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self._started), return_exceptions=True)
        self._started.clear()

    def health(self) -> list[dict[str, Any]]:
        """Per receiver: channel, connected, seconds since anything came, reconnects."""
        return [{"channel": name, **receiver.health()} for name, receiver in self.receivers]

    async def tick(self, now: float) -> int:
        """Tell the poll's verdicts on reactivations; count watchdog reconnects. Returns how
        many verdicts were told."""
        reconnects = sum(r.reconnects for _, r in self.receivers)
        if self.metrics is not None and reconnects > self._reconnects_told:
            self.metrics.socket_reconnected(reconnects - self._reconnects_told)
        self._reconnects_told = reconnects
        verdicts = await self.store.write(lambda db: confirm_reactivations(db, now))
        for v in verdicts:
            slack = v.slack or {}
            channel, channel_id, ts = slack.get("name"), slack.get("channel_id"), slack.get("ts")
            if not (channel in self.settings.channels and channel_id and ts):
                continue
            emoji = {"active": "🔄", "ran_ok": "✅", "failed_again": "🔴", "inactive_again": "⚠️"}.get(v.state, "ℹ️")
            try:
                await self.handler._bot(channel).chat_postMessage(  # noqa: SLF001 - same package
                    channel=channel_id, thread_ts=ts, text=f"{emoji} Scenario {v.scenario_id}: {v.note}"
                )
            except Exception as exc:  # noqa: BLE001 - a verdict is a courtesy; the alert says the rest
                log.warning("channel %s: could not tell the reactivation verdict (%s)", channel, type(exc).__name__)
        return len(verdicts)
