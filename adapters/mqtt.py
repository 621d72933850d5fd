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

from adapters.tls import client_context, describe_tls_failure


class MqttSettings(BaseModel):
    # An error must not echo what was given: it may hold the password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = 30
    tls: bool = False  # also on whenever ca_file or cert_file is set
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.ca_file or self.cert_file)


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
    if settings.uses_tls:
        client.tls_set_context(client_context("mqtt", settings.ca_file, settings.cert_file, settings.key_file))
    elif settings.key_file:
        raise ValueError("mqtt.key_file is set without mqtt.cert_file")
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
    socket_errors: list[str] = []
    previous_connect: Callable[..., None] | None = client.on_connect
    previous_disconnect: Callable[..., None] | None = client.on_disconnect
    previous_log: Callable[..., None] | None = client.on_log

    def on_connect(c: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            failure.append(f"refused the connection: {reason}{refusal_hint(settings, reason)}")
        connected.set()
        if previous_connect is not None:
            previous_connect(c, userdata, flags, reason, props)

    def on_disconnect(c: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if not connected.is_set():  # closed before its CONNACK: usually TLS, after our handshake half
            failure.append(closed_early(settings, socket_errors))
            connected.set()
        if previous_disconnect is not None:
            previous_disconnect(c, userdata, flags, reason, props)

    def on_log(c: paho.Client, userdata: object, level: int, text: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            socket_errors.append(text)

    client.on_connect, client.on_disconnect, client.on_log = on_connect, on_disconnect, on_log
    try:
        try:
            client.connect(
                settings.host,
                settings.port,
                keepalive=settings.keepalive_s,
                clean_start=not persistent_session_s,
                properties=connect_properties(persistent_session_s, receive_maximum),
            )
        except ssl.SSLError as exc:
            raise MqttConnectError(
                f"TLS with the MQTT broker at {settings.address} failed: {describe_tls_failure('mqtt', exc)}"
            ) from None
        except OSError as exc:
            raise MqttConnectError(f"cannot reach the MQTT broker at {settings.address}: {exc}") from None
        client.loop_start()
        answered = connected.wait(timeout_s)
    finally:
        # Logging stays off afterwards: paho formats a line per packet for it.
        client.on_connect, client.on_disconnect, client.on_log = previous_connect, previous_disconnect, previous_log
    if not answered:
        client.loop_stop()
        raise MqttConnectError(f"the MQTT broker at {settings.address} did not answer within {timeout_s:g} s")
    if failure:
        client.loop_stop()
        raise MqttConnectError(f"the MQTT broker at {settings.address} {failure[0]}")


def refusal_hint(settings: MqttSettings, reason: object) -> str:
    if getattr(reason, "value", None) in (134, 135):  # bad user name or password, not authorized
        who = f"as {settings.username!r}" if settings.username else "without a username"
        return f" (we connected {who}: check mqtt.username and mqtt.password, and the broker's password file)"
    return ""


def closed_early(settings: MqttSettings, socket_errors: list[str]) -> str:
    detail = next((e for e in reversed(socket_errors) if "SSL" in e), socket_errors[-1] if socket_errors else "")
    if "CERTIFICATE_REQUIRED" in detail or (settings.uses_tls and not settings.cert_file):
        hint = "; it may require a client certificate (mqtt.cert_file and mqtt.key_file)"
    elif "UNKNOWN_CA" in detail or "BAD_CERTIFICATE" in detail or settings.uses_tls:
        hint = "; it may not trust our client certificate (mqtt.cert_file): is it signed by the broker's CA?"
    else:
        hint = ""
    return f"closed the connection before accepting it{f' ({detail})' if detail else ''}{hint}"
