"""The house rules of ../shared/STYLE.md that a change could quietly break, checked on the
source: data flows one way, and the notifier base knows no concrete channel."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports_of(relative: str) -> set[str]:
    """Every module a file imports (at any depth: also inside functions)."""
    tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        # The engine decides; it reads no store, sends nothing, calls no API.
        ("alerts/engine.py", ("watcher.store", "alerts.notify", "watcher.make", "aiohttp", "sqlite_utils")),
        # The notifier interface knows no concrete channel: the package assembles them.
        ("alerts/notify/base.py", ("alerts.notify.email", "alerts.notify.slack", "slack_sdk", "aiosmtplib")),
        # The simulator imports nothing of the worker it stands in front of.
        ("watcher/simulator/app.py", ("watcher.poller", "watcher.store", "watcher.make", "alerts")),
        ("watcher/simulator/world.py", ("watcher.poller", "watcher.store", "watcher.make", "alerts")),
    ],
)
def test_a_module_does_not_import_what_is_downstream_of_it(module: str, forbidden: tuple[str, ...]) -> None:
    bad = sorted(i for i in imports_of(module) if any(i == f or i.startswith(f + ".") for f in forbidden))
    assert bad == [], f"{module} imports {bad}"


def test_the_check_sees_imports_inside_functions() -> None:
    # watcher/check.py imports alerts.notify inside a function: it must be found.
    assert "alerts.notify" in imports_of("watcher/check.py")
