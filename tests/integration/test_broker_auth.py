"""Accounts made by `pilot devices`, enforced by a real Mosquitto: each device publishes only under its
own topic, wrong credentials are refused, and the collector's service account collects end to end."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from adapters import local_services
from adapters.broker_accounts import BrokerFiles, new_password_hash
from adapters.catalog import load_profiles, load_registry
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttConnectError, MqttSettings, connect_and_wait, new_client
from pilot.cli import app
from pilot_core.contract import topic_for
from tests.support import (
    collector_settings,
    count_points,
    publish_all,
    publish_for_reason_codes,
    running_collector,
    subscribed_client,
    wait_until,
)
from tests.support import run_pilot as pilot

TS = 1_793_600_000_000
SITE, LINE = "판교", "조립 1라인"
OWN, OTHER = "cobot 01", "cobot-02"  # a space in an id, on purpose
NOT_AUTHORIZED = 135


@dataclass
class SecuredLine:
    broker: local_services.LocalService
    files: BrokerFiles
    devices_file: Path
    passwords: dict[str, str] = field(default_factory=dict)  # username → password

    def settings(self, username: str, password: str | None = None) -> MqttSettings:
        secret = password if password is not None else self.passwords[username]
        return MqttSettings(port=self.broker.port, username=username, password=SecretStr(secret))

    def provision(self, device: str, *extra: str) -> str:
        created = pilot(
            "devices", "provision", device, "--site", SITE, "--line", LINE, "--profile", "conveyor",
            "--devices", str(self.devices_file), "--broker-dir", str(self.files.folder), "--json", *extra,
        )  # fmt: skip
        self.passwords[created["username"]] = created["password"]
        return str(created["username"])


@pytest.fixture
def line(tmp_path: Path) -> Iterator[SecuredLine]:
    files = BrokerFiles(tmp_path / "auth")
    secured = SecuredLine(local_services.LocalService("unused", tmp_path, 0, []), files, tmp_path / "devices.yaml")
    secured.provision(OWN)
    secured.provision(OTHER)
    # One account per collector process: the broker makes the username the client id.
    for name, role in [("collector-a", "collector"), ("collector-b", "collector"), ("simulator", "publisher")]:
        created = pilot("devices", "service-account", name, "--role", role, "--broker-dir", str(files.folder), "--json")
        secured.passwords[name] = created["password"]
    # Test-only: a reader of the data and the dead letters, to see what the broker lets through.
    files.password_file.write_text(
        files.password_file.read_text(encoding="utf-8") + f"watcher:{new_password_hash('watch')}\n", encoding="utf-8"
    )
    files.acl_file.write_text(
        files.acl_file.read_text(encoding="utf-8")
        + "user watcher\ntopic read pilot/deadletter/v1/#\ntopic read pilot/v1/#\n",
        encoding="utf-8",
    )
    secured.passwords["watcher"] = "watch"
    secured.broker = local_services.mosquitto(
        tmp_path / "mosquitto", password_file=files.password_file, acl_file=files.acl_file
    )
    secured.broker.start()
    yield secured
    secured.broker.stop()


class Watcher:
    """A subscriber that records every message it is delivered."""

    def __init__(self, settings: MqttSettings, client_id: str, subscription: str) -> None:
        self.topics: list[str] = []
        self._client = subscribed_client(
            settings, client_id, [subscription], lambda client, userdata, message: self.topics.append(message.topic)
        )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def telemetry(device: str, seq: int) -> tuple[str, bytes]:
    payload = {"seq": seq, "ts": TS + seq * 1000, "metrics": {"belt_speed": 1.0, "jam_detected": False}}
    return topic_for(SITE, LINE, device, "telemetry"), json.dumps(payload).encode()


def test_a_device_publishing_to_another_devices_topic_is_refused_and_nothing_lands(
    line: SecuredLine, influx_settings: InfluxSettings, unique_id: str
) -> None:
    own_user = f"{SITE}/{LINE}/{OWN}"
    registry = load_registry(line.devices_file, load_profiles())
    assert len(registry) == 2
    watcher = Watcher(line.settings("watcher"), f"{unique_id}-watch", "pilot/v1/#")
    settings = collector_settings(line.settings("collector-a"), influx_settings, "collector-a")
    with running_collector(settings, registry), InfluxClient(influx_settings) as influx:
        device = new_client(line.settings(own_user), f"{unique_id}-device")
        own_first, forged, own_last = publish_for_reason_codes(
            device,
            line.settings(own_user),
            [telemetry(OWN, 0), telemetry(OTHER, 0), telemetry(OWN, 1)],  # the second pretends to be the other device
        )
        assert forged == NOT_AUTHORIZED  # MQTT 5: the PUBACK carries the refusal
        assert own_first < 0x80 and own_last < 0x80
        device.disconnect()
        device.loop_stop()

        own_topic, other_topic = telemetry(OWN, 0)[0], telemetry(OTHER, 0)[0]
        # The broker delivers one client's messages in order: once the last has come, the forged one never will.
        wait_until(lambda: watcher.topics.count(own_topic) == 2, what="both of the device's own messages")
        assert other_topic not in watcher.topics
        wait_until(lambda: count_points(influx, "telemetry_conveyor") == 2, what="the own messages in InfluxDB")
        assert count_points(influx, "telemetry_conveyor", where=f"\"device\" = '{OTHER}'") == 0
    watcher.close()


def test_wrong_credentials_are_refused_with_a_clear_error(line: SecuredLine, unique_id: str) -> None:
    own_user = f"{SITE}/{LINE}/{OWN}"
    for settings in (line.settings(own_user, "not the password"), line.settings("nobody", "x")):
        with pytest.raises(MqttConnectError, match=r"refused the connection: Not authorized \(we connected as") as e:
            connect_and_wait(new_client(settings, unique_id), settings)
        assert "not the password" not in str(e.value)
    anonymous = MqttSettings(port=line.broker.port)
    with pytest.raises(MqttConnectError, match=r"without a username: check mqtt\.username and mqtt\.password"):
        connect_and_wait(new_client(anonymous, unique_id), anonymous)


def test_rotate_and_revoke_take_effect_when_the_broker_reloads(line: SecuredLine, unique_id: str) -> None:
    own_user = f"{SITE}/{LINE}/{OWN}"
    old = line.passwords[own_user]
    result = CliRunner().invoke(
        app, ["devices", "provision", OWN, "--site", SITE, "--line", LINE, "--profile", "conveyor",
              "--devices", str(line.devices_file), "--broker-dir", str(line.files.folder)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "already has broker credentials; pass --rotate" in result.output
    line.provision(OWN, "--rotate")
    line.broker.reload()

    def refused(password: str) -> bool:
        client = new_client(line.settings(own_user, password), unique_id)
        try:
            connect_and_wait(client, line.settings(own_user, password))
        except MqttConnectError:
            return True
        client.disconnect()
        client.loop_stop()
        return False

    wait_until(lambda: refused(old), 10, "the old password refused after the reload")
    assert not refused(line.passwords[own_user])
    connected = new_client(line.settings(own_user), f"{unique_id}-connected")
    dropped = threading.Event()
    connected.on_disconnect = lambda *args: dropped.set()
    connect_and_wait(connected, line.settings(own_user))
    pilot("devices", "revoke", OWN, "--site", SITE, "--line", LINE, "--broker-dir", str(line.files.folder))
    line.broker.reload()
    assert dropped.wait(10)  # Mosquitto drops a connected client whose account is gone
    connected.loop_stop()
    wait_until(lambda: refused(line.passwords[own_user]), 10, "the revoked device refused")
    # The registry keeps the device (its data stays readable) unless asked to forget it.
    assert len(load_registry(line.devices_file, load_profiles())) == 2


def test_the_collector_account_collects_through_a_shared_subscription_and_writes_dead_letters(
    line: SecuredLine, influx_settings: InfluxSettings, unique_id: str
) -> None:
    registry = load_registry(line.devices_file, load_profiles())
    dead_letters = Watcher(line.settings("watcher"), f"{unique_id}-dead", "pilot/deadletter/v1/#")
    members = [
        collector_settings(line.settings(name), influx_settings, name, share_group=f"g-{unique_id}")
        for name in ("collector-a", "collector-b")
    ]
    with running_collector(members[0], registry) as a, running_collector(members[1], registry) as b:
        own_user = f"{SITE}/{LINE}/{OWN}"
        messages = [telemetry(OWN, seq) for seq in range(200)]
        messages.append((telemetry(OWN, 0)[0], b"not json"))
        publish_all(line.settings(own_user), messages, f"{unique_id}-device")
        # A publisher (simulators, backfills) may write any device's topic.
        publish_all(line.settings("simulator"), [telemetry(OTHER, seq) for seq in range(10)], f"{unique_id}-sim")
        with InfluxClient(influx_settings) as influx:
            wait_until(lambda: count_points(influx, "telemetry_conveyor") == 210, what="210 points in InfluxDB")
        wait_until(lambda: len(dead_letters.topics) == 1, what="the dead letter")
        assert dead_letters.topics == [f"pilot/deadletter/v1/{SITE}/{LINE}/{OWN}/telemetry"]
        shares = [c.metrics.received._value.get() for c in (a, b)]
        assert sum(shares) == 211 and min(shares) > 0  # both members took part
    dead_letters.close()


def test_the_edge_agent_connects_with_its_credentials(
    line: SecuredLine, influx_settings: InfluxSettings, unique_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_user = f"{SITE}/{LINE}/{OWN}"
    registry = load_registry(line.devices_file, load_profiles())
    settings = collector_settings(line.settings("collector-a"), influx_settings, "collector-a")
    with running_collector(settings, registry), InfluxClient(influx_settings) as influx:
        monkeypatch.setenv("PILOT_MQTT__PORT", str(line.broker.port))
        monkeypatch.setenv("PILOT_MQTT__USERNAME", own_user)
        monkeypatch.setenv("PILOT_MQTT__PASSWORD", line.passwords[own_user])
        where = ["--site", SITE, "--line", LINE, "--profile", "conveyor", "--outbox", str(tmp_path / "outbox")]
        result = CliRunner().invoke(app, ["agent", OWN, *where, "--count", "20", "--interval-s", "0.01"])
        assert result.exit_code == 0, result.output
        assert "recorded 20 samples; 0 still in the outbox" in result.output
        assert line.passwords[own_user] not in result.output
        wait_until(
            lambda: count_points(influx, "telemetry_conveyor") == 20 and count_points(influx, "status") >= 1,
            what="the agent's samples and birth in InfluxDB",
        )


def test_a_dead_letter_the_broker_refuses_leaves_its_message_unacknowledged(
    line: SecuredLine, influx_settings: InfluxSettings, unique_id: str
) -> None:
    """A PUBACK that refuses is not a stored dead letter: the refused message must come again, not be lost."""
    registry = load_registry(line.devices_file, load_profiles())
    collector_mqtt = line.settings("collector-a")
    dead_letters = Watcher(line.settings("watcher"), f"{unique_id}-dead", "pilot/deadletter/v1/#")
    denied = collector_settings(collector_mqtt, influx_settings, "collector-a", dead_letter_topic="pilot/denied/v1")
    own_user = f"{SITE}/{LINE}/{OWN}"
    with running_collector(denied, registry) as collector:
        publish_all(line.settings(own_user), [telemetry(OWN, 0), (telemetry(OWN, 1)[0], b"not json")], unique_id)
        wait_until(
            lambda: collector.metrics.batches.labels("dead_letter_failed")._value.get() >= 1,
            what="the refused dead letter noticed",
        )
    assert dead_letters.topics == []
    # The same session, now allowed to write its dead letters: the broker delivers the batch again.
    allowed = denied.model_copy(update={"dead_letter_topic": "pilot/deadletter/v1"})
    with running_collector(allowed, registry):
        wait_until(lambda: len(dead_letters.topics) == 1, what="the dead letter, on the second try")
        with InfluxClient(influx_settings) as influx:
            wait_until(lambda: count_points(influx, "telemetry_conveyor") == 1, what="the valid point, once")
    dead_letters.close()


def test_a_dead_letter_refused_until_the_acl_allows_it_is_sent_again_on_the_same_connection(
    line: SecuredLine, influx_settings: InfluxSettings, unique_id: str
) -> None:
    """Issue 16, defect 3: a batch whose dead letter failed waited, unacknowledged and out of the backlog, for the
    next session. It is retried while the connection stays up, and counts in the backlog until it is done."""
    registry = load_registry(line.devices_file, load_profiles())
    denied_root = "pilot/denied/v1"
    dead_letters = Watcher(line.settings("watcher"), f"{unique_id}-dead", f"{denied_root}/#")
    settings = collector_settings(
        line.settings("collector-a"), influx_settings, "collector-a", dead_letter_topic=denied_root
    )
    own_user = f"{SITE}/{LINE}/{OWN}"
    with running_collector(settings, registry) as collector:
        publish_all(line.settings(own_user), [telemetry(OWN, 0), (telemetry(OWN, 1)[0], b"not json")], unique_id)
        wait_until(
            lambda: collector.metrics.batches.labels("dead_letter_failed")._value.get() >= 1,
            what="the refused dead letter noticed",
        )
        assert collector.backlog == 2  # neither message is acknowledged yet
        assert collector.metrics.registry.get_sample_value("pilot_collector_healthy") == 0.0
        # The operator lets the collector's account write there (and the watcher read it), and reloads the broker.
        line.files.acl_file.write_text(
            line.files.acl_file.read_text(encoding="utf-8")
            + f"user collector-a\ntopic write {denied_root}/#\nuser watcher\ntopic read {denied_root}/#\n",
            encoding="utf-8",
        )
        line.broker.reload()
        wait_until(lambda: len(dead_letters.topics) == 1, what="the dead letter, sent again on the same connection")
        wait_until(lambda: collector.backlog == 0, what="both messages acknowledged")
        with InfluxClient(influx_settings) as influx:
            wait_until(lambda: count_points(influx, "telemetry_conveyor") == 1, what="the valid point, once")
        assert collector.metrics.batches.labels("written")._value.get() == 1
        assert collector.metrics.registry.get_sample_value("pilot_collector_healthy") == 1.0
    dead_letters.close()
