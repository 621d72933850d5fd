"""The bundled profiles, and the docs and examples that must not drift from the code (the Docker files:
test_compose.py).

Pure unit tests: no broker, no database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from adapters.catalog import BUNDLED_PROFILES, load_profiles, load_registry
from collector.settings import CollectorSettings
from pilot.cli import app
from pilot_core.contract import TimeClass
from pilot_core.profiles import ProductionMode
from simulators.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_IDS = {
    "amr",
    "cnc_machine",
    "cobot_arm",
    "conveyor",
    "energy_meter",
    "environment_sensor",
    "vision_inspection",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PILOT_* variables from the caller's shell, and no ./pilot.yaml picked up by accident."""
    for name in list(os.environ):
        if name.upper().startswith("PILOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def unknown_keys(data: dict[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    """Keys a settings model would silently ignore (CollectorSettings uses extra='ignore')."""
    found = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append(prefix + key)
            continue
        annotation = field.annotation
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(unknown_keys(value, annotation, f"{prefix}{key}."))
    return found


# --- bundled profiles ------------------------------------------------------


def test_seven_bundled_profiles_load_and_cover_the_seven_kinds() -> None:
    catalog = load_profiles(BUNDLED_PROFILES)
    assert {p.id for p in catalog} == BUNDLED_IDS
    assert len(catalog) == 7
    for profile in catalog:
        assert profile.metrics, f"{profile.id} declares no metrics"
        assert profile.measurement == f"telemetry_{profile.id}"


def test_every_state_maps_to_a_time_class() -> None:
    for profile in load_profiles(BUNDLED_PROFILES):
        for state in profile.states:
            assert isinstance(state.time_class, TimeClass), f"{profile.id}.{state.name}"
        if profile.production.mode is ProductionMode.NONE:
            continue
        classes = {s.time_class for s in profile.states}
        # A producing device needs states for run time and for breakdowns, or OEE and MTBF cannot be computed.
        assert TimeClass.PRODUCTION in classes, profile.id
        assert TimeClass.UNPLANNED_DELAY in classes, profile.id


def run_pilot(*args: str) -> subprocess.CompletedProcess[str]:
    # A wide terminal: rich would otherwise wrap long tmp paths in the middle.
    env = {**os.environ, "COLUMNS": "1000", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pilot", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_validate_names_file_and_line_of_a_broken_profile(tmp_path: Path) -> None:
    broken = tmp_path / "press.yaml"
    broken.write_text(
        "id: hydraulic_press\n"
        "version: 1.0.0\n"
        "name: Hydraulic press\n"
        "metrics:\n"
        "  - {name: ram_force, unit: kN, min: 0, max: 2500, interval_s: 1}\n"
        "states:\n"
        "  - {name: pressing, time_class: production}\n"
        "  - {name: die_change, time_class: changeover}\n"
        "production: {mode: cycle, unit: part}\n",
        encoding="utf-8",
    )
    result = run_pilot("profiles", "validate", str(broken))
    assert result.returncode != 0
    assert f"{broken}:8:" in result.stderr
    assert "states.1.time_class" in result.stderr


def test_validate_accepts_the_bundled_profiles_with_the_example_registry() -> None:
    result = run_pilot("profiles", "validate", "--devices", "examples/devices.yaml")
    assert result.returncode == 0, result.stderr
    assert "7 profile file(s) valid" in result.stdout


# --- docs ------------------------------------------------------------------


def test_contract_schema_in_docs_is_the_current_export() -> None:
    result = CliRunner().invoke(app, ["contract", "schema"])
    assert result.exit_code == 0, result.output
    assert (ROOT / "docs" / "contract.schema.json").read_bytes() == result.stdout_bytes, (
        "docs/contract.schema.json is stale: run `pilot contract schema -o docs/contract.schema.json`"
    )


def test_profiles_doc_lists_every_bundled_profile() -> None:
    text = (ROOT / "docs" / "profiles.md").read_text(encoding="utf-8")
    for profile in load_profiles(BUNDLED_PROFILES):
        assert f"`{profile.id}`" in text, profile.id


def test_configuration_doc_lists_every_setting() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name, field in CollectorSettings.model_fields.items():
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            for key in nested.model_fields:
                assert f"`PILOT_{name.upper()}__{key.upper()}`" in text, f"{name}.{key}"
        else:
            assert f"`PILOT_{name.upper()}`" in text, name


# --- examples ----------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_example_config_loads_and_every_key_is_known() -> None:
    path = ROOT / "examples" / "pilot.yaml"
    settings = CollectorSettings.load(path)
    assert settings.devices_file == Path("devices.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert unknown_keys(data, CollectorSettings) == []


def test_example_registry_loads_and_matches_the_scenario() -> None:
    catalog = load_profiles(BUNDLED_PROFILES)
    path = ROOT / "examples" / "devices.yaml"
    registry = load_registry(path, catalog)
    scenario = load_scenario(Path("pangyo_cobot_cell"), catalog)
    assert len(registry) == len(scenario.devices)
    # Equivalent to what `pilot simulate pangyo_cobot_cell --devices-out devices.yaml` writes.
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == yaml.safe_load(scenario.registry_yaml())
