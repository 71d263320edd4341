"""Errors raised by the Make API client, and the one place that decides what is retryable."""

from __future__ import annotations

import json
import re
from typing import Any

# Statuses worth another attempt: rate limiting, server-side and gateway trouble. Make's Go
# SDK also retries 418 (seen from Make's edge under load). 400/401/403/404/406/409/413 are the
# caller's problem and never get better by asking again (make-api.md §7.2).
RETRYABLE_STATUSES = frozenset({408, 418, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524})

_MAX_MESSAGE = 300


def is_retryable(status: int | None, code: str | None = None) -> bool:
    """Whether a failed call may succeed if repeated (``status`` None = no HTTP answer)."""
    if status is None:
        return True  # timeout or connection error
    if code == "IM310":  # organization paused (operations exhausted): waiting will not help
        return False
    return status in RETRYABLE_STATUSES


class MakeApiError(Exception):
    """A call to Make failed.

    ``status`` is the HTTP status (None when no answer came: timeout, connection refused),
    ``code`` Make's error code (``SC403``, ``IM102``...) or one of ours (``TIMEOUT``,
    ``NETWORK``, ``MALFORMED``, ``HTML``), ``retryable`` whether repeating may help.
    The message never contains the token: it is built only from the response body.
    """

    def __init__(
        self,
        status: int | None,
        code: str | None,
        message: str,
        *,
        retryable: bool | None = None,
        path: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retryable = is_retryable(status, code) if retryable is None else retryable
        self.path = path
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f" on {self.path}" if self.path else ""
        status = self.status if self.status is not None else "no response"
        code = f" {self.code}" if self.code else ""
        return f"Make API {status}{code}{where}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"MakeApiError(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, retryable={self.retryable!r})"
        )

    @property
    def is_auth_error(self) -> bool:
        """401/403: the token is rejected or lacks a scope (a config problem, not an outage)."""
        return self.status in (401, 403) and self.code != "HTML"


_HTML_RE = re.compile(r"^\s*<(!doctype|html|head|body)", re.IGNORECASE)
_CF_CODE_RE = re.compile(r"error code:?\s*(\d{3,4})", re.IGNORECASE)
_TAG_RE = re.compile(r"<[^>]+>")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def error_from_response(status: int, body: str, path: str | None = None) -> MakeApiError:
    """Build a :class:`MakeApiError` from whatever Make sent back.

    Make answers errors as JSON ``{detail, message, code, suberrors}`` (``detail`` may be a
    list), but 429s have been seen as plain text and Cloudflare answers with HTML pages
    ("error code: 1010" for a blocked User-Agent), so all three are handled.
    """
    stripped = body.strip()
    if stripped.startswith("{"):
        try:
            data: Any = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, dict):
            detail = data.get("detail")
            if isinstance(detail, list):
                detail = "; ".join(str(d) for d in detail)
            title = data.get("message")
            parts = [str(p) for p in (title, detail) if p]
            subs = data.get("suberrors")
            if isinstance(subs, list):
                parts += [str(s.get("message")) for s in subs if isinstance(s, dict) and s.get("message")]
            code = data.get("code")
            return MakeApiError(
                status,
                str(code) if code else None,
                _clip(": ".join(parts) or f"HTTP {status}"),
                path=path,
            )
    if _HTML_RE.match(stripped):
        m = _CF_CODE_RE.search(stripped)
        text = _clip(_TAG_RE.sub(" ", stripped))
        msg = f"HTML error page (error code {m.group(1)})" if m else f"HTML error page: {text[:120]}"
        if status == 403 and m and m.group(1) == "1010":
            msg += ": blocked by Cloudflare, check the User-Agent"
        return MakeApiError(status, "HTML", msg, retryable=is_retryable(status), path=path)
    return MakeApiError(status, None, _clip(stripped) or f"HTTP {status}", path=path)
