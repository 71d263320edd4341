"""Issue 13.4: the text part, the HTML part, the Slack message and the demo's printout state the
same figures.

A *figure* is a number as a reader sees it: a count (``4``, ``8,600``), a percentage, a
time (``13:13``), a day of the month. Links and ids (long hex strings) are not figures.
Every figure of the Slack message must be in the e-mail (the e-mail may say more: its footer
has the run's operations and duration), and the e-mail's text and HTML parts must state the
same figures, for every kind in every phase and for what the demo really sent.
"""

from __future__ import annotations

import email
import email.policy
import html as html_lib
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from alerts.render import KIND_TITLES, Renderer, sample_notification
from watcher.demo import run_demo
from watcher.testing.slack_text import blocks_text

_URL = re.compile(r"https?://\S+")
_HEX_ID = re.compile(r"\b[0-9a-f]{8,}\b")
_FIGURE = re.compile(r"\d[\d,]*(?:\.\d+)?(?::\d\d)?")


def figures(text: str) -> set[str]:
    text = _HEX_ID.sub(" ", _URL.sub(" ", html_lib.unescape(text)))
    return set(_FIGURE.findall(text))


class _Text(HTMLParser):
    """The text a browser shows (no <title>, no attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("title", "style", "head"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("title", "style", "head"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(parser.parts)


def slack_figures(message: dict[str, Any]) -> set[str]:
    """What a person reads in Slack (the blocks; the fallback text is the notification)."""
    return figures(blocks_text(message["blocks"]))


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


CASES = [(k, p) for k in KIND_TITLES if k != "summary" for p in ("firing", "repeat", "resolved")] + [
    ("summary", "summary")
]


@pytest.mark.parametrize(("kind", "phase"), CASES)
@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_slack_text_and_html_state_the_same_figures(renderer: Renderer, kind: str, phase: str, tz: str) -> None:
    n = sample_notification(kind, "email", phase=phase)
    slack = renderer.render_slack(n, tz=tz)
    _, text, html = renderer.render_email(n, tz)

    in_text, in_html = figures(text), figures(html_text(html))
    assert in_text == in_html, f"text only: {in_text - in_html}; HTML only: {in_html - in_text}"
    assert slack_figures(slack) <= in_text, f"in Slack, not in the e-mail: {slack_figures(slack) - in_text}"
    assert len(in_text) >= 2  # not vacuous: every notice has at least a time and a count


def test_the_figures_check_sees_a_difference() -> None:
    """The comparison above is not blind: a changed count or time is a different figure."""
    assert figures("failed 4 times since 13:13 UTC") != figures("failed 5 times since 13:13 UTC")
    assert figures("since 13:13 UTC") != figures("since 13:14 UTC")
    assert figures("8,600 / 10,000 (86%) https://x.example/812/a4c5d0e1b2f34c56") == {"8,600", "10,000", "86"}


async def test_the_demos_slack_messages_and_e_mails_agree(tmp_path: Path) -> None:
    """What the demo really delivered: each alert went to Slack and by e-mail; both state the
    same figures, and the digest's text and HTML parts do too."""
    report = await run_demo(seed=1, minutes=30, out_dir=tmp_path)
    printed = report.split("as a person reads them:")[1].split("The local mail sink received")[0]
    messages = [m for m in printed.split("  ── ")[1:] if "reply in the thread" not in m.splitlines()[0]]
    # Each printed message: a line saying where it is (channel, ts), then what Slack shows.
    headers = {m.splitlines()[1].strip(): "\n".join(m.splitlines()[1:]) for m in messages}
    emls = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(emls) >= 5
    matched = 0
    for path in emls:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert figures(text) == figures(html_text(html)), path.name
        first = text.splitlines()[0]  # "🔴 ERROR: <headline>"
        emoji, headline = first.split(" ", 1)[0], first.split(": ", 1)[1]
        slack = headers.get(f"{emoji} {headline}") or headers.get(f"{emoji} Still happening: {headline}")
        if slack is None:
            continue  # its Slack message was edited since (it reads as resolved now)
        matched += 1
        assert figures(slack) <= figures(text), f"{path.name}: Slack says {figures(slack) - figures(text)} more"
    assert matched >= len(emls) - 2, (matched, len(emls))  # most alerts are compared, not skipped
    digest_text = (tmp_path / "digest.txt").read_text(encoding="utf-8").split("\n", 2)[2]
    assert figures(digest_text) <= figures(html_text((tmp_path / "digest.html").read_text(encoding="utf-8")))
