"""The command line in an 80-column terminal: help without a type after flags, tables with nothing cut to "…"."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
import typer.main
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from adapters.catalog import load_profiles
from pilot.cli import app
from pilot.output import console, fit
from pilot_core.kpi import KPIS

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


def test_the_before_after_table_is_stacked_in_80_columns_with_nothing_cut() -> None:
    """The demo's table, as a terminal of 80 columns shows it: the Korean name under the English one, values
    wrapped at spaces, every word whole."""
    wide = Table(title="Before and after (plan sha256:1b7291ba8827…)", title_justify="left")
    for column in ("KPI", "지표", "baseline", "pilot", "change", "90% interval", "target", "verdict"):
        wide.add_column(column, justify="left" if column in ("KPI", "지표", "verdict") else "right", no_wrap=True)
    rows = [
        [kpi.title, kpi.title_ko, "0.09518 kWh/unit", "113.1 units/h", "+13.5%", "+41.5% to +121.4%", "−15%", verdict]
        for kpi, verdict in zip(KPIS.values(), ["inconclusive", "met", "not met", ""] * 5, strict=False)
    ]
    rows.append(["cycle time cobot-01", "사이클 타임 cobot-01", "42.31 s", "37.53 s", "-11.3%", "", "", ""])
    for row in rows:
        wide.add_row(*row)
    terminal = Console(width=80, record=True, file=io.StringIO())
    terminal.print(fit(wide, 80, stack=("지표",)))
    lines = terminal.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert not any(CUT.search(line) for line in lines[1:]), "\n".join(lines)  # the title's "…" shortens a hash
    words = " ".join(lines).split()
    for row in rows:
        for word in " ".join(row).split():
            assert word in words, (word, "\n".join(lines))
    wide_enough = Console(width=200)
    assert fit(wide, 200) is wide and wide_enough.measure(wide).maximum <= 200  # a wide terminal: the table as is
