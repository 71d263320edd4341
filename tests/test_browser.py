"""Every e-mail the service sends, looked at in a real (headless) Chromium.

Each alert kind in each phase, and the digest of a seeded store, is rendered to a file and
loaded at a phone's width (390 px, emulated: headless Chromium opens no window under 500 px)
and a desktop mail pane's (800 px). Screenshots land in build/screenshots/ for a reviewer.
"digest-silent" is a digest whose silent-failures section holds every kind (overdue, idle,
a scenario's and an organization's volume), each with its 14-day sparkline.

Without Chromium (a laptop) the module skips, saying why; with ``CI`` set it fails instead,
so CI cannot go green without having looked.

Checks today's templates fail are marked ``xfail(strict=True)`` per case: they turn into
failures the day a template is fixed, and the mark is then removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_digest_content import END, START, Events, digest_of, org_row, scenario, seed

from alerts.policy import ALERT_KINDS
from alerts.render import Renderer, sample_notification
from watcher.browser import Browser, unavailable_reason
from watcher.cli import main
from watcher.store import Store, insert_events

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "build" / "screenshots"
WIDTHS = (390, 800)
EVIL = "<script>alert(1)</script>"
BOLD = "<b>x</b>"

KINDS = ALERT_KINDS
# "summary" has one phase of its own (sample_notification forces it).
ALERT_CASES = [f"{kind}-{phase}" for kind in KINDS for phase in ("firing", "repeat", "resolved")]
ALERT_CASES.append("summary")
CASES = [*ALERT_CASES, "digest", "digest-silent"]

# Fields of a payload that come from users (scenario, organization, hook names) or from a
# vendor's error text; each gets markup that must come out as text.
NAME_FIELDS = ("scenario_name", "organization", "hook_name")
MESSAGE_FIELDS = ("error_message", "reason", "error")

# Known failures of today's templates: (check, case, width) -> reason. None left; a case
# goes here (strict: it fails again once fixed) only with the issue that will fix it.
XFAILS: dict[tuple[str, str, int], str] = {}


def skip_or_fail() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the browser checks cannot run: {reason}", pytrace=False)
    pytest.skip(f"browser checks skipped: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    skip_or_fail()
    with Browser() as b:
        yield b


def _inject(payload: dict[str, Any]) -> None:
    for key in NAME_FIELDS:
        if key in payload:
            payload[key] = f"{payload[key]} {EVIL}"
    for key in MESSAGE_FIELDS:
        if key in payload:
            payload[key] = f"{payload[key]} {BOLD}"


def alert_html(case: str, renderer: Renderer) -> str:
    kind, _, phase = case.partition("-")
    n = sample_notification(kind, "email", phase=phase or "firing")
    _inject(n.alert["payload"])  # the samples are the same dict
    for held in n.alert.get("held_back", []):
        held["scenario"] = f"{held['scenario']} {EVIL}"
    return renderer.render_email(n)[2]


def digest_html(tmp: Path, renderer: Renderer) -> str:
    store = Store.open(tmp / "digest.db")
    try:
        store.write_sync(seed)  # scenario 102 is already named <script>alert(1)</script>

        def mark(db: Any) -> None:
            db.execute("UPDATE organizations SET name = ? WHERE id = 2", [f"Globex {BOLD}"])
            # Actions of the period, one by a person with a long unbroken name: it must wrap.
            db["actions"].insert_all([
                {"created_at": START + 3600, "actor": f"@ana {EVIL}", "action": "start", "org_id": 1,
                 "scenario_id": 103, "status": "done", "message": "scenario 103 is now active",
                 "confirm_note": "confirmed: it ran without error at 09:15 UTC"},
                {"created_at": START + 7200, "actor": "@" + "x" * 80, "action": "start", "org_id": 1,
                 "scenario_id": 103, "status": "not_allowed", "message": "not allowed"},
            ])

        store.write_sync(mark)
        return renderer.render_digest(digest_of(store))[2]
    finally:
        store.close()


# A long name with no space to break at: it must wrap, not widen the page.
LONG_NAME = "Nightly export of every HubSpot contact to the warehouse_eu_west_1_contacts_full_refresh"
DAY_S = 86400


def seed_silent(db: Any) -> None:
    """One organization with an overdue run (still open), an idle webhook (over in the
    period), a scenario's 90 % drop and the organization's, each scenario with 14 days of
    operations; payload keys as watcher.poller writes them."""
    ui = "https://eu1.make.com"
    usage = {"operations_used": 5000, "operations_limit": 100000, "used_pct": 5.0, "daily_rate": 900.0, "updated_at": END - 600}
    days = [f"2026-10-{d:02d}" for d in range(11, 25)]  # the 14 days up to Sat 24 Oct, judged
    usage["days"] = [{"date": d, "operations": 900 if d != "2026-10-24" else 95, "centicredits": 0} for d in days]
    db["organizations"].insert(org_row(1, f"Acme {BOLD}", ui, usage))

    def ops(low_last: bool, level: int) -> str:
        return json.dumps({"ops": {d: (level // 10 if low_last and d == days[-1] else level + 7 * (i % 3)) for i, d in enumerate(days)}})

    db["scenarios"].insert_all(
        [
            scenario(301, 1, f"Invoice sync {EVIL}", volume_json=ops(False, 480)),
            scenario(302, 1, "Typeform leads", volume_json=ops(False, 200)),
            scenario(303, 1, LONG_NAME, volume_json=ops(True, 480)),
        ]
    )
    e = Events()
    overdue = {"scheduling_type": "indefinitely", "interval_s": 900, "late_s": 4200, "allowance_s": 1350, "is_waiting": True, "standing": False}
    e.add("scenario_overdue", 1, 301, START + 3600, organization="Acme", scenario_name=f"Invoice sync {EVIL}", due_at=START - 600, **overdue)
    idle = {"silent_s": 6300, "expected_runs": 12.4, "basis": "learnt", "expect_every_s": None, "business_hours": None, "hook_id": 5}
    e.add("scenario_idle", 1, 302, START + 7200, organization="Acme", scenario_name="Typeform leads", last_run_at=START + 900, **idle)
    e.add("scenario_idle", 1, 302, START + 9000, organization="Acme", scenario_name="Typeform leads", recovered=True, resolution="ran", resolved_at=START + 9000)
    day_ops = [[d, 480] for d in days[:-1]] + [[days[-1], 48]]
    drop = {"day": days[-1], "direction": "drop", "operations": 48, "median": 480, "mad": 7, "baseline": [480, 487, 494, 480], "ratio": 0.1, "days": day_ops}
    e.add("volume_anomaly", 1, 303, END - 3600, organization="Acme", scenario_name=LONG_NAME, scope="scenario", **drop)
    org_drop = drop | {"operations": 95, "median": 900, "baseline": [900, 900, 900], "ratio": 0.106}
    e.add("volume_anomaly", 1, None, END - 1800, organization="Acme", scope="organization", usage_url=f"{ui}/organization/1/dashboard", **org_drop)
    insert_events(db, e.rows)
    db["cycles"].insert_all([{"org_id": 1, "started_at": START + h * 3600, "requests": 4, "budget_per_minute": 30, "ok": 1} for h in range(25)])


def silent_digest_html(tmp: Path, renderer: Renderer) -> str:
    with Store.open(tmp / "digest-silent.db") as store:
        store.write_sync(seed_silent)
        digest = digest_of(store)
    (org,) = digest.organizations
    assert [f.kind for f in org.silent] == ["scenario_overdue", "volume_anomaly", "volume_anomaly", "scenario_idle"]
    assert all(len(f.bars) == 14 for f in org.silent)
    return renderer.render_digest(digest)[2]


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pages")
    renderer = Renderer()
    out: dict[str, Path] = {}
    for case in CASES:
        if case == "digest":
            source = digest_html(tmp, renderer)
        elif case == "digest-silent":
            source = silent_digest_html(tmp, renderer)
        else:
            source = alert_html(case, renderer)
        out[case] = tmp / f"{case}.html"
        out[case].write_text(source, encoding="utf-8")
    return out


MEASURE = """
const title = document.title.trim();
let summary = document.querySelector('[data-summary], h1, h2');
if (!summary && title) {
  summary = [...document.body.querySelectorAll('*')].find(
    el => el.children.length === 0 && el.textContent.trim() === title) || null;
}
const rect = summary ? summary.getBoundingClientRect() : null;
return {
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  innerHeight: window.innerHeight,
  hrefs: [...document.querySelectorAll('a')].map(a => a.getAttribute('href')),
  elements: {
    script: document.querySelectorAll('script').length,
    b: document.querySelectorAll('b').length,
  },
  text: document.body.innerText,
  summary: summary ? {text: summary.textContent.trim(), top: rect.top, bottom: rect.bottom} : null,
};
"""

_measured: dict[tuple[str, int], dict[str, Any]] = {}


@pytest.fixture(scope="module")
def measure(browser: Browser, pages: dict[str, Path]) -> Any:
    """Loads a case once per width, screenshots it, and returns what the page measured."""

    def get(case: str, width: int) -> dict[str, Any]:
        if (case, width) not in _measured:
            browser.load(pages[case], width)
            _measured[(case, width)] = browser.js(MEASURE)
            browser.screenshot(SCREENSHOTS / f"{case}-{width}.png")
        return _measured[(case, width)]

    return get


def cases(check: str) -> list[Any]:
    params = []
    for case in CASES:
        for width in WIDTHS:
            reason = XFAILS.get((check, case, width))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(case, width, marks=marks, id=f"{case}-{width}"))
    return params


@pytest.mark.parametrize(("case", "width"), cases("fits"))
def test_it_fits_the_screen_width_without_scrolling_sideways(measure: Any, case: str, width: int) -> None:
    m = measure(case, width)
    assert m["innerWidth"] == width, f"laid out {m['innerWidth']} px wide on a {width} px screen"
    assert m["scrollWidth"] <= m["innerWidth"], f"{m['scrollWidth']} px of content in {width} px"


@pytest.mark.parametrize(("case", "width"), cases("links"))
def test_every_link_goes_to_an_https_url(measure: Any, case: str, width: int) -> None:
    hrefs = measure(case, width)["hrefs"]
    assert [h for h in hrefs if not (h or "").startswith("https://")] == []


def test_the_pages_have_links_to_check(measure: Any) -> None:
    """The link check above is not vacuous: these cases do carry links."""
    for case in ("execution_error-firing", "incomplete_executions-firing", "digest"):
        assert measure(case, 800)["hrefs"], case


@pytest.mark.parametrize(("case", "width"), cases("escaped"))
def test_user_text_is_shown_as_text_and_creates_no_element(measure: Any, case: str, width: int) -> None:
    m = measure(case, width)
    assert m["elements"] == {"script": 0, "b": 0}
    markers = [marker for marker in (EVIL, BOLD) if marker in m["text"]]
    assert markers, "neither marker shows: the injected user text is not on the page"


@pytest.mark.parametrize(("case", "width"), cases("fold"))
def test_the_summary_is_above_the_fold(measure: Any, case: str, width: int) -> None:
    m = measure(case, width)
    assert m["summary"], "no heading ([data-summary], h1, h2, or the title's text) on the page"
    assert 0 <= m["summary"]["top"] and m["summary"]["bottom"] < m["innerHeight"], m["summary"]


@pytest.mark.parametrize("width", WIDTHS)
def test_the_digest_lists_the_actions_taken_as_text(measure: Any, width: int) -> None:
    text = measure("digest", width)["text"]
    assert "Actions taken" in text
    assert f"@ana {EVIL} reactivated Invoice export: done; confirmed: it ran without error" in text
    assert "@" + "x" * 80 + " reactivated Invoice export: not allowed" in text


def test_every_screenshot_was_written(measure: Any) -> None:
    for case in CASES:
        for width in WIDTHS:
            measure(case, width)
            png = SCREENSHOTS / f"{case}-{width}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


# --- the digest's silent-failures section -----------------------------------------------

SILENT = """
const section = document.querySelector('[data-section="silent"]');
const box = el => { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, width: r.width, height: r.height}; };
const sparklines = [...section.querySelectorAll('[data-sparkline]')].map(t => ({
  box: box(t),
  bars: [...t.querySelectorAll('div')].map(d => {
    const cs = getComputedStyle(d);
    return {...box(d), background: cs.backgroundColor, visibility: cs.visibility, opacity: cs.opacity};
  }),
}));
const background = el => {
  for (; el; el = el.parentElement) {
    const bg = getComputedStyle(el).backgroundColor;
    if (bg && bg !== 'rgba(0, 0, 0, 0)' && bg !== 'transparent') return bg;
  }
  return 'rgb(255, 255, 255)';
};
const texts = [];
const walker = document.createTreeWalker(section, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  if (!node.textContent.trim()) continue;
  const el = node.parentElement, cs = getComputedStyle(el);
  const range = document.createRange();
  range.selectNodeContents(node);
  const rects = [...range.getClientRects()].map(r => ({left: r.left, right: r.right, height: r.height}));
  texts.push({text: node.textContent.trim().slice(0, 60), fontSize: parseFloat(cs.fontSize), color: cs.color,
              background: background(el), visibility: cs.visibility, rects});
}
return {innerWidth: window.innerWidth, section: box(section), sparklines, texts,
        items: [...section.querySelectorAll(':scope > tbody > tr, :scope > tr')].map(tr => tr.innerText)};
"""


def _luminance(css: str) -> float:
    r, g, b = (int(x) / 255 for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two computed ``rgb(...)`` colours."""
    a, b = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


@pytest.fixture(scope="module")
def silent_section(browser: Browser, pages: dict[str, Path]) -> Any:
    measured: dict[int, dict[str, Any]] = {}

    def get(width: int) -> dict[str, Any]:
        if width not in measured:
            browser.load(pages["digest-silent"], width)
            measured[width] = browser.js(SILENT)
        return measured[width]

    return get


@pytest.mark.parametrize("width", WIDTHS)
def test_the_silent_sections_sparklines_show_14_bars_side_by_side_within_the_screen(silent_section: Any, width: int) -> None:
    m = silent_section(width)
    assert len(m["sparklines"]) == 4  # one per item
    assert m["section"]["right"] <= width
    for spark in m["sparklines"]:
        bars = spark["bars"]
        assert len(bars) == 14
        assert all(b["width"] > 0 and b["height"] > 0 for b in bars), bars
        assert all(b["visibility"] == "visible" and b["opacity"] == "1" for b in bars)
        assert all(b["background"] not in ("rgba(0, 0, 0, 0)", "transparent") for b in bars)
        assert [b["left"] for b in bars] == sorted({b["left"] for b in bars}), "bars wrapped or overlap"
        assert spark["box"]["right"] <= width and bars[-1]["right"] <= width
        assert max(b["height"] for b in bars) == 24  # the busiest day fills the chart


def test_a_drop_shows_as_a_short_last_bar(silent_section: Any) -> None:
    """The bars say what the figures say: the dropped day is a tenth of the others."""
    m = silent_section(390)
    (at,) = [i for i, text in enumerate(m["items"]) if "warehouse_eu_west_1" in text]
    drop = m["sparklines"][at]["bars"]  # 480 a day, then 48
    assert drop[-1]["height"] == 2 and min(b["height"] for b in drop[:-1]) >= 23


@pytest.mark.parametrize("width", WIDTHS)
def test_the_silent_sections_text_is_legible(silent_section: Any, width: int) -> None:
    m = silent_section(width)
    assert len(m["items"]) == 4 and "Invoice sync" in m["items"][0] and "Typeform leads" in m["items"][3]
    assert m["texts"], "no text in the silent section"
    for t in m["texts"]:
        assert t["fontSize"] >= 11, t
        assert t["visibility"] == "visible", t
        assert contrast(t["color"], t["background"]) >= 4.5, t
        for r in t["rects"]:
            assert 0 <= r["left"] and r["right"] <= width + 0.5, f"text outside the screen: {t}"


# --- makewatch render --html / --png ------------------------------------------------------


def test_render_writes_the_html_and_a_png_of_it(browser: Browser, tmp_path: Path) -> None:
    html, png = tmp_path / "out.html", tmp_path / "out.png"
    result = CliRunner().invoke(
        main,
        ["render", "--kind", "execution_error", "--channel", "email", "--phase", "repeat",
         "--html", str(html), "--png", str(png), "--width", "600"],
    )
    assert result.exit_code == 0, result.output
    assert "Repeat" in html.read_text(encoding="utf-8") or "repeat" in html.read_text(encoding="utf-8")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 600  # the IHDR width


def test_render_shows_the_times_in_the_zone_asked_for() -> None:
    result = CliRunner().invoke(
        main, ["render", "--kind", "execution_error", "--channel", "email", "--timezone", "Asia/Tokyo"]
    )
    assert result.exit_code == 0, result.output
    assert "since 22:13 JST" in result.output and "Times in Asia/Tokyo" in result.output
    bad = CliRunner().invoke(main, ["render", "--kind", "quota", "--channel", "email", "--timezone", "Mars/Base"])
    assert bad.exit_code == 2 and "unknown time zone" in bad.output


def test_digest_png_is_a_screenshot_of_the_digest(browser: Browser, tmp_path: Path) -> None:
    """`makewatch digest --png`: a user changing the digest template sees the result."""
    cfg = tmp_path / "makewatch.toml"
    cfg.write_text(
        f"""[[organizations]]
name = "Acme"
base_url = "https://eu1.make.com/api/v2"
organization_id = 1
token_env = "MAKE_TOKEN_ACME"

[state]
db_path = "{tmp_path / "s.db"}"

[channels.mail]
type = "email"
smtp_host = "127.0.0.1"
security = "none"
from_addr = "makewatch@agency.example"
to = ["ops@agency.example"]

[[digests]]
recipients = ["lead@agency.example"]
at = "08:00"
timezone = "Europe/Paris"
""",
        encoding="utf-8",
    )
    png = tmp_path / "digest.png"
    result = CliRunner().invoke(
        main,
        ["digest", "--config", str(cfg), "--recipient", "lead@agency.example", "--png", str(png), "--width", "390"],
        env={"MAKE_TOKEN_ACME": "t"},
    )
    assert result.exit_code == 0, result.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == 390
    assert "Daily digest" not in result.stdout  # the text part is not printed unless asked


def test_render_png_is_refused_for_slack(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["render", "--kind", "quota", "--channel", "slack", "--png", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 2
    assert "--png" in result.output and not (tmp_path / "x.png").exists()


def test_render_png_without_selenium_says_what_to_install(tmp_path: Path) -> None:
    # A child interpreter where selenium cannot be imported (None in sys.modules blocks it).
    code = (
        "import sys; sys.modules['selenium'] = None\n"
        "from watcher.cli import main\n"
        f"main(['render', '--kind', 'quota', '--channel', 'email', '--png', {str(tmp_path / 'x.png')!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "makewatch[browser]" in proc.stderr
    assert not (tmp_path / "x.png").exists()
