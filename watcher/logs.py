"""Logging for ``makewatch run``: text for a person or JSON lines for a log pipeline, with
every configured secret redacted whatever the format.

A JSON line is one object: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and,
when the call site knows them, ``org``, ``scenario``, ``kind`` (an event or alert kind),
``events`` (new events by kind), ``channel``; ``exc`` holds a traceback. Call sites pass
them as ``extra={"org": ..., ...}``; the text format shows the message only.

Redaction is a last line of defence (nothing logs a secret on purpose): every API token,
Slack token or webhook URL, SMTP password and web access token of the configuration is
replaced by ``***`` in the formatted line, traceback included.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import BaseModel

from watcher.settings_base import Secret

__all__ = ["CONTEXT_FIELDS", "ContextLog", "JsonFormatter", "configure", "secrets_of"]

#: The record attributes a JSON line carries when a call site set them (``extra=``).
CONTEXT_FIELDS = ("org", "scenario", "kind", "events", "channel")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def secrets_of(settings: Any) -> list[str]:
    """Every secret value in a settings tree (public fields and resolved private ones)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Secret):
            if value.reveal():
                found.append(value.reveal())
        elif isinstance(value, BaseModel):
            for item in value.__dict__.values():
                walk(item)
            for item in (value.__pydantic_private__ or {}).values():
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    # The longest first: a secret that contains another is replaced whole.
    return sorted(set(found), key=len, reverse=True)


class ContextLog(logging.LoggerAdapter):
    """A logger whose records carry fixed context (``org=...``) merged with a call's own
    ``extra`` (the standard adapter would drop the call's)."""

    def __init__(self, logger: logging.Logger, **context: Any) -> None:
        super().__init__(logger, context)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class _Redacting(logging.Formatter):
    def __init__(self, secrets: Iterable[str], fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(_Redacting):
    """One JSON object a line (see the module docstring)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(secrets)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != {}:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.redact(self.formatException(record.exc_info))
        return self.redact(json.dumps(out, ensure_ascii=False, default=str))


def configure(level: str | int, fmt: str = "text", secrets: Iterable[str] = (), stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as ``fmt`` ("text" or "json"), redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else _Redacting(secrets, TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
