"""Turning a batch of received messages into lines to write and messages to refuse.

Validation and encoding cost more CPU per message than receiving it, and
Python runs one thread at a time. So they run in a process of their own
(``ProcessorProcess``), beside the MQTT network thread instead of taking
turns with it. The process keeps the per-device seq accounting and quotas;
the collector keeps the metrics.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.sparkplug.codec import SparkplugDecodeError, decode_payload
from collector import sparkplug_checkpoint
from pilot_core.contract import Topic, TopicError, parse_topic
from pilot_core.rate_limit import RateLimit, TokenBuckets
from pilot_core.registry import DeviceRegistry
from pilot_core.sparkplug import (
    SparkplugDeviceMap,
    SparkplugHost,
    SparkplugTopicError,
    Verdict,
    is_sparkplug,
    parse_sparkplug_topic,
)
from pilot_core.validation import (
    Accepted,
    ClockCheck,
    Rejection,
    RejectReason,
    SeqTracker,
    SeqVerdict,
    StatusTimes,
    validate_message,
)

if TYPE_CHECKING:  # the child process imports this module: settings would bring httpx and pydantic-settings
    from collector.settings import CollectorSettings

log = logging.getLogger("pilot.collector")

StreamKey = tuple[str, str, str, str]  # site, line, device, channel; for Sparkplug: group, node, device, "sparkplug"


@dataclass
class BatchOutcome:
    """What validation made of a batch; indices refer to the batch's messages."""

    lines: list[str] = field(default_factory=list)
    line_owner: list[int] = field(default_factory=list)  # index of the message each line came from
    rejected: list[tuple[int, Rejection]] = field(default_factory=list)
    duplicates: list[StreamKey] = field(default_factory=list)  # the stream of each duplicate
    seq_gaps: list[tuple[StreamKey, int]] = field(default_factory=list)  # stream and how many seqs it skipped
    # Sparkplug: edge nodes to ask for a rebirth (group, edge node), at once, before the batch is durable.
    rebirths: list[tuple[str, str]] = field(default_factory=list)
    historical_points: int = 0  # Sparkplug store-and-forward: backfill, not live
    stale_deaths: int = 0
    ignored_metrics: int = 0
    checkpoint: int | None = None  # the host state after this batch, to keep once the batch is durable


@dataclass(frozen=True, slots=True)
class SparkplugIntake:
    """The Sparkplug host's configuration, as the child process needs it."""

    maps: tuple[SparkplugDeviceMap, ...] = ()
    rebirth_interval_s: float = 10.0
    checkpoint_file: Path | None = None  # the host state as of the last durable batch


@dataclass(frozen=True, slots=True)
class Limits:
    """What the processor refuses beyond the contract and the profiles: size, clock and quota."""

    max_payload_bytes: int
    max_clock_skew_s: float = 0.0  # 0: no bound
    max_record_age_s: float = 0.0  # 0: no bound
    rate_limit: RateLimit | None = None  # None: no quota
    # In a share group each member sees only part of a device's seq: gaps, duplicates and regressions it would
    # judge from that part are the other members' messages, so it writes every valid message instead.
    judge_seq: bool = True

    @classmethod
    def from_settings(cls, settings: CollectorSettings) -> Limits:
        rate = settings.rate_limit_records_per_s
        return cls(
            settings.max_payload_bytes,
            settings.max_clock_skew_s,
            settings.max_record_age_s,
            RateLimit(rate, settings.rate_limit_burst_records) if rate else None,
            judge_seq=not settings.share_group,
        )

    def clock_check(self, now_s: float) -> ClockCheck | None:
        if not (self.max_clock_skew_s or self.max_record_age_s):
            return None
        return ClockCheck(
            now_ms=int(now_s * 1000),
            max_ahead_ms=round(self.max_clock_skew_s * 1000) if self.max_clock_skew_s else None,
            max_age_ms=round(self.max_record_age_s * 1000) if self.max_record_age_s else None,
        )


class Processor:
    """Validates and encodes messages in arrival order, keeping seq accounting and per-device quotas.

    ``wall_clock`` (epoch seconds) bounds timestamps; ``monotonic_clock``
    refills the quotas. Both are read once per batch.
    """

    def __init__(
        self,
        registry: DeviceRegistry,
        limits: Limits,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
        sparkplug: SparkplugIntake | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.sparkplug = sparkplug
        self.host = SparkplugHost(registry, sparkplug.maps, sparkplug.rebirth_interval_s) if sparkplug else None
        self._batches = 0
        self._snapshots: dict[int, bytes] = {}  # batch number → host state after it, until acknowledged
        if self.host is not None and sparkplug is not None and sparkplug.checkpoint_file is not None:
            sparkplug_checkpoint.load(self.host, sparkplug.checkpoint_file)
        self.seq = SeqTracker()
        self.statuses = StatusTimes()  # a will is stored when it is received: the outage
        self.quotas: TokenBuckets[tuple[str, str, str]] | None = (
            TokenBuckets(limits.rate_limit) if limits.rate_limit else None
        )
        self._wall_clock = wall_clock
        self._monotonic_clock = monotonic_clock

    def process(self, messages: list[tuple[str, bytes]]) -> BatchOutcome:
        outcome = BatchOutcome()
        wall_s = self._wall_clock()
        clock = self.limits.clock_check(wall_s)
        now_s = self._monotonic_clock()
        sparkplug_seen = False
        for index, (topic, payload) in enumerate(messages):
            if self.host is not None and is_sparkplug(topic):
                sparkplug_seen = True
                self._sparkplug(index, topic, payload, clock, int(wall_s * 1000), now_s, outcome)
                continue
            result = self._validate(topic, payload, clock, int(wall_s * 1000))
            if isinstance(result, Accepted):
                if result.birth:
                    # Even a birth refused for its quota says the agent restarted: its seq may count from 1 again.
                    self.seq.restart_device(result.topic)
                result = self._within_quota(result, now_s)
            if isinstance(result, Rejection):
                outcome.rejected.append((index, result))
            elif not self.limits.judge_seq or self._sequence_ok(result, index, outcome):
                outcome.lines.extend(result.lines)
                outcome.line_owner.extend([index] * len(result.lines))
        if sparkplug_seen and self.host is not None:
            self._batches += 1
            self._snapshots[self._batches] = self.host.snapshot()
            outcome.checkpoint = self._batches
        return outcome

    def _sparkplug(
        self,
        index: int,
        topic_name: str,
        payload: bytes,
        clock: ClockCheck | None,
        received_ms: int,
        now_s: float,
        outcome: BatchOutcome,
    ) -> None:
        assert self.host is not None
        try:
            topic = parse_sparkplug_topic(topic_name)
        except SparkplugTopicError as exc:
            outcome.rejected.append((index, Rejection(RejectReason.BAD_TOPIC, str(exc))))
            return
        if len(payload) > self.limits.max_payload_bytes:
            detail = f"payload is {len(payload)} bytes; the limit is {self.limits.max_payload_bytes}"
            outcome.rejected.append((index, Rejection(RejectReason.TOO_LARGE, detail)))
            return
        if topic.kind is None:
            return  # a host's STATE (ours among them): JSON, not data
        try:
            decoded = decode_payload(payload)
        except SparkplugDecodeError as exc:
            outcome.rejected.append((index, Rejection(RejectReason.SPARKPLUG_UNDECODABLE, str(exc))))
            return
        try:
            result = self.host.handle(topic, decoded, received_ms, now_s, clock)
        except Exception as exc:  # a bug must cost this message only
            detail = f"the collector failed on this Sparkplug message ({type(exc).__name__}: {exc}); please report it"
            outcome.rejected.append((index, Rejection(RejectReason.INTERNAL_ERROR, detail)))
            return
        stream = (topic.group, topic.edge_node, topic.device or "", "sparkplug")
        if result.rebirth is not None:
            outcome.rebirths.append(result.rebirth)
        if result.seq_gap:
            outcome.seq_gaps.append((stream, result.seq_gap))
        outcome.historical_points += result.historical_points
        outcome.ignored_metrics += result.ignored_metrics
        if result.verdict is Verdict.DUPLICATE:
            outcome.duplicates.append(stream)
        elif result.verdict is Verdict.STALE_DEATH:
            outcome.stale_deaths += 1
        elif result.rejection is not None:
            outcome.rejected.append((index, result.rejection))
        else:
            outcome.lines.extend(result.lines)
            outcome.line_owner.extend([index] * len(result.lines))

    def commit(self, checkpoint: int) -> None:
        """Keep the host state as of batch ``checkpoint``, now durable: a restart resumes from it."""
        snapshot = self._snapshots.get(checkpoint)
        for number in [n for n in self._snapshots if n <= checkpoint]:
            del self._snapshots[number]
        if snapshot is None or self.sparkplug is None or self.sparkplug.checkpoint_file is None:
            return
        sparkplug_checkpoint.save(self.sparkplug.checkpoint_file, snapshot)

    def forget_sequences(self) -> None:
        """Forget what was seen, after a batch that was not stored and acknowledged.

        Its messages come again and must not be dropped as duplicates; anything
        stored twice is harmless, since InfluxDB overwrites a point with itself.
        They must not pay their quota twice either, so the buckets fill again.
        """
        self.seq = SeqTracker()
        if self.quotas is not None:
            self.quotas.reset()

    def _validate(self, topic: str, payload: bytes, clock: ClockCheck | None, received_ms: int) -> Accepted | Rejection:
        try:
            return validate_message(
                topic, payload, self.registry, self.limits.max_payload_bytes, clock, self.statuses, received_ms
            )
        except Exception as exc:  # a bug must cost this message only, never the batch around it
            detail = (
                f"the collector failed on this message ({type(exc).__name__}: {exc}); this is a bug in the"
                " collector: please report it with this dead letter, and replay the message once it is fixed"
            )
            return Rejection(RejectReason.INTERNAL_ERROR, detail, topic_or_none(topic))

    def _within_quota(self, accepted: Accepted, now_s: float) -> Accepted | Rejection:
        if self.quotas is None:
            return accepted
        t = accepted.topic
        records = len(accepted.lines)  # one line per record
        throttled = self.quotas.take((t.site, t.line, t.device), records, now_s)
        if throttled is None:
            return accepted
        limit = self.quotas.limit
        when = (
            f"it could pass in {throttled.wait_s:.1f} s"
            if math.isfinite(throttled.wait_s)
            else "it is larger than the burst itself and can never pass"
        )
        detail = (
            f"device {t.device!r} (site {t.site!r}, line {t.line!r}) is over its quota: this message carries"
            f" {records:,} records and the device has {int(throttled.available):,} left (rate_limit_records_per_s"
            f" {limit.records_per_s:g}, rate_limit_burst_records {limit.burst:,.0f}); {when}. The message is refused"
            " whole and kept here to replay; if the device legitimately sends this much, raise the quota"
        )
        return Rejection(RejectReason.RATE_LIMITED, detail, t)

    def _sequence_ok(self, accepted: Accepted, index: int, outcome: BatchOutcome) -> bool:
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


def topic_or_none(topic: str) -> Topic | None:
    """The parsed topic, or None for one outside the contract (its dead letter goes to _unrouted)."""
    try:
        return parse_topic(topic)
    except TopicError:
        return None


def _start(registry: DeviceRegistry, limits: Limits, sparkplug: SparkplugIntake | None = None) -> None:
    global _processor  # noqa: PLW0603 - one processor per child process, as the pool's initializer makes it
    _processor = Processor(registry, limits, sparkplug=sparkplug)
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


def _commit(checkpoint: int) -> None:
    assert _processor is not None
    _processor.commit(checkpoint)


class ProcessorProcess:
    """A Processor in a child process. One child, so batches keep their order and seq state stays whole."""

    def __init__(self, registry: DeviceRegistry, limits: Limits, sparkplug: SparkplugIntake | None = None) -> None:
        self._args = (registry, limits, sparkplug)
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

    def commit(self, checkpoint: int) -> None:
        """Keep the Sparkplug host state as of a durable batch (on disk, in the child)."""
        try:
            self._pool.submit(_commit, checkpoint).result()
        except BrokenProcessPool:
            self._pool = self._new_pool()

    def forget_sequences(self) -> None:
        try:
            self._pool.submit(_forget).result()
        except BrokenProcessPool:
            self._pool = self._new_pool()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
