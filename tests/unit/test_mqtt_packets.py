"""The MQTT 5 codec of the intake connection, without a broker."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import mqtt_packets as wire
from adapters.mqtt_packets import Delivery, ProtocolError, read_packets


def test_a_publish_reads_back_as_one_delivery() -> None:
    packet = wire.publish_packet("pilot/v1/시화/line-1/dev-1/telemetry", b'{"seq":1}', 1, packet_id=513)
    deliveries, others, used = read_packets(packet, generation=7)
    assert deliveries == [Delivery("pilot/v1/시화/line-1/dev-1/telemetry", b'{"seq":1}', 513, 1, 7)]
    assert others == [] and used == len(packet)


@pytest.mark.parametrize("size", [0, 1, 120, 127, 128, 16_383, 16_384, 2_097_152])
def test_remaining_lengths_of_every_width_are_read(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    packet = wire.publish_packet("t", payload, 0)
    deliveries, _, used = read_packets(packet, 0)
    assert [d.payload for d in deliveries] == [payload] and used == len(packet)


def test_a_buffer_cut_anywhere_yields_only_whole_packets_and_the_rest_later() -> None:
    packets = [wire.publish_packet(f"t/{n}", b"p" * n, n % 2, packet_id=n + 1) for n in range(40)]
    stream = b"".join(packets) + bytes((wire.PINGRESP, 0))
    for cut in range(0, len(stream), 7):
        first, first_others, used = read_packets(stream[:cut], 0)
        rest, rest_others, rest_used = read_packets(stream[used:], 0)
        assert used <= cut and used + rest_used == len(stream)
        assert [d.topic for d in first + rest] == [f"t/{n}" for n in range(40)]
        assert [p.kind for p in first_others + rest_others] == [wire.PINGRESP]


def test_properties_of_a_publish_are_skipped() -> None:
    body = wire._string("a/b") + struct.pack("!H", 9) + bytes((5, 0x01, 1, 0x23, 0, 3)) + b"payload"
    packet = bytes((wire.PUBLISH | 2,)) + wire.varint(len(body)) + body
    assert read_packets(packet, 0)[0] == [Delivery("a/b", b"payload", 9, 1, 0)]


def test_many_pubacks_are_one_write_of_four_bytes_each() -> None:
    assert wire.pubacks([1, 258, 65535]) == bytes((0x40, 2, 0, 1, 0x40, 2, 1, 2, 0x40, 2, 0xFF, 0xFF))


def test_connect_carries_the_session_expiry_receive_maximum_and_credentials() -> None:
    packet = wire.connect_packet(
        "collector-1", keepalive_s=30, clean_start=False, session_expiry_s=604_800, receive_maximum=65535,
        username="pilot", password="pässword",
    )  # fmt: skip
    assert packet[0] == wire.CONNECT
    length, start = wire._long_length(packet, 1)
    body = packet[start:]
    assert len(body) == length
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0x80 | 0x40  # username and password, no clean start
    assert struct.unpack("!H", body[8:10]) == (30,)
    assert wire._properties(body, 10) == {wire.PROP_SESSION_EXPIRY: 604_800, wire.PROP_RECEIVE_MAXIMUM: 65535}
    assert body.endswith(wire._string("collector-1") + wire._string("pilot") + wire._string("pässword"))


def test_connect_carries_a_retained_qos_1_will_before_the_credentials_and_publish_a_retain_flag() -> None:
    will = ("spBv1.0/STATE/host", b'{"online":false,"timestamp":5}')
    packet = wire.connect_packet("host", keepalive_s=30, clean_start=True, username="u", password="p", will=will)
    _, start = wire._long_length(packet, 1)
    body = packet[start:]
    assert body[7] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # credentials, will retained at QoS 1, clean start
    assert body.endswith(
        wire._string("host") + b"\x00" + wire._string(will[0]) + wire._string(will[1])
        + wire._string("u") + wire._string("p")
    )  # fmt: skip
    assert wire.publish_packet("t", b"x", 1, 7, retain=True)[0] == wire.PUBLISH | 0x02 | 0x01
    assert wire.publish_packet("t", b"x", 0)[0] == wire.PUBLISH


def test_connack_suback_puback_and_disconnect_are_read() -> None:
    properties = bytes((wire.PROP_RECEIVE_MAXIMUM, 0, 20, wire.PROP_SERVER_KEEP_ALIVE, 0, 60))
    connack = bytes((wire.CONNACK, 3 + len(properties), 1, 0, len(properties))) + properties
    suback = bytes((wire.SUBACK, 5, 0, 4, 0, 1, 0x87))
    puback_refused = bytes((wire.PUBACK, 4, 0, 9, 0x87, 0))
    puback_ok = bytes((wire.PUBACK, 2, 0, 10))
    disconnect = bytes((wire.DISCONNECT, 2, 0x8E, 0))
    _, others, _ = read_packets(connack + suback + puback_refused + puback_ok + disconnect, 0)
    assert others[0].session_present and others[0].reasons == b"\x00"
    assert others[0].properties == {wire.PROP_RECEIVE_MAXIMUM: 20, wire.PROP_SERVER_KEEP_ALIVE: 60}
    assert (others[1].packet_id, others[1].reasons) == (4, b"\x01\x87")
    assert (others[2].packet_id, others[2].reasons) == (9, b"\x87")
    assert (others[3].packet_id, others[3].reasons) == (10, b"\x00")
    assert others[4].reasons == b"\x8e"


def test_the_first_frame_of_a_buffer_is_found_or_reported_incomplete() -> None:
    connack = bytes((wire.CONNACK, 3, 0, 0, 0))
    assert wire.frame_end(connack + b"\x30") == 5
    assert wire.frame_end(connack[:4]) == -1
    assert wire.frame_end(b"\x20") == -1


def test_qos_2_and_malformed_publishes_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="QoS 2"):
        read_packets(bytes((wire.PUBLISH | 4, 6, 0, 1, ord("t"), 0, 1, 0)), 0)
    with pytest.raises(ProtocolError, match="shorter"):
        read_packets(bytes((wire.PUBLISH, 3, 0, 9, ord("t"))), 0)
    with pytest.raises(ProtocolError, match="UTF-8"):
        read_packets(bytes((wire.PUBLISH, 4, 0, 1, 0xFF, 0)), 0)
    with pytest.raises(ProtocolError, match="longer than 4 bytes"):
        read_packets(bytes((wire.PUBLISH, 0xFF, 0xFF, 0xFF, 0xFF, 0x01)), 0)


def test_the_encoders_refuse_what_mqtt_cannot_carry() -> None:
    with pytest.raises(ValueError, match="QoS 0 or 1"):
        wire.publish_packet("t", b"", 2)
    with pytest.raises(ValueError, match="65,535"):
        wire.publish_packet("t" * 70_000, b"", 0)


@given(st.binary(max_size=300))
def test_any_bytes_are_read_or_refused_as_protocol_errors_never_a_crash(data: bytes) -> None:
    try:
        deliveries, _others, used = read_packets(data, 0)
    except ProtocolError:
        return
    assert 0 <= used <= len(data)
    assert all(isinstance(d.payload, bytes) for d in deliveries)
