"""Sparkplug B with the broker accounts `pilot devices` makes, enforced by a real Mosquitto configured as shipped
(password file, ACL, use_username_as_clientid): a pysparkplug edge node with its own account feeds the collector,
a Sparkplug host with its own, end to end; the host's rebirth NCMD reaches the node; and the node cannot speak for
another edge node or group."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pysparkplug as spb
import pytest
import yaml
from pydantic import SecretStr

from adapters import local_services
from adapters.broker_accounts import BrokerFiles, new_password_hash
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings, new_client
from tests.integration.test_sparkplug import DEAD_ROOT, DEVICE, T0, Watcher, birth_metrics, host_settings, registry
from tests.support import count_points, publish_for_reason_codes, running_collector, wait_until
from tests.support import run_pilot as pilot

pytestmark = pytest.mark.filterwarnings("ignore:Callback API version 1 is deprecated:DeprecationWarning")

NOT_AUTHORIZED = 135
GROUP, NODE, HOST = "plant-a", "line3", "pilot-collector"


@dataclass
class SecuredSparkplug:
    broker: local_services.LocalService
    node_user: str
    node_password: str
    host_password: str

    def mqtt(self, username: str, password: str) -> MqttSettings:
        return MqttSettings(port=self.broker.port, username=username, password=SecretStr(password))


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredSparkplug]:
    files = BrokerFiles(tmp_path / "auth")
    auth = ["--broker-dir", str(files.folder)]
    config = tmp_path / "pilot.yaml"  # the collector's configuration, from which its account's grants follow
    sparkplug = {"enabled": True, "host_id": f"host-{HOST}", "groups": [GROUP]}
    config.write_text(yaml.safe_dump({"sparkplug": sparkplug, "dead_letter_topic": DEAD_ROOT}), encoding="utf-8")
    host = pilot("devices", "service-account", HOST, "--role", "collector", "--config", str(config), "--json", *auth)
    node = pilot("devices", "sparkplug-node", NODE, "--group", GROUP, "--json", *auth)
    # Test-only: a reader of every Sparkplug topic and the dead letters, to see what the broker lets through.
    files.password_file.write_text(
        files.password_file.read_text(encoding="utf-8") + f"watcher:{new_password_hash('watch')}\n", encoding="utf-8"
    )
    files.acl_file.write_text(
        files.acl_file.read_text(encoding="utf-8") + f"user watcher\ntopic read spBv1.0/#\ntopic read {DEAD_ROOT}/#\n",
        encoding="utf-8",
    )
    broker = local_services.mosquitto(
        tmp_path / "mosquitto", password_file=files.password_file, acl_file=files.acl_file
    )
    broker.start()
    yield SecuredSparkplug(broker, node["username"], node["password"], host["password"])
    broker.stop()


def test_an_edge_node_with_its_account_feeds_the_host_with_its_account_and_answers_its_rebirth_request(
    secured: SecuredSparkplug, influx_settings: InfluxSettings, unique_id: str
) -> None:
    host_mqtt = secured.mqtt(HOST, secured.host_password)
    settings = host_settings(host_mqtt, influx_settings, GROUP, NODE, HOST)
    assert settings.sparkplug.host_id == f"host-{HOST}"  # the account was made from this same configuration
    asked = threading.Event()

    def on_command(_node: spb.EdgeNode, message: spb.Message) -> None:
        if any(m.name == "Node Control/Rebirth" and m.value for m in getattr(message.payload, "metrics", ())):
            asked.set()

    # The node sends a client id of its own; the broker replaces it with the username, which nothing here minds.
    client = spb.Client(client_id=f"ignored-{unique_id}", username=secured.node_user, password=secured.node_password)
    edge = spb.EdgeNode(GROUP, NODE, [], client=client, cmd_callback=on_command)
    edge.register(spb.Device(DEVICE, birth_metrics()))
    # One watcher account, so one connection: the broker would drop a second one with the same client id.
    watcher = Watcher(secured.mqtt("watcher", "watch"), "watcher", "spBv1.0/#", f"{DEAD_ROOT}/#")
    edge.connect(secured.broker.host, port=secured.broker.port)  # births before the host runs: missed
    wait_until(lambda: len(watcher.on(f"spBv1.0/{GROUP}/DBIRTH/{NODE}/{DEVICE}")) == 1, what="the node's births")

    def dead_reasons() -> list[str]:
        with watcher._lock:
            return [json.loads(p)["reason"] for t, p, _ in watcher.messages if t.startswith(DEAD_ROOT)]

    try:
        with running_collector(settings, registry(GROUP, NODE)), InfluxClient(influx_settings) as influx:
            edge.update_device(DEVICE, [spb.Metric(T0 + 5, "belt_speed", spb.DataType.DOUBLE, value=2.0)])
            # The host may write this node's NCMD, and the node may read it.
            assert asked.wait(15), "the rebirth request never reached the edge node"
            wait_until(lambda: "sparkplug_no_birth" in dead_reasons(), what="the data before any birth, dead-lettered")
            edge.disconnect()
            edge.connect(secured.broker.host, port=secured.broker.port)  # the node's answer: births again
            wait_until(lambda: count_points(influx, "status", "online") >= 1, what="the births, received")
            for offset, speed in ((10, 2.5), (20, 3.0)):
                edge.update_device(DEVICE, [spb.Metric(T0 + offset, "belt_speed", spb.DataType.DOUBLE, value=speed)])
            wait_until(lambda: count_points(influx, "telemetry_conveyor", "belt_speed") >= 3, what="the speeds")
            series = influx.query('SELECT belt_speed FROM "telemetry_conveyor" ORDER BY time')
            landed = [(r["time"], r["belt_speed"]) for r in series[0].rows()]
            # The rebirth carries the node's current values: the speed the host could not take before it.
            assert landed == [(T0 + 5, 2.0), (T0 + 10, 2.5), (T0 + 20, 3.0)]
            # The node's account may read the host's retained STATE: a node waits for its primary host.
            states: list[str] = []
            mqtt = edge._client._client
            mqtt.message_callback_add("spBv1.0/STATE/+", lambda c, u, message: states.append(message.topic))
            mqtt.subscribe("spBv1.0/STATE/+", qos=1)
            wait_until(lambda: f"spBv1.0/STATE/host-{HOST}" in states, what="the host's STATE, read by the node")
    finally:
        edge.disconnect()
        watcher.close()


def test_an_edge_node_account_cannot_publish_as_another_edge_node_or_group(
    secured: SecuredSparkplug, unique_id: str
) -> None:
    watcher = Watcher(secured.mqtt("watcher", "watch"), "watcher", "spBv1.0/#")
    node_mqtt = secured.mqtt(secured.node_user, secured.node_password)
    node = new_client(node_mqtt, f"{unique_id}-node")
    topics = [
        f"spBv1.0/{GROUP}/NDATA/{NODE}",  # its own: allowed
        f"spBv1.0/{GROUP}/NDATA/line4",  # another edge node of its group
        f"spBv1.0/plant-b/NDATA/{NODE}",  # its edge node id in another group
        f"spBv1.0/{GROUP}/DDATA/line4/{DEVICE}",  # another node's device
        f"spBv1.0/{GROUP}/NCMD/line4",  # a command, which only a host sends
        f"spBv1.0/STATE/host-{HOST}",  # the host's STATE
        f"spBv1.0/{GROUP}/DDATA/{NODE}/{DEVICE}",  # its own device: allowed
    ]
    codes = publish_for_reason_codes(node, node_mqtt, [(topic, b"\x08\x01") for topic in topics])
    assert codes[0] < 0x80 and codes[-1] < 0x80
    assert codes[1:-1] == [NOT_AUTHORIZED] * (len(topics) - 2)  # MQTT 5: each PUBACK carries the refusal
    # The broker delivers one client's messages in order: once the last has come, the refused ones never will.
    wait_until(lambda: topics[-1] in [t for t, _, _ in watcher.messages], what="the node's own device data")
    assert [t for t, _, _ in watcher.messages] == [topics[0], topics[-1]]
    node.disconnect()
    node.loop_stop()
    watcher.close()
