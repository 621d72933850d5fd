"""The thin API: health, contract, profiles and devices; problem details; the OpenAPI examples."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.influxdb import InfluxSettings
from adapters.sql import RepositoryError, default_url
from api.examples import PANGYO_AMENDMENT, PANGYO_PLAN
from api.main import create_app
from api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES, problem_type
from api.routers.demonstrations import Amendment
from collector.settings import CollectorSettings
from pilot_core.contract import json_schema
from pilot_core.demonstration import DemonstrationPlan
from tests.api_support import admin_client


def client_for(tmp_path: Path, devices: str | None = None) -> TestClient:
    devices_file = tmp_path / "devices.yaml"
    if devices is not None:
        devices_file.write_text(devices, encoding="utf-8")
    # Port 9 (discard) on loopback: nothing answers, so readiness must fail cleanly.
    settings = CollectorSettings(
        influx=InfluxSettings(url="http://127.0.0.1:9", timeout_s=0.5),
        devices_file=devices_file,
        database_url=default_url(tmp_path),
    )
    return admin_client(create_app(settings))


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
        {"site": "시화", "line": "L1", "device": "cobot 1", "profile": "cobot_arm", "name": "", "organisation": None}
    ]


def test_no_devices_file_means_no_devices(tmp_path: Path) -> None:
    assert client_for(tmp_path).get("/v1/devices").json() == []


# --- problem details


def test_http_errors_are_problem_details(tmp_path: Path) -> None:
    client = client_for(tmp_path)
    response = client.get("/v1/profiles/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no device profile 'nope'",
        "instance": "/v1/profiles/nope",
    }
    assert client.get("/no/such/path").json()["title"] == "Not Found"
    wrong_method = client.delete("/v1/profiles")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET"
    assert wrong_method.json()["title"] == "Method Not Allowed"


def test_an_unexpected_error_is_a_500_that_tells_nothing_but_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = client_for(tmp_path).app
    assert isinstance(app, FastAPI)

    def broken() -> None:
        raise RuntimeError("password=hunter2 in a stack of secrets")

    app.add_api_route("/broken", broken)
    client = admin_client(app, raise_server_exceptions=False)  # the server, not the test, would see the exception
    with caplog.at_level(logging.ERROR, logger="api.problems"):
        response = client.get("/broken")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    problem = response.json()
    assert problem["type"] == "about:blank" and problem["title"] == "Internal Server Error"
    assert problem["instance"] == "/broken"
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert "GET /broken failed" in caplog.text and "hunter2" in caplog.text


def test_problem_types_are_named_after_the_repository_errors() -> None:
    """The type URIs are an interface: renaming an error class would change them, so this pins them."""
    assert {problem_type(refusal) for refusal in RepositoryError.__subclasses__()} == {
        f"{PROBLEM_TYPES}{name}"
        for name in (
            "not-found",
            "duplicate-slug",
            "invalid-slug",
            "plan-frozen",
            "frozen-by-another",
            "not-frozen-yet",
            "amendment-needs-reason",
            "unknown-organisation",
            "duplicate-organisation",
            "owner-is-not-a-participant",
            "invalid-key-scope",
        )
    }


# --- OpenAPI


def test_the_examples_are_valid_requests() -> None:
    plan = DemonstrationPlan.model_validate(PANGYO_PLAN)
    assert plan.site == "판교" and {w.phase for w in plan.windows} == {"baseline", "pilot"}
    assert plan.targets[0].label == "cycle_time_mean −10%"
    amendment = Amendment.model_validate(PANGYO_AMENDMENT)
    assert amendment.plan.exclusions and amendment.reason


def test_every_documented_error_is_a_problem(tmp_path: Path) -> None:
    document = client_for(tmp_path).get("/openapi.json").json()
    errors = [
        response
        for path in document["paths"].values()
        for operation in path.values()
        for status, response in operation["responses"].items()
        if status.startswith(("4", "5"))
    ]
    assert errors
    for response in errors:
        assert response["content"] == {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    schemas = document["components"]["schemas"]
    assert {"type", "title", "status", "detail", "instance", "errors"} <= set(schemas["Problem"]["properties"])
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
