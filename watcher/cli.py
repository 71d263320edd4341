"""The ``makewatch`` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from watcher import __version__


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
@click.version_option(__version__, prog_name="makewatch")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
def main(verbose: bool) -> None:
    """makewatch: watch Make.com organizations and alert people when scenarios break."""
    _setup_logging(verbose)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port to listen on.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the generated world.")
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=float,
    help="How many simulated seconds pass per real second.",
)
def simulate(host: str, port: int, seed: int, speed: float) -> None:
    """Serve the bundled Make API v2 simulator (base URL http://HOST:PORT/api/v2)."""
    from watcher.simulator import serve

    asyncio.run(serve(host=host, port=port, seed=seed, speed=speed))


@main.command()
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the simulated world.")
@click.option(
    "--minutes",
    default=60.0,
    show_default=True,
    type=float,
    help="Simulated minutes between the first and the second cycle.",
)
def demo(seed: int, minutes: float) -> None:
    """Run makewatch on embedded defaults: the bundled Make simulator, a temporary SQLite file.

    Needs no configuration, token or network: everything runs on 127.0.0.1, and the
    simulator's clock runs 600 times faster than real time.
    """
    from watcher.demo import run_demo

    click.echo(asyncio.run(run_demo(seed=seed, minutes=minutes)))


CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    default="makewatch.toml",
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The configuration file.",
)


@main.command()
@CONFIG_OPTION
def check(config_path: Path) -> None:
    """Validate the config, then check each organization's token, plan, budget and scopes.

    Exits 2 on a configuration error, 1 when an organization cannot be read, else 0.
    """
    from watcher.check import run_check

    settings = load_config_or_exit(config_path)
    ok, report = asyncio.run(run_check(settings))
    click.echo(report)
    sys.exit(0 if ok else 1)


@main.command()
@CONFIG_OPTION
def once(config_path: Path) -> None:
    """Run one polling cycle of every organization and print what it found.

    Prints, per organization, the requests spent and the new events by kind. Exits 1 if an
    organization could not be polled, 2 on a configuration error.
    """
    from watcher.runner import run_once

    settings = load_config_or_exit(config_path)
    ok, text = asyncio.run(run_once(settings))
    click.echo(text)
    sys.exit(0 if ok else 1)


@main.command()
@CONFIG_OPTION
def run(config_path: Path) -> None:
    """Poll every organization every polling.poll_interval_s until SIGTERM or Ctrl-C."""
    from watcher.runner import run_forever

    settings = load_config_or_exit(config_path)
    logging.getLogger().setLevel(settings.logging.level)
    asyncio.run(run_forever(settings))


def load_config_or_exit(path: Path):  # noqa: ANN201 - returns watcher.config.Settings
    """Load the config; on any error print it (naming file and key) and exit with code 2."""
    from watcher.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"makewatch: configuration error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
