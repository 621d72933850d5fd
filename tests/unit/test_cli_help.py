"""The command line in an 80-column terminal: help without a type after flags, tables with nothing cut to "…"."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from adapters.catalog import load_profiles
from pilot.cli import app
from pilot.output import console

runner = CliRunner()
CUT = re.compile(r"[^\W_]…")  # a word cut short: "Auton…" (not "pt_…", which the help writes on purpose)


def commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path, groups included (typer's own copy of click: not click.Group)."""
    found = [path]
    for name, command in group.commands.items():
        found += commands(command, (*path, name)) if hasattr(command, "commands") else [(*path, name)]
    return found


EVERY_COMMAND = commands(typer.main.get_group(app))


@pytest.fixture
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(console, "width", 80)


@pytest.mark.parametrize("path", EVERY_COMMAND, ids=[" ".join(p) or "pilot" for p in EVERY_COMMAND])
def test_help_fits_80_columns_and_shows_no_type_after_flags(path: tuple[str, ...], eighty_columns: None) -> None:
    result = runner.invoke(app, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    assert "--help" in result.output and not CUT.search(result.output), result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output


def test_profiles_list_at_80_columns_shows_every_name_whole(eighty_columns: None) -> None:
    result = runner.invoke(app, ["profiles", "list"], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output
    assert not CUT.search(result.output), result.output
    words = set(result.output.split())
    for profile in load_profiles():
        assert profile.id in words
        for word in (*profile.name.split(), *profile.name_ko.split()):
            assert word in words, (word, result.output)
