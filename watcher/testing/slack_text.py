"""Block Kit as a person reads it in Slack: plain text, for the demo and ``makewatch simulate``.

The Slack stand-in records the blocks makewatch sent; printing them as JSON tells a reader
nothing at a glance. :func:`blocks_text` renders them the way Slack lays them out, top to
bottom: a header line, section text and fields, context in small print, buttons as
``[Open in Make]``, a divider as a rule. Slack's mrkdwn is undone where it is markup
(``*bold*``, code spans and blocks, ``<url|label>`` links, ``&amp;``-style escapes) and kept
where it is text (underscores: alert kinds such as ``execution_error`` are not italics).

Only the block types makewatch's templates use, plus dividers and images, are understood;
any other block shows as ``[<type> block]`` so nothing silently disappears.
"""

from __future__ import annotations

import html
import re
from typing import Any

from watcher.testing.slack_standin import SlackMessage

__all__ = ["blocks_text", "message_text", "mrkdwn_text"]

_LINK = re.compile(r"<([^<>|]+)\|([^<>]+)>")
_BARE_LINK = re.compile(r"<((?:https?|mailto):[^<>|]+)>")
_SPECIAL = re.compile(r"<!(here|channel|everyone)(?:\|[^<>]*)?>")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")
_CODE_BLOCK = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
CODE_INDENT = "    "


def mrkdwn_text(text: str) -> str:
    """Slack mrkdwn as displayed text: links as ``label <url>``, code blocks indented."""

    def code_block(m: re.Match[str]) -> str:
        body = "\n".join(CODE_INDENT + line for line in m.group(1).splitlines())
        return f"\n{body}\n"

    out = _CODE_BLOCK.sub(code_block, text)
    out = _CODE_SPAN.sub(r"\1", out)
    out = _BARE_LINK.sub(r"\1", out)
    out = _LINK.sub(r"\2 <\1>", out)
    out = _SPECIAL.sub(r"@\1", out)
    out = _BOLD.sub(r"\1", out)
    out = _STRIKE.sub(r"\1", out)
    # Escapes last: an escaped "&lt;b&gt;" is text, never a link.
    out = html.unescape(out)
    return "\n".join(line.rstrip() for line in out.strip("\n").splitlines())


def _text_of(obj: Any) -> str:
    """A text object's display text (plain_text as is, mrkdwn undone)."""
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    return mrkdwn_text(text) if obj.get("type") == "mrkdwn" else text


def _elements(block: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in block.get("elements") or [] if isinstance(e, dict)]


def _block_lines(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        title = _text_of(block.get("text"))
        return [title, "═" * min(len(title), 72)]
    if kind == "section":
        lines = _text_of(block.get("text")).splitlines() if block.get("text") else []
        for field in block.get("fields") or []:
            lines.extend(_text_of(field).splitlines())
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("type") == "button":
            lines.append(f"[{_text_of(accessory.get('text'))}]")
        return lines
    if kind == "context":
        parts = []
        for element in _elements(block):
            if element.get("type") == "image":
                parts.append(f"[{element.get('alt_text', 'image')}]")
            else:
                parts.append(_text_of(element))
        return ["  ".join(p for p in parts if p)]
    if kind == "actions":
        labels = [f"[{_text_of(e.get('text'))}]" for e in _elements(block) if e.get("type") == "button"]
        return [" ".join(labels)] if labels else []
    if kind == "divider":
        return ["─" * 40]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    return [f"[{kind} block]"]


def blocks_text(blocks: list[dict[str, Any]], fallback: str = "") -> str:
    """The blocks as Slack shows them, one block after the other; ``fallback`` if none."""
    if not blocks:
        return mrkdwn_text(fallback)
    rendered = ["\n".join(_block_lines(b)) for b in blocks if isinstance(b, dict)]
    return "\n".join(r for r in rendered if r.strip())


def message_text(message: SlackMessage, *, indent: str = "  ") -> str:
    """One received message: where it went (channel, thread, edits), then its content."""
    where = f"reply in the thread of {message.thread_ts}" if message.thread_ts else f"message {message.ts}"
    if message.webhook is not None:
        where += f" via webhook /{message.webhook}"
    if message.edits:
        where += f", edited {len(message.edits)}×, as it reads now"
    body = blocks_text(message.blocks, message.text)
    return f"── {message.channel} · {where}\n" + "\n".join(indent + line if line else "" for line in body.splitlines())
