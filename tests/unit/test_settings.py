"""Collector configuration: a YAML file, overridden by PILOT_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from collector.settings import CollectorSettings
from pilot.cli import app


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "pilot.yaml"
    config.write_text(
        "mqtt: {host: broker.plant.local, port: 8883}\n"
        "influx: {url: 'http://influx:8086', database: line1, username: writer, password: s3cret}\n"
        "batch_size: 2000\n"
        "share_group: collectors\n",
        encoding="utf-8",
    )
    settings = CollectorSettings.load(config)
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.plant.local", 8883)
    assert settings.influx.database == "line1"
    assert settings.influx.password is not None and settings.influx.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.batch_size == 2000
    assert settings.subscription == "$share/collectors/pilot/v1/+/+/+/+"

    monkeypatch.setenv("PILOT_MQTT__PORT", "1884")
    monkeypatch.setenv("PILOT_INFLUX__DATABASE", "line2")
    monkeypatch.setenv("PILOT_BATCH_SIZE", "500")
    settings = CollectorSettings.load(config)
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.plant.local", 1884)
    assert settings.influx.database == "line2"
    assert settings.influx.username == "writer"
    assert settings.batch_size == 500


def test_missing_file_and_bad_values_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CollectorSettings.load(tmp_path / "nope.yaml")
    monkeypatch.setenv("PILOT_BATCH_SIZE", "0")
    with pytest.raises(ValueError, match="batch_size"):
        CollectorSettings.load()


def test_misspelt_settings_are_refused_not_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "pilot.yaml"
    config.write_text("batch_sise: 100\nmqtt: {hots: broker}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"pilot.yaml.*mqtt\.hots: unknown setting.*batch_sise: unknown setting"):
        CollectorSettings.load(config)
    monkeypatch.setenv("PILOT_INFLUX__DATABSE", "line1")
    with pytest.raises(ValueError, match=r"PILOT_\* environment: influx\.databse: unknown setting"):
        CollectorSettings.load()


def test_database_url_defaults_to_a_sqlite_file_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./pilot.yaml of the caller's
    monkeypatch.delenv("PILOT_DATABASE_URL", raising=False)
    assert CollectorSettings.load().database_url == "sqlite:///pilot.db"
    monkeypatch.setenv("PILOT_DATABASE_URL", "postgresql+psycopg://pilot@db.plant.local/pilot")
    assert CollectorSettings.load().database_url == "postgresql+psycopg://pilot@db.plant.local/pilot"


@pytest.mark.parametrize(
    ("name", "value"),
    [("rollup_every_s", "inf"), ("rollup_every_s", "1e300"), ("rollup_late_days", "inf"), ("rollup_late_days", "nan")],
)
def test_a_rollup_period_no_timer_can_wait_is_refused(
    name: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API's roll-up thread waits rollup_every_s (OverflowError: timestamp out of range; the thread died at once)
    # and each pass counts back rollup_late_days (cannot convert float infinity to integer; every pass failed).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(f"PILOT_{name.upper()}", value)
    with pytest.raises(ValueError, match=name):
        CollectorSettings.load()


@pytest.mark.parametrize(("option", "value"), [("--every", "inf"), ("--every", "1e300"), ("--late-days", "inf")])
def test_pilot_rollups_refuses_a_period_no_timer_can_wait(option: str, value: str) -> None:
    result = CliRunner().invoke(app, ["rollups", option, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output, result.output
