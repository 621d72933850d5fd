"""`pilot grafana push` against a local server that answers as Grafana's HTTP API documents.

A contract test: it records what grafana-client sends (method, path,
authorization, body) and answers with the status codes and bodies Grafana
gives: 404 for a datasource or folder that does not exist yet, 401 for a bad
token, 403 for a role that may not write datasources.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.catalog import load_profiles
from adapters.local_services import free_port
from dashboards.grafana import DATASOURCE_UID
from dashboards.provisioning import FOLDER_UID, all_dashboards, datasource_model
from pilot.cli import app as cli

TOKEN = "glsa_test_token"
runner = CliRunner()


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class FakeGrafana:
    """Grafana's datasource, folder and dashboard endpoints, with the answers its documentation gives."""

    port: int = 0
    accepted: set[str] = field(default_factory=lambda: {f"Bearer {TOKEN}"})
    role_may_write_datasources: bool = True
    requests: list[Request] = field(default_factory=list)
    datasources: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, Any] = field(default_factory=dict)
    dashboards: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        method, path, body = request.method, request.path, request.body
        if (method, path) == ("GET", "/api/health"):  # answered to anyone
            return 200, {"commit": "abc", "database": "ok", "version": "11.3.0"}
        if request.authorization not in self.accepted:
            return 401, {"message": "Invalid API key"}
        if path == f"/api/datasources/uid/{DATASOURCE_UID}":
            if method == "GET":
                found = self.datasources.get(DATASOURCE_UID)
                return (200, found) if found else (404, {"message": "Data source not found"})
            if method == "PUT":
                self.datasources[DATASOURCE_UID] = body
                return 200, {"datasource": body, "id": 1, "message": "Datasource updated", "name": body["name"]}
        if (method, path) == ("POST", "/api/datasources"):
            if not self.role_may_write_datasources:
                return 403, {
                    "message": "You'll need additional permissions to perform this action."
                    " Permissions needed: datasources:create",
                    "title": "Access denied",
                }
            self.datasources[body["uid"]] = body
            return 200, {"datasource": body, "id": 1, "message": "Datasource added", "name": body["name"]}
        if method == "GET" and path.startswith("/api/folders/"):
            found = self.folders.get(path.rsplit("/", 1)[1])
            return (200, found) if found else (404, {"message": "folder not found", "status": "not-found"})
        if (method, path) == ("POST", "/api/folders"):
            folder = {"id": 1, "uid": body["uid"], "title": body["title"], "url": f"/dashboards/f/{body['uid']}/"}
            self.folders[body["uid"]] = folder
            return 200, folder
        if (method, path) == ("POST", "/api/dashboards/db"):
            model = body["dashboard"]
            self.dashboards[model["uid"]] = body
            return 200, {
                "id": len(self.dashboards),
                "uid": model["uid"],
                "url": f"/d/{model['uid']}/board",
                "status": "success",
                "version": 1,
                "slug": "board",
            }
        return 404, {"message": "Not found"}


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                self.command, self.path, self.headers.get("Authorization"), json.loads(raw) if raw else None
            )
            status, body = fake.answer(request)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _serve  # noqa: N815 (http.server's names)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def _push(url: str, *extra: str) -> Any:
    command = ["grafana", "push", "--url", url, "--no-demonstrations", "--influx-url", "http://influxdb:8086"]
    return runner.invoke(cli, [*command, "--influx-database", "pilot", *extra])


@pytest.fixture(autouse=True)
def _no_local_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("PILOT_GRAFANA_URL", "PILOT_GRAFANA_TOKEN", "PILOT_GRAFANA_PASSWORD", "PILOT_GRAFANA_INFLUX_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_a_first_push_creates_the_datasource_folder_and_dashboards(grafana: FakeGrafana) -> None:
    result = _push(grafana.url, "--token", TOKEN, "--influx-token", "read-token")
    assert result.exit_code == 0, result.output
    expected = all_dashboards(load_profiles())
    calls = [(r.method, r.path) for r in grafana.requests]
    assert calls == [
        ("GET", "/api/health"),
        ("GET", f"/api/datasources/uid/{DATASOURCE_UID}"),
        ("POST", "/api/datasources"),
        ("GET", f"/api/folders/{FOLDER_UID}"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(expected),
    ]
    assert {r.authorization for r in grafana.requests} == {f"Bearer {TOKEN}"}  # the health check's too
    created = grafana.requests[2].body
    assert created == datasource_model("http://influxdb:8086", "pilot", "read-token")
    assert created["jsonData"] == {
        "version": "InfluxQL",
        "dbName": "pilot",
        "httpMode": "GET",
        "httpHeaderName1": "Authorization",
    }
    assert created["secureJsonData"] == {"httpHeaderValue1": "Token read-token"}
    assert grafana.requests[4].body == {"title": "pilot-telemetry", "uid": FOLDER_UID}
    for request, model in zip(grafana.requests[5:], expected, strict=True):
        assert request.body == {
            "dashboard": {**model, "id": None},
            "folderUid": FOLDER_UID,
            "overwrite": True,
            "message": "pilot grafana push",
        }
    assert "Grafana 11.3.0" in result.output and "datasource pilot-influxdb created" in result.output
    assert f"{grafana.url}/d/pilot-line-overview/board" in result.output
    assert "read-token" not in result.output


def test_a_second_push_updates_in_place(grafana: FakeGrafana) -> None:
    assert _push(grafana.url, "--token", TOKEN).exit_code == 0
    first = len(grafana.requests)
    result = _push(grafana.url, "--token", TOKEN)
    assert result.exit_code == 0, result.output
    calls = [(r.method, r.path) for r in grafana.requests[first:]]
    assert ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}") in calls
    assert ("POST", "/api/datasources") not in calls and ("POST", "/api/folders") not in calls
    assert "datasource pilot-influxdb updated" in result.output and "folder pilot-telemetry exists" in result.output
    assert "secureJsonData" not in grafana.datasources[DATASOURCE_UID]  # no InfluxDB token given: no header


def test_a_user_and_password_go_as_basic_auth(grafana: FakeGrafana) -> None:
    basic = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    grafana.accepted = {basic}
    result = _push(grafana.url, "--user", "admin", "--password", "s3cret")
    assert result.exit_code == 0, result.output
    assert {r.authorization for r in grafana.requests} == {basic}


def test_a_refused_token_is_a_clear_error(grafana: FakeGrafana) -> None:
    result = _push(grafana.url, "--token", "wrong")
    assert result.exit_code == 1
    assert f"Grafana at {grafana.url} refused our credentials (401)" in result.output
    assert "Traceback" not in result.output and len(grafana.requests) == 2  # the health check, then the refusal


def test_a_role_that_may_not_write_datasources_is_told_what_it_needs(grafana: FakeGrafana) -> None:
    grafana.role_may_write_datasources = False
    result = _push(grafana.url, "--token", TOKEN)
    assert result.exit_code == 1
    assert "does not allow us to create datasource pilot-influxdb (403)" in result.output
    assert "Admin role" in result.output
    assert not grafana.dashboards


def test_an_unreachable_grafana_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = _push(url, "--token", TOKEN)
    assert result.exit_code == 1
    assert f"cannot reach Grafana at {url}" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "grafana:3000"], "must look like http://host:3000"),
        (["--url", "http://admin:pw@grafana:3000"], "not in the url"),
        (["--url", "http://grafana:3000", "--token", "t", "--user", "u", "--password", "p"], "not both"),
        (["--url", "http://grafana:3000", "--user", "u"], "needs a password"),
    ],
)
def test_unusable_arguments_are_refused_before_any_request(args: list[str], message: str) -> None:
    result = runner.invoke(cli, ["grafana", "push", "--no-demonstrations", *args])
    assert result.exit_code == 1 and message in result.output, result.output
