"""Births and wills: a will is stored when the collector receives it (the outage), after the birth before it."""

from __future__ import annotations

import json

from collector.processing import Limits, Processor
from pilot_core.contract import topic_for
from pilot_core.validation import Accepted, validate_message
from tests.unit.test_hostile_payloads import DEVICE, LINE, REGISTRY, SITE, TS

STATUS = topic_for(SITE, LINE, DEVICE, "status")
CONNECTED = TS  # when the agent connected: its will's ts, set before the birth


def status(seq: int, online: bool, ts: int) -> tuple[str, bytes]:
    return STATUS, json.dumps({"seq": seq, "ts": ts, "status": "online" if online else "offline"}).encode()


class Collector:
    """A processor whose wall clock the test sets: the time the next batch is received."""

    def __init__(self, *, judge_seq: bool = True) -> None:
        self.now_ms = TS
        limits = Limits(max_payload_bytes=1 << 20, max_record_age_s=3600, judge_seq=judge_seq)
        self.processor = Processor(REGISTRY, limits, wall_clock=lambda: self.now_ms / 1000)

    def stored_times(self, *messages: tuple[str, bytes], at_ms: int) -> list[int]:
        self.now_ms = at_ms
        outcome = self.processor.process(list(messages))
        assert outcome.rejected == []
        return [int(line.rsplit(" ", 1)[1]) for line in outcome.lines]


def test_a_will_is_stored_when_it_is_received_not_at_the_older_ts_it_was_given_at_connect() -> None:
    collector = Collector()
    assert collector.stored_times(status(1, True, CONNECTED + 4), at_ms=CONNECTED + 50) == [CONNECTED + 4]
    # Five hours later the connection dies: a will whose ts (the connection's) is older than the 1 h
    # max_record_age_s is not refused as stale, and it lands after the birth, at the outage.
    outage = CONNECTED + 5 * 3_600_000
    assert collector.stored_times(status(2, False, CONNECTED), at_ms=outage) == [outage]
    # Received again (not acknowledged the first time): the same point, not a second one.
    collector.processor.forget_sequences()
    assert collector.stored_times(status(2, False, CONNECTED), at_ms=outage + 900) == [outage]


def test_a_birth_queued_behind_the_will_lands_after_it_and_an_older_birth_received_again_keeps_its_time() -> None:
    collector = Collector()
    collector.stored_times(status(1, True, CONNECTED + 4), at_ms=CONNECTED + 50)
    # The collector was away: the will and the birth of the agent's next connection waited at the broker,
    # and the birth's own ts is older than the moment the collector received the will.
    late = CONNECTED + 600_000
    stored = collector.stored_times(status(2, False, CONNECTED), status(3, True, CONNECTED + 60_000), at_ms=late)
    assert stored == [late, late + 1]  # offline, then online again: the device is online
    # A batch received again holding the first birth: it keeps its own ts, it does not pass for a new one.
    collector.processor.forget_sequences()
    assert collector.stored_times(status(1, True, CONNECTED + 4), at_ms=late + 1000) == [CONNECTED + 4]


def test_a_will_older_than_a_birth_already_received_keeps_its_own_ts() -> None:
    collector = Collector(judge_seq=False)  # a share group member, which stores what comes out of order
    collector.stored_times(status(3, True, CONNECTED + 60_000), at_ms=CONNECTED + 60_050)
    assert collector.stored_times(status(2, False, CONNECTED), at_ms=CONNECTED + 70_000) == [CONNECTED]


def test_without_a_processor_a_status_is_stored_at_its_own_ts() -> None:
    result = validate_message(*status(2, False, CONNECTED), REGISTRY, 1 << 20)
    assert isinstance(result, Accepted) and result.lines[0].endswith(f" {CONNECTED}")


STATE = topic_for(SITE, LINE, DEVICE, "state")


def state(seq: int, ts: int) -> tuple[str, bytes]:
    return STATE, json.dumps({"seq": seq, "ts": ts, "state": "running"}).encode()


def test_the_state_an_agent_restates_with_its_birth_lands_with_that_birth_after_the_will() -> None:
    collector = Collector()
    collector.stored_times(status(1, True, CONNECTED + 4), at_ms=CONNECTED + 50)
    # The broker restarted. The agent reconnected before the collector did: its birth's ts is older than the
    # moment the collector received the will. The agent restates its state stamped with its birth's ts.
    late = CONNECTED + 600_000
    birth = CONNECTED + 599_000
    stored = collector.stored_times(status(2, False, CONNECTED), status(3, True, birth), state(1, birth), at_ms=late)
    assert stored == [late, late + 1, late + 1]  # offline, online, and running again: not unknown after the birth
    # A state recorded while the broker was away keeps its own time, before the will.
    assert collector.stored_times(state(2, birth - 5000), at_ms=late + 10) == [birth - 5000]
