"""What every ``makewatch`` command shares: the ``--config`` option, loading the config
(exit 2 on an error) and reporting an unusable state file (exit 1). A module of its own so
that the command modules (watcher.cli, watcher.actions_cli) can share it without importing
each other: ``python -m watcher.cli`` runs watcher.cli as ``__main__``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

__all__ = ["CONFIG_OPTION", "load_config_or_exit", "state_file_guard", "state_guard"]

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    default="makewatch.toml",
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The configuration file.",
)


@contextmanager
def state_file_guard(db_path: Path) -> Iterator[None]:
    """Report an unusable state file (or one of a newer makewatch) in one line; exit 1.

    Read-only, corrupt, a directory, deleted while running: retrying cannot help, and a
    traceback would not tell the reader which file or what to do.
    """
    import sqlite3

    from watcher.store import StoreError, state_file_error

    try:
        yield
    except StoreError as exc:
        click.echo(f"makewatch: {exc}", err=True)
        sys.exit(1)
    except (sqlite3.Error, OSError) as exc:
        problem = state_file_error(db_path, exc)
        if problem is None:
            raise
        click.echo(f"makewatch: {problem}", err=True)
        sys.exit(1)


@contextmanager
def state_guard(state) -> Iterator[None]:  # noqa: ANN001 - watcher.config.StateSettings
    """:func:`state_file_guard` for whichever engine ``[state]`` names: a PostgreSQL server
    that cannot be reached or refuses makewatch is told in one line (host and database, never
    the password); exit 1."""
    if state.url is None:
        with state_file_guard(state.db_path):
            yield
        return
    from watcher.store import StoreError

    try:
        yield
    except StoreError as exc:
        click.echo(f"makewatch: {exc}", err=True)
        sys.exit(1)


def load_config_or_exit(path: Path):  # noqa: ANN201 - returns watcher.config.Settings
    """Load the config; on any error print it (naming file and key) and exit with code 2."""
    from watcher.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"makewatch: configuration error: {exc}", err=True)
        sys.exit(2)
