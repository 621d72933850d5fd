"""Publishing simulated messages over MQTT, as the devices would.

QoS 1 with a bounded window of unacknowledged messages, so that memory stays
flat however many messages a backfill sends. In real time, each message
waits until its timestamp comes round (optionally sped up).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import paho.mqtt.client as paho

from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from simulators.line_model import SimMessage

PUBACK_TIMEOUT_S = 60.0


@dataclass
class PublishReport:
    messages: int = 0
    records: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class PublishError(RuntimeError):
    pass


def publish(
    settings: MqttSettings,
    messages: Iterable[SimMessage],
    *,
    client_id: str = "pilot-simulator",
    window: int = 1000,
    realtime: bool = False,
    speed: float = 1.0,
    progress: Callable[[PublishReport], None] | None = None,
    progress_every: int = 1000,
    stop: threading.Event | None = None,
) -> PublishReport:
    """Publish every message with QoS 1 and wait until the broker has acknowledged all of them.

    ``realtime`` paces messages by their timestamps (``speed`` > 1 runs faster than the wall clock).
    """
    client = new_client(settings, client_id)
    client.max_inflight_messages_set(min(window, 65535))
    client.max_queued_messages_set(0)
    slots = threading.Semaphore(window)
    client.on_publish = lambda *_: slots.release()
    connect_and_wait(client, settings)
    report = PublishReport()
    started = time.monotonic()
    first_ts: int | None = None
    try:
        for message in messages:
            if stop is not None and stop.is_set():
                break
            if realtime:
                first_ts = message.ts_ms if first_ts is None else first_ts
                due = started + (message.ts_ms - first_ts) / 1000 / speed
                _sleep_until(due, stop)
            if not slots.acquire(timeout=PUBACK_TIMEOUT_S):
                raise PublishError(f"the broker at {settings.address} acknowledged nothing for {PUBACK_TIMEOUT_S:g} s")
            info = client.publish(message.topic, message.payload, qos=1)
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                # NO_CONN: paho queues it and sends it after reconnecting.
                raise PublishError(f"publish to {message.topic} failed: {paho.error_string(info.rc)}")
            report.messages += 1
            report.records += message.records
            if progress is not None and report.messages % progress_every == 0:
                report.seconds = time.monotonic() - started
                progress(report)
        _drain(slots, window, settings)
    finally:
        report.seconds = time.monotonic() - started
        client.disconnect()
        client.loop_stop()
    return report


def _drain(slots: threading.Semaphore, window: int, settings: MqttSettings) -> None:
    """Wait until every message has been acknowledged (all slots are back)."""
    for _ in range(window):
        if not slots.acquire(timeout=PUBACK_TIMEOUT_S):
            raise PublishError(f"the broker at {settings.address} did not acknowledge the last messages")


def _sleep_until(due: float, stop: threading.Event | None) -> None:
    delay = due - time.monotonic()
    if delay > 0:
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)
