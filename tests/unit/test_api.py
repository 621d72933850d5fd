"""The thin API: health, contract, profiles and devices."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from adapters.influxdb import InfluxSettings
from api.main import create_app
from collector.settings import CollectorSettings
from pilot_core.contract import json_schema


def client_for(tmp_path: Path, devices: str | None = None) -> TestClient:
    devices_file = tmp_path / "devices.yaml"
    if devices is not None:
        devices_file.write_text(devices, encoding="utf-8")
    # Port 9 (discard) on loopback: nothing answers, so readiness must fail cleanly.
    settings = CollectorSettings(
        influx=InfluxSettings(url="http://127.0.0.1:9", timeout_s=0.5), devices_file=devices_file
    )
    return TestClient(create_app(settings))


def test_health_and_unready_store(tmp_path: Path) -> None:
    client = client_for(tmp_path)
    assert client.get("/health").json() == {"status": "ok"}
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "127.0.0.1:9" in response.json()["influxdb"]


def test_contract_profiles_and_devices(tmp_path: Path) -> None:
    client = client_for(tmp_path, "devices:\n  - {site: 시화, line: L1, device: 'cobot 1', profile: cobot_arm}\n")
    assert client.get("/v1/contract/schema").json() == json_schema()
    ids = [p["id"] for p in client.get("/v1/profiles").json()]
    assert "cobot_arm" in ids and "energy_meter" in ids
    cobot = client.get("/v1/profiles/cobot_arm").json()
    assert {s["time_class"] for s in cobot["states"]} >= {"production", "unplanned_delay"}
    assert client.get("/v1/profiles/nope").status_code == 404
    assert client.get("/v1/devices").json() == [
        {"site": "시화", "line": "L1", "device": "cobot 1", "profile": "cobot_arm", "name": ""}
    ]


def test_no_devices_file_means_no_devices(tmp_path: Path) -> None:
    assert client_for(tmp_path).get("/v1/devices").json() == []
