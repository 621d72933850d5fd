"""`pilot demo` and `pilot simulate` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pilot.cli import app
from simulators.scenario import BUNDLED_SCENARIOS

runner = CliRunner()


def short_scenario(tmp_path: Path) -> Path:
    """The bundled cell, but two days of each period, so the test stays quick."""
    text = (BUNDLED_SCENARIOS / "pangyo_cobot_cell.yaml").read_text(encoding="utf-8")
    text = text.replace("start: 2026-10-05, days: 14", "start: 2026-10-05, days: 2")
    text = text.replace("start: 2026-10-26, days: 14", "start: 2026-10-26, days: 2")
    path = tmp_path / "short.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_demo_lands_every_record(tmp_path: Path) -> None:
    report = tmp_path / "landed.json"
    result = runner.invoke(
        app, ["demo", str(short_scenario(tmp_path)), "--state-dir", str(tmp_path / "state"), "--json", str(report)]
    )
    assert result.exit_code == 0, result.output
    landed = json.loads(report.read_text(encoding="utf-8"))
    assert landed["complete"]
    assert len({row["profile"] for row in landed["rows"]}) == 7
    assert all(row["published"] == row["landed"] > 0 for row in landed["rows"])
    assert sum(row["landed"] for row in landed["rows"]) == landed["published_records"]
    truth = json.loads((tmp_path / "state" / "truth.json").read_text(encoding="utf-8"))
    assert [p["period"] for p in truth["periods"]] == ["baseline", "pilot"]


def test_simulate_dry_run_and_outputs(tmp_path: Path) -> None:
    devices = tmp_path / "devices.yaml"
    result = runner.invoke(
        app,
        ["simulate", str(short_scenario(tmp_path)), "--dry-run", "--devices-out", str(devices), "--period", "pilot"],
    )
    assert result.exit_code == 0, result.output
    assert "messages" in result.output
    check = runner.invoke(app, ["profiles", "validate", "--devices", str(devices)])
    assert check.exit_code == 0, check.output


def test_unknown_period_and_scenario_fail_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", str(short_scenario(tmp_path)), "--dry-run", "--period", "later"])
    assert result.exit_code == 1
    assert "no period 'later'" in result.output
    result = runner.invoke(app, ["simulate", "no_such_scenario", "--dry-run"])
    assert result.exit_code == 1
    assert "bundled scenarios: " in result.output
