"""Turning a batch of received messages into lines to write and messages to refuse.

Validation and encoding cost more CPU per message than receiving it, and
Python runs one thread at a time. So they run in a process of their own
(``ProcessorProcess``), beside the MQTT network thread instead of taking
turns with it. The process keeps the per-device seq accounting; the
collector keeps the metrics.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

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


StreamKey = tuple[str, str, str, str]  # site, line, device, channel


@dataclass
class BatchOutcome:
    """What validation made of a batch; indices refer to the batch's messages."""

    lines: list[str] = field(default_factory=list)
    line_owner: list[int] = field(default_factory=list)  # index of the message each line came from
    rejected: list[tuple[int, Rejection]] = field(default_factory=list)
    duplicates: list[StreamKey] = field(default_factory=list)  # the stream of each duplicate
    seq_gaps: list[tuple[StreamKey, int]] = field(default_factory=list)  # stream and how many seqs it skipped


class Processor:
    """Validates and encodes messages in arrival order, keeping seq accounting."""

    def __init__(self, registry: DeviceRegistry, max_payload_bytes: int) -> None:
        self.registry = registry
        self.max_payload_bytes = max_payload_bytes
        self.seq = SeqTracker()

    def process(self, messages: list[tuple[str, bytes]]) -> BatchOutcome:
        outcome = BatchOutcome()
        for index, (topic, payload) in enumerate(messages):
            result = validate_message(topic, payload, self.registry, self.max_payload_bytes)
            if isinstance(result, Rejection):
                outcome.rejected.append((index, result))
            elif self._sequence_ok(result, index, outcome):
                outcome.lines.extend(result.lines)
                outcome.line_owner.extend([index] * len(result.lines))
        return outcome

    def forget_sequences(self) -> None:
        """Forget what was seen, after a batch that was not stored and acknowledged.

        Its messages come again and must not be dropped as duplicates; anything
        stored twice is harmless, since InfluxDB overwrites a point with itself.
        """
        self.seq = SeqTracker()

    def _sequence_ok(self, accepted: Accepted, index: int, outcome: BatchOutcome) -> bool:
        if accepted.birth:
            self.seq.restart_device(accepted.topic)
        observation = self.seq.observe(accepted.topic, accepted.seq)
        if observation.verdict is SeqVerdict.DUPLICATE:
            # Already stored: acknowledging it again is all that is needed.
            t = accepted.topic
            outcome.duplicates.append((t.site, t.line, t.device, t.channel.value))
            return False
        if observation.verdict is SeqVerdict.REGRESSION:
            detail = (
                f"seq {accepted.seq} is older than anything this collector has seen from this device and "
                "channel; seq must grow with each message"
            )
            outcome.rejected.append((index, Rejection(RejectReason.SEQ_REGRESSION, detail, accepted.topic)))
            return False
        if observation.verdict is SeqVerdict.GAP:
            t = accepted.topic
            outcome.seq_gaps.append(((t.site, t.line, t.device, t.channel.value), observation.missing))
        return True


# The processor of the child process, made once by the pool's initializer.
_processor: Processor | None = None


def _start(registry: DeviceRegistry, max_payload_bytes: int) -> None:
    global _processor  # noqa: PLW0603 - one processor per child process, as the pool's initializer makes it
    _processor = Processor(registry, max_payload_bytes)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="exit-with-parent", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A collector killed outright (SIGKILL, out of memory) must not leave this child behind, idle forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _process(messages: list[tuple[str, bytes]]) -> BatchOutcome:
    assert _processor is not None
    return _processor.process(messages)


def _forget() -> None:
    assert _processor is not None
    _processor.forget_sequences()


class ProcessorProcess:
    """A Processor in a child process. One child, so batches keep their order and seq state stays whole."""

    def __init__(self, registry: DeviceRegistry, max_payload_bytes: int) -> None:
        self._args = (registry, max_payload_bytes)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs threads (MQTT, HTTP), which fork does not copy safely.
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(1, mp_context=context, initializer=_start, initargs=self._args)

    def start(self) -> None:
        """Start the child now rather than on the first batch."""
        self._pool.submit(_forget).result()

    def process(self, messages: list[tuple[str, bytes]]) -> BatchOutcome:
        try:
            return self._pool.submit(_process, messages).result()
        except BrokenProcessPool:
            # The child died (killed, out of memory): a new one starts with no seq state.
            self._pool = self._new_pool()
            raise

    def forget_sequences(self) -> None:
        try:
            self._pool.submit(_forget).result()
        except BrokenProcessPool:
            self._pool = self._new_pool()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
