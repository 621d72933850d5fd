"""Turning a batch of received messages into lines to write and messages to refuse."""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.metrics import CollectorMetrics
from pilot_core.registry import DeviceRegistry
from pilot_core.validation import Accepted, Rejection, RejectReason, SeqTracker, SeqVerdict, validate_message


@dataclass(slots=True)
class Inbound:
    """A message as received, with what is needed to acknowledge it later."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # which MQTT connection delivered it: acks go back on that one only


@dataclass
class ProcessedBatch:
    messages: list[Inbound]
    lines: list[str] = field(default_factory=list)
    line_owner: list[int] = field(default_factory=list)  # index into messages, per line
    rejected: list[tuple[Inbound, Rejection]] = field(default_factory=list)
    duplicates: int = 0


class Processor:
    """Validates and encodes messages in arrival order, keeping seq accounting."""

    def __init__(self, registry: DeviceRegistry, max_payload_bytes: int, metrics: CollectorMetrics) -> None:
        self.registry = registry
        self.max_payload_bytes = max_payload_bytes
        self.metrics = metrics
        self.seq = SeqTracker()

    def process(self, messages: list[Inbound]) -> ProcessedBatch:
        batch = ProcessedBatch(messages)
        for index, message in enumerate(messages):
            result = validate_message(message.topic, message.payload, self.registry, self.max_payload_bytes)
            if isinstance(result, Rejection):
                batch.rejected.append((message, result))
                continue
            if not self._sequence_ok(result, message, batch):
                continue
            batch.lines.extend(result.lines)
            batch.line_owner.extend([index] * len(result.lines))
        self.metrics.received.inc(len(messages))
        self.metrics.accepted.inc(len(messages) - len(batch.rejected) - batch.duplicates)
        self.metrics.duplicates.inc(batch.duplicates)
        return batch

    def forget_sequences(self) -> None:
        """Forget what was seen, after a batch that was not stored and acknowledged.

        Its messages come again and must not be dropped as duplicates; anything
        stored twice is harmless, since InfluxDB overwrites a point with itself.
        """
        self.seq = SeqTracker()

    def _sequence_ok(self, accepted: Accepted, message: Inbound, batch: ProcessedBatch) -> bool:
        if accepted.birth:
            self.seq.restart_device(accepted.topic)
        observation = self.seq.observe(accepted.topic, accepted.seq)
        if observation.verdict is SeqVerdict.DUPLICATE:
            # Already stored: acknowledging it again is all that is needed.
            batch.duplicates += 1
            return False
        if observation.verdict is SeqVerdict.REGRESSION:
            batch.rejected.append(
                (
                    message,
                    Rejection(
                        RejectReason.SEQ_REGRESSION,
                        f"seq {accepted.seq} is older than anything this collector has seen from this device and "
                        "channel; seq must grow with each message",
                        accepted.topic,
                    ),
                )
            )
            return False
        if observation.verdict is SeqVerdict.GAP:
            t = accepted.topic
            self.metrics.seq_gaps.labels(t.site, t.line, t.device, t.channel.value).inc(observation.missing)
        return True
