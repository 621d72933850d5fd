"""The collector's MQTT intake connection against a real Mosquitto: flow control, acks, errors."""

from __future__ import annotations

import json
import threading
import time

import pytest

from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttConnectError, MqttSettings, connect_and_wait, new_client
from adapters.mqtt_intake import READ_SIZE, IntakeConnection
from adapters.mqtt_packets import Delivery, publish_packet
from collector.service import Collector
from pilot_core.contract import SUBSCRIPTION, topic_for
from tests.integration.test_durability import registry_of
from tests.support import collector_settings, count_points, publish_all, running_collector, wait_until

TS = 1_793_000_000_000


def conveyor_messages(site: str, line: str, device: str, count: int) -> list[tuple[str, bytes]]:
    topic = topic_for(site, line, device, "telemetry")
    return [
        (topic, json.dumps({"seq": n, "ts": TS + n, "metrics": {"belt_speed": 1.0}}).encode())
        for n in range(1, count + 1)
    ]


def prime_session(mqtt_settings: MqttSettings, client_id: str) -> None:
    """The collector's session exists, subscribed, before anything is published: the backlog queues for it."""
    primer = new_client(mqtt_settings, client_id)
    connect_and_wait(primer, mqtt_settings, persistent_session_s=600)
    primer.subscribe(SUBSCRIPTION, qos=1)
    time.sleep(0.5)
    primer.disconnect()
    primer.loop_stop()


class BacklogWatch(Collector):
    """A collector that notes the most it ever held unacknowledged."""

    most_held = 0

    def _on_deliveries(self, deliveries: list[Delivery]) -> None:
        super()._on_deliveries(deliveries)
        self.most_held = max(self.most_held, self.backlog)


def test_a_queued_backlog_drains_without_the_collector_holding_more_than_its_receive_maximum(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    site, line, device = "판교", "cell 2", unique_id
    settings = collector_settings(
        mqtt_settings, influx_settings, f"{unique_id}-c", batch_size=100, receive_maximum=300, max_clock_skew_s=0
    )
    prime_session(mqtt_settings, settings.client_id)
    messages = conveyor_messages(site, line, device, 12_000)
    publish_all(mqtt_settings, messages, f"{unique_id}-device")
    collector = BacklogWatch(settings, registry_of(site, line, device))
    collector.start()
    try:
        with InfluxClient(influx_settings) as client:
            wait_until(lambda: count_points(client, "telemetry_conveyor") == 12_000, what="the whole backlog")
        wait_until(lambda: collector.backlog == 0, what="every message acknowledged")
    finally:
        collector.stop()
    # Mosquitto sends past the Receive Maximum once PUBACKs flow; the collector stops reading instead.
    # The read that crossed the limit may come in on top of it.
    smallest = min(len(publish_packet(topic, payload, 1, 1)) for topic, payload in messages)
    assert collector.most_held <= 300 + READ_SIZE // smallest < 12_000, collector.most_held


def test_a_backlog_of_refused_messages_larger_than_the_receive_maximum_is_all_dead_lettered(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    # Reading is held at the receive maximum, but the dead letters' PUBACKs must still be read: the batch
    # waits for them before it can be acknowledged and make room.
    settings = collector_settings(
        mqtt_settings, influx_settings, f"{unique_id}-c", batch_size=100, receive_maximum=300, max_clock_skew_s=0
    )
    prime_session(mqtt_settings, settings.client_id)
    publish_all(mqtt_settings, conveyor_messages("판교", "cell 2", f"{unique_id}-unknown", 2000), f"{unique_id}-d")
    with running_collector(settings, registry_of("판교", "cell 2", unique_id)) as collector:
        wait_until(lambda: collector.metrics.rejected.labels("unknown_device")._value.get() == 2000, timeout_s=60,
                   what="every message dead-lettered")  # fmt: skip
        wait_until(lambda: collector.backlog == 0, what="every message acknowledged")


def test_what_is_acknowledged_is_not_delivered_again_and_what_is_not_comes_back(
    mqtt_settings: MqttSettings, unique_id: str
) -> None:
    client_id = f"{unique_id}-intake"
    received: list[Delivery] = []
    arrived = threading.Condition()

    def on_deliveries(deliveries: list[Delivery]) -> None:
        with arrived:
            received.extend(deliveries)
            arrived.notify_all()

    def session() -> IntakeConnection:
        return IntakeConnection(
            mqtt_settings, client_id, [(f"intake/{unique_id}/#", 1)], on_deliveries, session_expiry_s=600
        )

    def wait_for(count: int) -> None:
        with arrived:
            assert arrived.wait_for(lambda: len(received) >= count, timeout=10), len(received)

    connection = session()
    connection.start()
    try:
        publish_all(mqtt_settings, [(f"intake/{unique_id}/{n}", str(n).encode()) for n in range(10)], f"{unique_id}-p")
        wait_for(10)
        assert [d.payload for d in received] == [str(n).encode() for n in range(10)]
        first = list(received)
        assert all(d.qos == 1 and d.generation == connection.generation for d in first)
        assert connection.acknowledge(first[:6]) == 6
        time.sleep(0.3)  # the PUBACKs reach the broker before the connection goes
        received.clear()
        connection.cut()  # the session stays: the broker redelivers what was not acknowledged
        wait_for(4)
        time.sleep(0.5)  # and nothing more
        assert sorted(d.payload for d in received) == [b"6", b"7", b"8", b"9"]
        assert all(d.generation == first[0].generation + 1 for d in received)
        # A delivery of the first connection is not acknowledged on this one: its packet id means nothing here.
        assert connection.acknowledge(first[6:]) == 0
        assert connection.acknowledge(received) == 4
        assert connection.publish(f"intake/{unique_id}/echo", b"e", qos=1).wait(5)
        wait_for(5)
        assert received[-1].payload == b"e"
    finally:
        connection.close()


def test_a_broker_that_is_not_there_or_refuses_the_subscription_is_reported_clearly(
    mqtt_settings: MqttSettings, unique_id: str
) -> None:
    nowhere = MqttSettings(host="127.0.0.1", port=1)
    with pytest.raises(MqttConnectError, match=r"cannot reach the MQTT broker at 127\.0\.0\.1:1"):
        IntakeConnection(nowhere, unique_id, [("a/#", 1)], lambda deliveries: None).start(timeout_s=2)
    # '#' inside a filter is not a valid subscription: Mosquitto drops the connection instead of a SUBACK.
    with pytest.raises(MqttConnectError, match="instead of confirming the subscription to a/#/b"):
        IntakeConnection(mqtt_settings, unique_id, [("a/#/b", 1)], lambda deliveries: None).start(timeout_s=3)


def test_the_collector_keeps_collecting_after_the_broker_drops_its_connection(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    site, line, device = "시화", "line 1", unique_id
    settings = collector_settings(mqtt_settings, influx_settings, f"{unique_id}-c", max_clock_skew_s=0)
    messages = conveyor_messages(site, line, device, 200)
    with running_collector(settings, registry_of(site, line, device)) as collector:
        publish_all(mqtt_settings, messages[:100], f"{unique_id}-d1")
        collector._mqtt.cut()  # as a network failure would
        wait_until(lambda: collector.metrics.connected._value.get() == 1 and collector._mqtt.connected, what="back")
        publish_all(mqtt_settings, messages[100:], f"{unique_id}-d2")
        with InfluxClient(influx_settings) as client:
            wait_until(lambda: count_points(client, "telemetry_conveyor") == 200, what="all 200 points")


def test_a_failing_consumer_costs_a_reconnect_and_the_messages_come_again(
    mqtt_settings: MqttSettings, unique_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[bytes] = []
    calls = []

    def on_deliveries(deliveries: list[Delivery]) -> None:
        calls.append(len(deliveries))
        if len(calls) == 1:
            raise RuntimeError("a bug in the consumer")
        received.extend(d.payload for d in deliveries)
        connection.acknowledge(deliveries)

    connection = IntakeConnection(
        mqtt_settings, f"{unique_id}-c", [(f"bug/{unique_id}", 1)], on_deliveries, session_expiry_s=600
    )
    connection.start()
    try:
        publish_all(mqtt_settings, [(f"bug/{unique_id}", b"lost?")], f"{unique_id}-p")
        wait_until(lambda: received == [b"lost?"], what="the message again, after the reconnect")
        assert "unexpected error reading from the broker; reconnecting" in caplog.text
    finally:
        connection.close()
