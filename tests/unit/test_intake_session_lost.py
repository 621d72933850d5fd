"""The intake tells a session taken over (DISCONNECT reason 0x8E) and a session missing on a reconnect.

A scripted broker on a local socket sends what Mosquitto 2.1 and EMQX send when another connection takes the
session; the real-broker case (Mosquitto 2.0.11 closes without a DISCONNECT) is in
tests/integration/test_compose_stack.py.
"""

from __future__ import annotations

import socket
import threading

from adapters.mqtt import MqttSettings
from adapters.mqtt_intake import IntakeConnection

CONNACK_NO_SESSION = bytes((0x20, 3, 0, 0, 0))
DISCONNECT_SESSION_TAKEN_OVER = bytes((0xE0, 2, 0x8E, 0))


def read_packet(conn: socket.socket) -> bytes:
    """One MQTT packet: fixed header, remaining length, body."""
    header = conn.recv(1)
    length, shift = 0, 0
    while True:
        byte = conn.recv(1)[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    return header + body


def scripted_broker(server: socket.socket, connections: int) -> None:
    """Accept, CONNACK without a session, SUBACK; the first connection is then taken over."""
    for number in range(connections):
        conn, _ = server.accept()
        read_packet(conn)  # CONNECT
        conn.sendall(CONNACK_NO_SESSION)
        subscribe = read_packet(conn)
        conn.sendall(bytes((0x90, 4)) + subscribe[1:3] + bytes((0, 1)))  # SUBACK: its packet id, granted QoS 1
        if number == 0:
            conn.sendall(DISCONNECT_SESSION_TAKEN_OVER)
            conn.close()
        else:
            conn.recv(1)  # until the client leaves
            conn.close()


def test_a_session_taken_over_and_then_missing_are_both_reported() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    broker = threading.Thread(target=scripted_broker, args=(server, 2), daemon=True)
    broker.start()
    reports: list[tuple[str, str]] = []
    second_connection = threading.Event()

    def on_session_lost(kind: str, what: str) -> None:
        reports.append((kind, what))
        if kind == "not_present":
            second_connection.set()

    intake = IntakeConnection(
        MqttSettings(host="127.0.0.1", port=server.getsockname()[1]),
        "pilot-collector",
        [("pilot/v1/+/+/+/+", 1)],
        lambda deliveries: None,
        session_expiry_s=3600,
        on_session_lost=on_session_lost,
    )
    intake.start()
    assert second_connection.wait(10)
    intake.close()
    server.close()
    kinds = [kind for kind, _ in reports]
    # The first connection's session is new (nothing to report); then taken over; the reconnect finds none.
    assert kinds == ["taken_over", "not_present"], reports
    assert "'pilot-collector'" in reports[0][1] and "its own account" in reports[0][1]
