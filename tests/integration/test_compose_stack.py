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


def collector_as_configured(
    stack: Stack, influx_settings: InfluxSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **update: Any
) -> CollectorSettings:
    """The collector's settings as docker-compose.yml gives them, pointed at the broker and InfluxDB here."""
    assert stack.broker is not None
    for name in list(os.environ):
        if name.upper().startswith("PILOT_"):
            monkeypatch.delenv(name)
    for key, value in environment(services()["collector"], stack.env).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    configured = CollectorSettings.load()
    return configured.model_copy(
        update={
            "mqtt": configured.mqtt.model_copy(update={"host": "127.0.0.1", "port": stack.broker.port}),
            "influx": configured.influx.model_copy(
                update={"url": influx_settings.url, "database": influx_settings.database}
            ),
            "devices_file": stack.local("collector", str(configured.devices_file)),
            "spool_dir": tmp_path / "spool",
            "metrics_host": "127.0.0.1",
            "metrics_port": local_services.free_port(),
            "flush_interval_s": 0.2,
            **update,
        }
    )


def test_the_collector_as_configured_collects_the_simulators_messages_through_a_shared_subscription(
    stack: Stack, influx_settings: InfluxSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # scale-out: $share/compose/pilot/v1/+/+/+/+
    settings = collector_as_configured(stack, influx_settings, monkeypatch, tmp_path, share_group="compose")
    metrics_port = settings.metrics_port
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


# --- the broker crashing, and a device after the collector's session ---------------------------------------------

# What README ("No loss") and docs/deploy.md promise: a crash of the broker as shipped loses at most this many of
# the messages queued for a disconnected session, the last ones (autosave_on_changes, autosave_interval 1000).
DOCUMENTED_CRASH_LOSS = 999


class SessionReader:
    """The collector's account reading pilot/v1/# with a persistent session, recording each payload's seq."""

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.seqs: list[int] = []
        self.marker = threading.Event()
        self._client = new_client(settings, "the-broker-makes-this-the-username")
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: subscribed.set()
        connect_and_wait(self._client, settings, persistent_session_s=3600)
        self._client.subscribe("pilot/v1/#", qos=1)
        assert subscribed.wait(10)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        seq = json.loads(message.payload)["seq"]
        if seq < 0:
            self.marker.set()
        else:
            self.seqs.append(seq)

    def leave(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def come_back(self) -> bool:
        """Connect again; whether the broker still had the session (else subscribe anew, to see the marker)."""
        present: list[bool] = []
        self._client.on_connect = lambda client, userdata, flags, *rest: present.append(flags.session_present)
        connect_and_wait(self._client, self.settings, persistent_session_s=3600)
        if not present[0]:
            subscribed = threading.Event()
            self._client.on_subscribe = lambda *args: subscribed.set()
            self._client.subscribe("pilot/v1/#", qos=1)
            assert subscribed.wait(10)
        return present[0]


def numbered(count: int, start: int = 0) -> list[tuple[str, bytes]]:
    ts = int(time.time() * 1000) - 3_600_000
    return [
        (
            topic_for(SITE, LINE, DEVICE, "telemetry"),
            json.dumps({"seq": seq, "ts": ts + seq * 1000, "metrics": {"tcp_speed": 800.0, "power": 400.0}}).encode(),
        )
        for seq in range(start, start + count)
    ]


def test_a_broker_crash_loses_at_most_what_the_docs_state(stack: Stack) -> None:
    assert stack.broker is not None
    for document in (ROOT / "README.md", ROOT / "docs/deploy.md"):
        assert f"{DOCUMENTED_CRASH_LOSS} " in document.read_text(encoding="utf-8"), document
    reader = SessionReader(stack.mqtt("collector"))
    reader.leave()  # the collector stopped: the broker queues for it
    sent = 5_000
    publish_all(stack.mqtt("simulator-backfill"), numbered(sent), "simulator")  # every one acknowledged
    stack.broker.kill()  # kill -9
    stack.broker.start()
    session_kept = reader.come_back()
    # Queued messages come in order, before anything published after the restart: the marker comes last.
    publish_all(stack.mqtt("simulator-backfill"), [(numbered(1)[0][0], b'{"seq": -1}')], "simulator")
    assert reader.marker.wait(30), "the marker published after the restart never came"
    reader.leave()
    kept = len(reader.seqs)
    assert reader.seqs == list(range(kept)), "what survived is not the first messages, in order"
    lost = sent - kept
    assert lost <= DOCUMENTED_CRASH_LOSS, f"the crash lost {lost} of {sent} acknowledged messages"
    assert session_kept


def provision_device(stack: Stack) -> MqttSettings:
    """cobot-01's own account, made with `pilot devices` in the stack's broker folder, and the broker reloaded."""
    assert stack.broker is not None
    init = services()["init"]
    broker_dir = stack.local("init", str(Path(init["working_dir"]) / "deploy/mosquitto/auth"))
    registry = stack.local("init", environment(init, stack.env)["PILOT_DEVICES_FILE"])
    created = subprocess.run(
        [str(Path(sys.executable).parent / "pilot"), "devices", "provision", DEVICE, "--site", SITE, "--line", LINE,
         "--profile", "cobot_arm", "--devices", str(registry), "--broker-dir", str(broker_dir), "--json"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    account = json.loads(created.stdout)
    stack.broker.reload()
    return MqttSettings(
        host="127.0.0.1", port=stack.broker.port, username=account["username"], password=SecretStr(account["password"])
    )


def test_a_device_using_the_collectors_client_id_cannot_take_its_session(
    stack: Stack, influx_settings: InfluxSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Two collectors one after the other: no /metrics (the first one's server would still hold the port).
    settings = collector_as_configured(stack, influx_settings, monkeypatch, tmp_path, metrics_port=0)
    registry = load_registry(settings.devices_file, load_profiles())
    device = provision_device(stack)
    simulator = stack.mqtt("simulator-backfill")
    with running_collector(settings, registry):
        pass  # its session now exists, and outlives it
    # While the collector is away: 20 messages queue for it, then the device connects with its client id and a
    # clean start, which on a broker that trusts client ids deletes the collector's session and queue.
    publish_all(simulator, numbered(20), "simulator")
    intruder = new_client(device, settings.client_id)
    connect_and_wait(intruder, device)
    intruder.disconnect()
    intruder.loop_stop()
    with running_collector(settings, registry) as collector, InfluxClient(influx_settings) as influx:
        wait_until(lambda: count_points(influx, "telemetry_cobot_arm") == 20, what="the 20 queued messages")
        # While the collector runs: the device stays connected with the collector's client id (paho reconnects
        # it whenever it is kicked off) while 10 more messages come.
        intruder = new_client(device, settings.client_id)
        connect_and_wait(intruder, device)
        publish_all(simulator, numbered(10, start=20), "simulator")
        wait_until(lambda: count_points(influx, "telemetry_cobot_arm") == 30, what="the 10 messages sent meanwhile")
        assert intruder.is_connected()  # under its own client id, its username: nobody was kicked off
        assert collector.metrics.sessions_lost.labels("taken_over")._value.get() == 0
        assert collector.metrics.sessions_lost.labels("not_present")._value.get() == 0  # never kicked off
        assert collector.metrics.connected._value.get() == 1
        intruder.disconnect()
        intruder.loop_stop()


def test_the_collector_says_loudly_when_its_session_is_taken_over(
    stack: Stack,
    influx_settings: InfluxSettings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the collector's own account can take its session now: a second process started with it, by mistake.

    Mosquitto 2.0.11 closes the collector's connection without a DISCONNECT (newer brokers send reason 0x8E,
    tests/unit/test_intake_session_lost.py); the collector's reconnect then finds no session, and says so.
    """
    settings = collector_as_configured(stack, influx_settings, monkeypatch, tmp_path)
    registry = load_registry(settings.devices_file, load_profiles())
    with running_collector(settings, registry) as collector:
        second = new_client(stack.mqtt("collector"), "another-process")
        connect_and_wait(second, stack.mqtt("collector"))  # a clean start: the broker ends the collector's session
        lost = collector.metrics.sessions_lost
        wait_until(lambda: lost.labels("not_present")._value.get() >= 1, what="the lost session counted")
        second.disconnect()
        second.loop_stop()
        wait_until(lambda: collector.metrics.connected._value.get() == 1, what="the collector connected again")
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("MQTT SESSION LOST (not present)" in m and repr(settings.client_id) in m for m in messages), messages


def test_a_session_lost_while_the_collector_was_away_is_reported_when_it_starts(
    stack: Stack,
    influx_settings: InfluxSettings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = collector_as_configured(stack, influx_settings, monkeypatch, tmp_path, metrics_port=0)
    registry = load_registry(settings.devices_file, load_profiles())
    with running_collector(settings, registry) as first:
        assert first.metrics.sessions_lost.labels("not_present")._value.get() == 0  # a first start
    with running_collector(settings, registry) as second:
        assert second.metrics.sessions_lost.labels("not_present")._value.get() == 0  # its session was kept
    # Away, its session is ended: by a clean start with its own account (the only one that can now).
    other = new_client(stack.mqtt("collector"), "another-process")
    connect_and_wait(other, stack.mqtt("collector"))
    other.disconnect()
    other.loop_stop()
    with running_collector(settings, registry) as third:
        assert third.metrics.sessions_lost.labels("not_present")._value.get() == 1
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("MQTT SESSION LOST (not present)" in m and "when we last ran" in m for m in messages), messages
