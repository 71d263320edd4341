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
_MAX_BODY = 4000


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
    ``body`` keeps the start of that body (for callers that read Make's own fields).
    """

    def __init__(
        self,
        status: int | None,
        code: str | None,
        message: str,
        *,
        retryable: bool | None = None,
        path: str | None = None,
        body: str | None = None,
    ) -> None:
        self.body = body[:_MAX_BODY] if body is not None else None
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
                body=body,
            )
    if _HTML_RE.match(stripped):
        m = _CF_CODE_RE.search(stripped)
        text = _clip(_TAG_RE.sub(" ", stripped))
        msg = f"HTML error page (error code {m.group(1)})" if m else f"HTML error page: {text[:120]}"
        if status == 403 and m and m.group(1) == "1010":
            msg += ": blocked by Cloudflare, check the User-Agent"
        return MakeApiError(
            status, "HTML", msg, retryable=is_retryable(status), path=path, body=body
        )
    return MakeApiError(status, None, _clip(stripped) or f"HTTP {status}", path=path, body=body)


# --- write calls (make-api.md §8.1, §11.4) ---------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _plain(text: str) -> str:
    """Make's text made safe to show: no control characters, whitespace folded, clipped."""
    return _clip(_CONTROL_RE.sub(" ", text))


class MakeScopeError(MakeApiError):
    """Make refused a write with 401/403: the token lacks the scope the call needs.

    ``scope`` names it (``scenarios:write``, ``scenarios:run``, ``dlqs:write``). The message
    says which scope to add to the token, never the token itself. Not retryable.
    """

    def __init__(
        self, status: int, code: str | None, scope: str, *, path: str | None = None
    ) -> None:
        self.scope = scope
        why = "rejected the token or it lacks" if status == 401 else "says the token lacks"
        super().__init__(
            status,
            code,
            f"Make {why} the scope {scope}: create a token with {scope} to allow this action",
            retryable=False,
            path=path,
        )


class MakeActionRefused(MakeApiError):
    """Make answered a write with a 4xx other than 401/403/429: the action is not possible in
    the state things are in (422 ``IM325`` "Scenario is not activated", 422 "Execution is not
    replayable", 404 unknown scenario or execution, 400 ids not of the scenario...).

    ``reason`` is Make's own text (its ``detail``, else ``message``), stripped of control
    characters and clipped; ``code`` Make's code. Repeating the same call will not help.
    """

    def __init__(
        self, status: int, code: str | None, reason: str, *, path: str | None = None
    ) -> None:
        self.reason = reason
        super().__init__(status, code, f"Make refused the action: {reason}", retryable=False, path=path)


def make_reason(body: str) -> tuple[str | None, str]:
    """(code, text) of a Make error body: the ``detail`` (else ``message``) of a JSON error,
    else the body itself, made safe to show (:func:`_plain`)."""
    stripped = body.strip()
    data: Any = None
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, list):
            detail = "; ".join(str(d) for d in detail)
        text = detail or data.get("message") or ""
        code = data.get("code")
        return (str(code) if code else None), _plain(str(text))
    if _HTML_RE.match(stripped):
        return None, _plain(_TAG_RE.sub(" ", stripped))[:120]
    return None, _plain(stripped)
