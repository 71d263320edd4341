"""Where the bundled templates are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def templates_dir() -> Path:
    """The ``templates/`` shipped with makewatch.

    In a wheel it is installed as ``watcher/templates`` (pyproject's force-include); in a
    checkout or an editable install it is the repository's top-level ``templates/``.
    """
    for candidate in (_PKG / "templates", _PKG.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("makewatch's templates are missing from this installation")
