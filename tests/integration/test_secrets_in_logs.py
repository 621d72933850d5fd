"""No secret in any log or output line: provisioning, and `pilot collect` at DEBUG with credentials for a
broker and an InfluxDB that both check them, in working order and with wrong credentials."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from pilot.cli import app
from pilot_core.contract import topic_for
from tests.support import count_points, publish_all, wait_until

TS = 1_793_800_000_000
INFLUX_USER, INFLUX_PASSWORD = "admin", "influx/s3cret:42 ü"
SITE, LINE, DEVICE = "시화", "L 1", "meter 01"


def secret_forms(secret: str, user: str = "") -> list[str]:
    """The ways a secret could show: as is, URL-encoded, in a basic-auth header."""
    forms = [secret, quote(secret, safe=""), quote(secret)]
    if user:
        forms.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return forms


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret appears in the output: …{text[max(0, text.find(secret) - 80) :][:160]}…"


@pytest.fixture(scope="module")
def guarded_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_services.InfluxService]:
    service = local_services.influxdb(tmp_path_factory.mktemp("influx-auth"), admin=(INFLUX_USER, INFLUX_PASSWORD))
    service.start()
    yield service
    service.stop()


def test_provisioning_prints_the_password_once_and_logs_nothing_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    where = ["--devices", str(tmp_path / "devices.yaml"), "--broker-dir", str(tmp_path / "auth")]
    runner = CliRunner()
    created = runner.invoke(
        app, ["devices", "provision", DEVICE, "--site", SITE, "--line", LINE, "--profile", "energy_meter", *where]
    )
    assert created.exit_code == 0, created.output
    password = next(line.split(": ", 1)[1] for line in created.stdout.splitlines() if line.startswith("password: "))
    assert created.stdout.count(password) == 1
    assert_no_secret(created.stderr + caplog.text, secret_forms(password))
    again = runner.invoke(
        app, ["devices", "provision", DEVICE, "--site", SITE, "--line", LINE, "--profile", "energy_meter", *where]
    )
    listed = runner.invoke(app, ["devices", "list", "--broker-dir", str(tmp_path / "auth")])
    revoked = runner.invoke(app, ["devices", "revoke", DEVICE, "--site", SITE, "--line", LINE, *where[2:]])
    assert again.exit_code == 1 and listed.exit_code == 0 and revoked.exit_code == 0
    hashes = (tmp_path / "auth" / "passwd").read_text(encoding="utf-8")
    for result in (again, listed, revoked):
        assert_no_secret(result.output, secret_forms(password))
        assert "$7$" not in result.output
    assert_no_secret(caplog.text, secret_forms(password))
    assert password not in hashes


def test_pilot_collect_at_debug_logs_no_credentials(
    tmp_path: Path, guarded_influx: local_services.InfluxService, unique_id: str
) -> None:
    auth = tmp_path / "auth"
    devices = tmp_path / "devices.yaml"
    runner = CliRunner()
    provisioned = runner.invoke(
        app,
        ["devices", "provision", DEVICE, "--site", SITE, "--line", LINE, "--profile", "energy_meter",
         "--devices", str(devices), "--broker-dir", str(auth), "--json"],
    )  # fmt: skip
    service = runner.invoke(
        app,
        ["devices", "service-account", "pilot-collector", "--role", "collector",
         "--broker-dir", str(auth), "--json"],
    )  # fmt: skip
    assert provisioned.exit_code == 0 and service.exit_code == 0, provisioned.output + service.output
    device, collector = json.loads(provisioned.stdout), json.loads(service.stdout)
    secrets = [
        *secret_forms(device["password"], device["username"]),
        *secret_forms(collector["password"], "pilot-collector"),
        *secret_forms(INFLUX_PASSWORD, INFLUX_USER),
    ]
    broker = local_services.mosquitto(tmp_path / "mosquitto", password_file=auth / "passwd", acl_file=auth / "acl")
    broker.start()
    database = f"secrets_{unique_id[-6:]}"
    # Credentials in the url, as some operators write them: they must not surface with it.
    url_with_credentials = guarded_influx.url.replace(
        "http://", f"http://{INFLUX_USER}:{quote(INFLUX_PASSWORD, safe='')}@"
    )
    env = {
        **os.environ,
        "PILOT_MQTT__PORT": str(broker.port),
        "PILOT_MQTT__USERNAME": "pilot-collector",
        "PILOT_MQTT__PASSWORD": collector["password"],
        "PILOT_INFLUX__URL": url_with_credentials,
        "PILOT_INFLUX__DATABASE": database,
        "PILOT_DEVICES_FILE": str(devices),
        "PILOT_CLIENT_ID": "pilot-collector",  # the broker makes the username the client id
        "PILOT_METRICS_PORT": "0",
        "PILOT_FLUSH_INTERVAL_S": "0.2",
    }
    command = [sys.executable, "-m", "pilot", "collect", "--log-level", "debug"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        influx = InfluxSettings(
            url=guarded_influx.url, database=database, username=INFLUX_USER, password=SecretStr(INFLUX_PASSWORD)
        )
        topic = topic_for(SITE, LINE, DEVICE, "telemetry")
        device_mqtt = MqttSettings(
            port=broker.port, username=device["username"], password=SecretStr(device["password"])
        )
        with InfluxClient(influx) as client:
            # It returns from start once subscribed: only then is a message for it kept.
            wait_until(lambda: any(" collecting " in line for line in lines), what="the collector subscribed")
            payloads = [
                json.dumps({"seq": i, "ts": TS + i * 1000, "metrics": {"active_power_kw": 1.5}}).encode()
                for i in range(20)
            ]
            publish_all(device_mqtt, [(topic, p) for p in [*payloads, b"not json"]], f"{unique_id}-device")
            wait_until(lambda: count_points(client, "telemetry_energy_meter") == 20, what="20 points")
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        reader.join(10)
        log = "".join(lines)
        assert process.returncode == 0, log
        assert " DEBUG " in log and "refused" in log  # debug lines, and the dead letter's
        assert_no_secret(log, secrets)

        # Wrong credentials, each side in turn: the errors name the problem, not the secret.
        wrong_influx = {**env, "PILOT_INFLUX__URL": url_with_credentials.replace(quote(INFLUX_PASSWORD, safe=""), "x")}
        wrong_mqtt = {**env, "PILOT_MQTT__PASSWORD": collector["password"][::-1]}
        for environment, expected in ((wrong_influx, "refused our credentials"), (wrong_mqtt, "Not authorized")):
            failed = subprocess.run(
                command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
            )
            assert failed.returncode == 1 and expected in failed.stderr, failed.stderr
            assert_no_secret(failed.stdout + failed.stderr, [*secrets, collector["password"][::-1]])
    finally:
        if process.poll() is None:
            process.kill()
        broker.stop()


def test_pilot_api_logs_no_key_wherever_a_client_puts_it(
    tmp_path: Path, influxdb: local_services.InfluxService
) -> None:
    """Keys sent every way a client might (the documented headers, and the places the API does not take them:
    query strings under many names, the URL's userinfo, a cookie, a path): no line of the server's output holds one.
    """
    env = {
        **os.environ,
        "PILOT_DATABASE_URL": f"sqlite:///{tmp_path / 'pilot.db'}",
        "PILOT_INFLUX__URL": influxdb.url,
        "PILOT_DEVICES_FILE": str(tmp_path / "devices.yaml"),
    }
    runner = CliRunner()
    assert runner.invoke(app, ["orgs", "create", "operator"], env=env).exit_code == 0
    tokens = []
    for name in ("admin-1", "admin-2"):
        created = runner.invoke(
            app, ["keys", "create", "--name", name, "--role", "admin", "--org", "operator", "--json"], env=env
        )
        assert created.exit_code == 0, created.output
        tokens.append(json.loads(created.stdout)["token"])
    valid, other = tokens
    wrong = valid[:-6] + "abcdef"  # well formed, not a key
    secrets = [*tokens, wrong, valid.split("_", 2)[2], other.split("_", 2)[2], "hunter2-password"]

    port = local_services.free_port()
    command = [sys.executable, "-m", "pilot", "api", "--port", str(port)]
    server = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stdout or []), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: any("Uvicorn running" in line for line in lines), what="the API listening")
        with httpx.Client(base_url=base, timeout=30) as client:
            answers = [
                client.get("/v1/demonstrations", headers={"Authorization": f"Bearer {valid}"}).status_code,
                client.get("/v1/demonstrations", headers={"X-API-Key": other}).status_code,
                client.get("/v1/demonstrations", headers={"Authorization": f"Bearer {wrong}"}).status_code,
                client.get("/v1/demonstrations", headers={"Cookie": f"api_key={valid}; session={other}"}).status_code,
            ]
            for parameter in ("api_key", "key", "token", "access_token", "apikey", "API-KEY", "X-Api-Key",
                              "auth", "password", "q"):  # fmt: skip
                for token in (valid, wrong):
                    answers.append(client.get(f"/v1/demonstrations?format=csv&{parameter}={token}").status_code)
            answers.append(client.get("/v1/demonstrations", params={"password": "hunter2-password"}).status_code)
            answers.append(client.get(f"/v1/demonstrations/{valid}/kpis").status_code)
            answers.append(client.get(f"/v1/{other}?token={valid}").status_code)
            answers.append(
                httpx.get(f"http://user:{valid}@127.0.0.1:{port}/v1/demonstrations?key={other}", timeout=30).status_code
            )
        assert answers[:2] == [200, 200] and 401 in answers, answers
        server.send_signal(signal.SIGINT)
        server.wait(30)
        reader.join(10)
    finally:
        if server.poll() is None:
            server.kill()
    log = "".join(lines)
    assert log.count('"GET /v1/') >= len(answers), log  # the access log did write the requests
    assert_no_secret(log, secrets)
    assert "[redacted]" in log and "format=csv" in log  # what is not a credential stays
