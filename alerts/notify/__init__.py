"""Notifiers: one small class per channel type behind one interface (see base.py).

The package is where they are assembled: importing it imports each concrete notifier
module, which registers its class for its channel ``type``; :func:`build_notifier` picks
from that registry. ``base.py`` knows no concrete channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alerts.notify import email as _email  # noqa: F401 - registers "email"
from alerts.notify import slack as _slack  # noqa: F401 - registers "slack_webhook", "slack_bot"
from alerts.notify.base import (
    DeliveryError,
    Notification,
    Notifier,
    classify_http_status,
    notifier_factory,
)

if TYPE_CHECKING:
    import aiohttp

    from alerts.channels import ChannelSettings
    from alerts.render import Renderer

__all__ = ["DeliveryError", "Notification", "Notifier", "build_notifier", "classify_http_status"]


def build_notifier(
    name: str,
    settings: ChannelSettings,
    *,
    session: aiohttp.ClientSession | None = None,
    renderer: Renderer,
) -> Notifier:
    """The notifier for channel ``name`` configured by ``settings`` (chosen by its ``type``).

    HTTP notifiers use ``session`` when given (and leave it open) or create their own (and
    close it in ``aclose``).
    """
    try:
        factory = notifier_factory(settings.type)
    except KeyError:
        raise ValueError(f"channel {name!r}: unknown channel type {settings.type!r}") from None
    return factory(name, settings, session=session, renderer=renderer)
