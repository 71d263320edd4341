"""What a plain `pip install .` ships, and that the CLI documents itself."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import click
from click.testing import CliRunner

from watcher.cli import main
from watcher.resources import templates_dir

ROOT = Path(__file__).resolve().parents[1]


def test_templates_are_found_at_run_time():
    assert (templates_dir() / "cli" / "demo.txt.j2").is_file()


def test_the_wheel_ships_templates_and_the_simulator(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("makewatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    repo_templates = {
        "watcher/templates/" + p.relative_to(ROOT / "templates").as_posix()
        for p in (ROOT / "templates").rglob("*")
        if p.is_file()
    }
    assert repo_templates and repo_templates <= names
    assert {"watcher/simulator/app.py", "watcher/make/client.py", "alerts/__init__.py"} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "makewatch = watcher.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _commands(group: click.Group, prefix: str = ""):
    for name, cmd in group.commands.items():
        yield prefix + name, cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + name + " ")


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name, cmd in _commands(main):
        assert cmd.help and cmd.help.strip(), name
        assert f"makewatch {name}" in readme, name
        result = CliRunner().invoke(main, [*name.split(), "--help"])
        assert result.exit_code == 0, result.output


def test_the_readme_starts_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    assert blocks[0].endswith("makewatch demo")
    assert "pytest" in blocks[1]
    assert readme.index(blocks[1]) < readme.index("## ")
