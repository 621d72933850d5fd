"""The Compose stack's broker, for real but without Docker: deploy/init/init.sh runs as the init service
would (its environment from docker-compose.yml and a .env made from .env.example, its volumes as folders),
then a real Mosquitto starts with deploy/mosquitto/mosquitto.conf, only its port and the mounted paths
mapped to those folders. The broker's health check, the collector's account (through $share/, its dead
letters and heartbeat) and the simulators' account then work as the compose file configures them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from pydantic import SecretStr

from adapters import local_services
from adapters.broker_accounts import BrokerFiles
from adapters.catalog import load_profiles, load_registry
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttConnectError, MqttSettings, connect_and_wait, new_client
from collector.settings import CollectorSettings
from pilot_core.broker_accounts import heartbeat_topic, verify_password
from pilot_core.contract import topic_for
from tests.compose_support import (
    INIT_SCRIPT,
    ROOT,
    environment,
    interpolate,
    mosquitto_directives,
    mount_source,
    services,
    stack_env,
)
from tests.support import count_points, publish_all, running_collector, wait_until

NOT_AUTHORIZED = 135
SITE, LINE, DEVICE = "판교", "조립-1라인", "cobot-01"  # examples/devices.yaml, which the init registers
PATH_DIRECTIVES = ("password_file", "acl_file", "persistence_location")


@dataclass
class Stack:
    """The stack's volumes as folders under ``root``, and what runs on them."""

    root: Path
    env: dict[str, str]  # the .env
    broker: local_services.LocalService | None = None

    def local(self, service: str, container_path: str) -> Path:
        """Where ``container_path`` of ``service`` lives here: a volume's folder, or the checkout for a bind."""
        source = mount_source(services()[service], container_path)
        if source.startswith("."):
            return ROOT / source
        return self.root / "volumes" / source

    def run_init(self, *args: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
        init = services()["init"]
        env = environment(init, {**self.env, **env_overrides})
        for key in ("PILOT_DEVICES_FILE", "SEED_DEVICES_FILE"):
            env[key] = str(self.local("init", env[key]))
        # The working folder, with the broker volume where the container has it.
        work = self.root / "work"
        broker_dir = Path(init["working_dir"]) / "deploy/mosquitto/auth"
        link = work / broker_dir.relative_to(init["working_dir"])
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.local("init", str(broker_dir)), target_is_directory=True)
        for volume in ("broker-auth", "registry"):
            (self.root / "volumes" / volume).mkdir(parents=True, exist_ok=True)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # this venv's `pilot`
        return subprocess.run(
            ["sh", str(INIT_SCRIPT), *args],
            check=False,
            cwd=work,
            env={"PATH": path, "HOME": str(self.root), "LANG": "C.UTF-8", **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start_broker(self) -> local_services.LocalService:
        """mosquitto.conf as the container reads it: only the listener's port and the mounted paths change."""
        port = local_services.free_port()
        lines = []
        for directive, value in mosquitto_directives():
            here = value
            if directive == "listener":
                here = f"{port} 127.0.0.1"
            elif directive in PATH_DIRECTIVES:
                here = str(self.local("mosquitto", value.rstrip("/"))) + ("/" if value.endswith("/") else "")
            lines.append(f"{directive} {here}")
        # The container's Mosquitto runs as the files' owner (the init writes them as its uid); here that is us.
        if os.geteuid() == 0:
            lines.append("user root")
        (self.local("mosquitto", "/mosquitto/data")).mkdir(parents=True, exist_ok=True)
        config = self.root / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        binary = local_services.find_binary("mosquitto", "/usr/sbin/mosquitto")
        self.broker = local_services.LocalService("mosquitto", self.root, port, [binary, "-c", str(config)])
        self.broker.start()
        return self.broker

    def mqtt(self, service: str) -> MqttSettings:
        """The MQTT settings a service of the compose file connects with, pointed at the broker here."""
        env = environment(services()[service], self.env)
        assert self.broker is not None
        return MqttSettings(
            host="127.0.0.1",
            port=self.broker.port,
            username=env["PILOT_MQTT__USERNAME"],
            password=SecretStr(env["PILOT_MQTT__PASSWORD"]),
        )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    made = Stack(tmp_path, stack_env())
    result = made.run_init()
    assert result.returncode == 0, result.stdout + result.stderr
    made.start_broker()
    yield made
    assert made.broker is not None
    made.broker.stop()


class Client:
    """An MQTT 5 client that records PUBACK reason codes and what it is delivered."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        self.acks: dict[int, int] = {}
        self.subscribed: set[int] = set()
        self.received: list[str] = []
        self._changed = threading.Condition()
        self._client = new_client(settings, client_id)
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        connect_and_wait(self._client, settings)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: Any, props: object) -> None:
        self.acks[mid] = reason.value
        self._notify()

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reasons: object, props: object) -> None:
        self.subscribed.add(mid)
        self._notify()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        self.received.append(message.topic)
        self._notify()

    def subscribe(self, topic: str) -> None:
        _, mid = self._client.subscribe(topic, qos=1)
        with self._changed:
            assert self._changed.wait_for(lambda: mid in self.subscribed, 10), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """The PUBACK's reason code: < 128 accepted, 135 not authorized."""
        info = self._client.publish(topic, payload, qos=1)
        with self._changed:
            assert self._changed.wait_for(lambda: info.mid in self.acks, 10), f"no PUBACK for {topic}"
        return self.acks[info.mid]

    def wait_for(self, topic: str) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: topic in self.received, 10), f"{topic} never delivered"

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_the_init_registers_the_demo_line_once_and_changes_nothing_when_run_again(tmp_path: Path) -> None:
    stack = Stack(tmp_path, stack_env())
    first = stack.run_init()
    assert first.returncode == 0, first.stdout + first.stderr
    registry = stack.local("init", "/etc/pilot/devices.yaml")
    assert registry.read_text(encoding="utf-8") == (ROOT / "examples" / "devices.yaml").read_text(encoding="utf-8")
    files = BrokerFiles(stack.local("init", "/srv/pilot/deploy/mosquitto/auth"))
    accounts = {a.username: a for a in files.load()}
    assert set(accounts) == {"pilot-collector", "simulator", "pilot-healthcheck"}
    for username, variable in [
        ("pilot-collector", "MQTT_COLLECTOR_PASSWORD"),
        ("simulator", "MQTT_SIMULATOR_PASSWORD"),
        ("pilot-healthcheck", "MQTT_HEALTHCHECK_PASSWORD"),
    ]:
        assert verify_password(stack.env[variable], accounts[username].password_hash), username
    for path in (files.password_file, files.acl_file, files.accounts_file):
        assert path.stat().st_mode & 0o777 == 0o600, path  # only their owner, Mosquitto's uid, reads them
    before = {p.name: p.read_bytes() for p in (files.accounts_file, files.password_file, files.acl_file, registry)}
    # At the next `docker compose up` it runs again: nothing changes, and it succeeds.
    registry.write_text(registry.read_text(encoding="utf-8") + "# the operator's edit\n", encoding="utf-8")
    before[registry.name] = registry.read_bytes()
    again = stack.run_init()
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stderr.count("is already as asked") == 3
    assert {
        p.name: p.read_bytes() for p in (files.accounts_file, files.password_file, files.acl_file, registry)
    } == before
    for secret in (stack.env[k] for k in ("MQTT_COLLECTOR_PASSWORD", "MQTT_SIMULATOR_PASSWORD")):
        assert secret not in first.stdout + first.stderr + again.stdout + again.stderr


def test_a_password_changed_in_env_needs_the_rotate_run_which_the_error_names(tmp_path: Path) -> None:
    stack = Stack(tmp_path, stack_env())
    assert stack.run_init().returncode == 0
    changed = "a-new-simulator-password-0123456789"
    refused = stack.run_init(MQTT_SIMULATOR_PASSWORD=changed)
    assert refused.returncode == 1
    assert "docker compose run --rm init sh /opt/pilot/init.sh --rotate" in refused.stderr
    assert changed not in refused.stdout + refused.stderr
    rotated = stack.run_init("--rotate", MQTT_SIMULATOR_PASSWORD=changed)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    account = BrokerFiles(stack.local("init", "/srv/pilot/deploy/mosquitto/auth")).load().get("simulator")
    assert account is not None and verify_password(changed, account.password_hash)


def shell(command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", command], check=False, env=env, capture_output=True, timeout=60)


def healthcheck_command(service: str, port_in_container: int, port_here: int) -> str:
    """A CMD-SHELL or CMD health check as the container's shell would run it, on this machine's port."""
    test = services()[service]["healthcheck"]["test"]
    kind, *argv = test
    command = argv[0] if kind == "CMD-SHELL" else subprocess.list2cmdline(argv)
    return interpolate(command, {}).replace(str(port_in_container), str(port_here))  # "$$" is Compose's "$"


def test_the_brokers_health_check_logs_in_and_fails_with_a_wrong_password(stack: Stack) -> None:
    assert stack.broker is not None
    command = healthcheck_command("mosquitto", 1883, stack.broker.port)
    container_env = environment(services()["mosquitto"], stack.env)
    run = {"PATH": os.environ["PATH"]}
    healthy = shell(command, {**run, **container_env})
    assert healthy.returncode == 0, healthy.stderr
    wrong = {**container_env, "MQTT_HEALTHCHECK_PASSWORD": "not-the-password-0123456789"}
    unhealthy = shell(command, {**run, **wrong})
    assert unhealthy.returncode != 0
    with pytest.raises(MqttConnectError, match="Not authorized"):  # nobody gets in without an account
        new = new_client(MqttSettings(port=stack.broker.port), "anonymous")
        connect_and_wait(new, MqttSettings(port=stack.broker.port))


def test_the_collectors_account_writes_its_heartbeat_and_dead_letters_and_nothing_else(stack: Stack) -> None:
    collector_env = environment(services()["collector"], stack.env)
    client = Client(stack.mqtt("collector"), "acl-check")
    heartbeat = heartbeat_topic(collector_env["PILOT_CLIENT_ID"])
    client.subscribe(heartbeat)
    assert client.publish(heartbeat) < 0x80
    client.wait_for(heartbeat)  # the watchdog's round trip
    dead_letter = f"{collector_env['PILOT_DEAD_LETTER_TOPIC']}/{SITE}/{LINE}/{DEVICE}/telemetry"
    assert client.publish(dead_letter) < 0x80
    for forbidden in (heartbeat_topic("another-collector"), topic_for(SITE, LINE, DEVICE, "telemetry")):
        assert client.publish(forbidden) == NOT_AUTHORIZED, forbidden
    client.close()
    # The publisher may write any device's topic, and nothing of the collector's.
    simulator = Client(stack.mqtt("simulator-backfill"), "acl-check-simulator")
    assert simulator.publish(topic_for(SITE, LINE, DEVICE, "telemetry")) < 0x80
    assert simulator.publish(heartbeat) == NOT_AUTHORIZED
    assert simulator.publish(dead_letter) == NOT_AUTHORIZED
    simulator.close()


def test_the_collector_as_configured_collects_the_simulators_messages_through_a_shared_subscription(
    stack: Stack, influx_settings: InfluxSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert stack.broker is not None
    for name in list(os.environ):
        if name.upper().startswith("PILOT_"):
            monkeypatch.delenv(name)
    for key, value in environment(services()["collector"], stack.env).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    configured = CollectorSettings.load()
    metrics_port = local_services.free_port()
    settings = configured.model_copy(
        update={
            "mqtt": configured.mqtt.model_copy(update={"host": "127.0.0.1", "port": stack.broker.port}),
            "influx": configured.influx.model_copy(
                update={"url": influx_settings.url, "database": influx_settings.database}
            ),
            "devices_file": stack.local("collector", str(configured.devices_file)),
            "spool_dir": tmp_path / "spool",
            "metrics_host": "127.0.0.1",
            "metrics_port": metrics_port,
            "flush_interval_s": 0.2,
            "share_group": "compose",  # scale-out: $share/compose/pilot/v1/+/+/+/+ with the same account
        }
    )
    registry = load_registry(settings.devices_file, load_profiles())
    ts = int(time.time() * 1000) - 3_600_000
    messages = [
        (
            topic_for(SITE, LINE, DEVICE, "telemetry"),
            json.dumps({"seq": seq, "ts": ts + seq * 1000, "metrics": {"tcp_speed": 800.0, "power": 400.0}}).encode(),
        )
        for seq in range(50)
    ]
    messages.append((topic_for(SITE, LINE, DEVICE, "telemetry"), b"not json"))
    with running_collector(settings, registry) as collector:
        # Its health check, as compose runs it, passes once it is connected.
        command = healthcheck_command("collector", 9464, metrics_port)
        check = shell(command.replace("python ", f"{sys.executable} ", 1))
        assert check.returncode == 0, check.stderr
        publish_all(stack.mqtt("simulator-backfill"), messages, "pilot-simulator-pangyo_cobot_cell")
        with InfluxClient(influx_settings) as influx:
            wait_until(lambda: count_points(influx, "telemetry_cobot_arm") == 50, what="50 points in InfluxDB")
        # The bad message's dead letter was accepted by the broker: only then is the message acknowledged.
        wait_until(
            lambda: collector.metrics.rejected.labels("malformed_json")._value.get() == 1 and collector.backlog == 0,
            what="the bad message dead-lettered and everything acknowledged",
        )
        assert collector.metrics.batches.labels("dead_letter_failed")._value.get() == 0
    assert yaml.safe_load(settings.devices_file.read_text(encoding="utf-8"))["devices"]
