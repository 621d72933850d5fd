"""MQTT connections (paho-mqtt 2, MQTT 5) configured one way for every service."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, SecretStr


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = 30
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class MqttConnectError(ConnectionError):
    pass


def new_client(settings: MqttSettings, client_id: str, *, manual_ack: bool = False) -> paho.Client:
    """A paho client speaking MQTT 5, not yet connected."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.ca_file or settings.cert_file:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        if settings.cert_file:
            context.load_cert_chain(str(settings.cert_file), str(settings.key_file) if settings.key_file else None)
        client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect_properties(persistent_session_s: int | None, receive_maximum: int | None = None) -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    if persistent_session_s:
        properties.SessionExpiryInterval = persistent_session_s
    if receive_maximum:
        # How many unacknowledged QoS 1 messages the broker may have in flight to us.
        properties.ReceiveMaximum = receive_maximum
    return properties


def connect_and_wait(
    client: paho.Client,
    settings: MqttSettings,
    *,
    persistent_session_s: int | None = None,
    receive_maximum: int | None = None,
    timeout_s: float = 10.0,
) -> None:
    """Connect, start the network thread and wait for CONNACK (or fail clearly).

    ``persistent_session_s`` keeps the session (subscriptions and queued QoS 1
    messages) on the broker for that long after a disconnect.
    """
    connected = threading.Event()
    failure: list[str] = []
    previous: Callable[..., None] | None = client.on_connect

    def on_connect(c: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            failure.append(str(reason))
        connected.set()
        if previous is not None:
            previous(c, userdata, flags, reason, props)

    client.on_connect = on_connect
    try:
        client.connect(
            settings.host,
            settings.port,
            keepalive=settings.keepalive_s,
            clean_start=not persistent_session_s,
            properties=connect_properties(persistent_session_s, receive_maximum),
        )
    except OSError as exc:
        raise MqttConnectError(f"cannot reach the MQTT broker at {settings.address}: {exc}") from None
    client.loop_start()
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise MqttConnectError(f"the MQTT broker at {settings.address} did not answer within {timeout_s:g} s")
    if failure:
        client.loop_stop()
        raise MqttConnectError(f"the MQTT broker at {settings.address} refused the connection: {failure[0]}")
