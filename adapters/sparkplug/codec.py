"""Sparkplug B payload bytes ↔ ``pilot_core.sparkplug`` values, with the protobuf runtime.

Decoding never guesses: bytes that are not a Sparkplug payload raise ``SparkplugDecodeError``.
"""

from __future__ import annotations

import json

from google.protobuf.message import DecodeError

from adapters.sparkplug import sparkplug_b_pb2 as pb
from pilot_core.sparkplug import NAMESPACE, REBIRTH_METRIC, DataType, SpbMetric, SpbPayload


class SparkplugDecodeError(ValueError):
    pass


def decode_payload(data: bytes) -> SpbPayload:
    message = pb.Payload()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:  # RuntimeError: recursion too deep in nested values
        raise SparkplugDecodeError(f"not a Sparkplug B payload: protobuf could not decode it ({exc})") from None
    metrics = []
    for metric in message.metrics:
        # Plain attribute reads; HasField (a call each) only where a default value could also be a set one.
        value_field = metric.WhichOneof("value")
        alias = metric.alias
        timestamp = metric.timestamp
        metrics.append(
            SpbMetric(
                metric.name or None,  # an empty name is no name
                alias if alias or metric.HasField("alias") else None,
                timestamp if timestamp or metric.HasField("timestamp") else None,
                metric.datatype or None,  # 0 is Unknown
                getattr(metric, value_field) if value_field in _SCALARS else None,
                value_field,
                metric.is_historical,
                metric.is_null,
            )
        )
    return SpbPayload(
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        metrics=tuple(metrics),
    )


_SCALARS = {"int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value", "bytes_value"}


def rebirth_command(group: str, edge_node: str, timestamp_ms: int) -> tuple[str, bytes]:
    """The NCMD a host sends to ask an edge node for its births again."""
    message = pb.Payload(timestamp=timestamp_ms)
    metric = message.metrics.add()
    metric.name = REBIRTH_METRIC
    metric.timestamp = timestamp_ms
    metric.datatype = DataType.BOOLEAN
    metric.boolean_value = True
    return f"{NAMESPACE}/{group}/NCMD/{edge_node}", message.SerializeToString()


def host_state(host_id: str, online: bool, timestamp_ms: int) -> tuple[str, bytes]:
    """Sparkplug 3.0's host STATE message (retained, QoS 1; its will says offline with the same timestamp)."""
    body = json.dumps({"online": online, "timestamp": timestamp_ms}, separators=(",", ":")).encode()
    return f"{NAMESPACE}/STATE/{host_id}", body
