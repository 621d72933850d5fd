"""Per-device quotas: the token buckets, and the processor that applies them between validation and seq."""

from __future__ import annotations

import json
import math

import pytest

from collector.processing import Limits, Processor
from collector.settings import CollectorSettings
from pilot_core.contract import topic_for
from pilot_core.profiles import ProfileCatalog, parse_profile
from pilot_core.rate_limit import RateLimit, TokenBuckets
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import RejectReason
from tests.unit.test_hostile_payloads import PROFILE, TS


class TestTokenBuckets:
    def test_a_bucket_starts_full_refills_at_its_rate_and_never_beyond_its_burst(self) -> None:
        buckets: TokenBuckets[str] = TokenBuckets(RateLimit(records_per_s=10, burst=100))
        assert buckets.take("a", 100, now_s=0.0) is None
        throttled = buckets.take("a", 1, now_s=0.0)
        assert throttled is not None and throttled.available == 0 and throttled.wait_s == pytest.approx(0.1)
        assert buckets.take("a", 50, now_s=5.0) is None  # 5 s × 10/s
        assert buckets.take("a", 1, now_s=5.0) is not None
        assert buckets.take("a", 100, now_s=1000.0) is None  # capped at the burst, not 10,000
        assert buckets.take("a", 1, now_s=1000.0) is not None

    def test_a_refused_take_costs_nothing_and_keys_are_independent(self) -> None:
        buckets: TokenBuckets[str] = TokenBuckets(RateLimit(records_per_s=1, burst=10))
        assert buckets.take("a", 8, now_s=0.0) is None
        assert buckets.take("a", 5, now_s=0.0) is not None
        assert buckets.take("a", 2, now_s=0.0) is None  # the refused 5 took nothing
        assert buckets.take("b", 10, now_s=0.0) is None

    def test_more_than_the_burst_can_never_pass(self) -> None:
        buckets: TokenBuckets[str] = TokenBuckets(RateLimit(records_per_s=1, burst=10))
        throttled = buckets.take("a", 11, now_s=0.0)
        assert throttled is not None and math.isinf(throttled.wait_s)

    def test_a_clock_stepping_back_refills_nothing(self) -> None:
        buckets: TokenBuckets[str] = TokenBuckets(RateLimit(records_per_s=1, burst=10))
        assert buckets.take("a", 10, now_s=100.0) is None
        assert buckets.take("a", 1, now_s=50.0) is not None
        assert buckets.take("a", 1, now_s=101.0) is None

    def test_reset_fills_every_bucket(self) -> None:
        buckets: TokenBuckets[str] = TokenBuckets(RateLimit(records_per_s=1, burst=10))
        assert buckets.take("a", 10, now_s=0.0) is None
        buckets.reset()
        assert buckets.take("a", 10, now_s=0.0) is None

    @pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (math.inf, 10), (1, 0), (1, math.nan)])
    def test_unusable_limits_are_refused(self, rate: float, burst: float) -> None:
        with pytest.raises(ValueError, match="must be"):
            RateLimit(rate, burst)


SITE, LINE = "시화", "line 1"
REGISTRY = DeviceRegistry(
    [DeviceEntry(site=SITE, line=LINE, device=device, profile="test_press") for device in ("a", "b")],
    ProfileCatalog([parse_profile(PROFILE, "test_press.yaml")]),
)


def batch(device: str, seq: int, records: int) -> tuple[str, bytes]:
    body = {"seq": seq, "batch": [{"ts": TS + seq * 100_000 + i, "metrics": {"strokes": i}} for i in range(records)]}
    return topic_for(SITE, LINE, device, "telemetry"), json.dumps(body).encode()


def birth(device: str, seq: int) -> tuple[str, bytes]:
    return topic_for(SITE, LINE, device, "status"), json.dumps({"seq": seq, "ts": TS, "status": "online"}).encode()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def processor(rate: float, burst: int, clock: FakeClock) -> Processor:
    limits = Limits(max_payload_bytes=10 * 1024 * 1024, rate_limit=RateLimit(rate, burst))
    return Processor(REGISTRY, limits, monotonic_clock=clock)


def test_a_message_over_quota_is_refused_whole_and_other_devices_are_untouched() -> None:
    clock = FakeClock()
    proc = processor(rate=100, burst=1000, clock=clock)
    outcome = proc.process([batch("a", 1, 600), batch("a", 2, 500), batch("b", 1, 1000), batch("a", 3, 400)])
    assert [index for index, _ in outcome.rejected] == [1]
    _, rejection = outcome.rejected[0]
    assert rejection.reason is RejectReason.RATE_LIMITED
    assert "carries 500 records and the device has 400 left" in rejection.detail
    assert "it could pass in 1.0 s" in rejection.detail and "rate_limit_burst_records 1,000" in rejection.detail
    assert len(outcome.lines) == 600 + 1000 + 400
    assert outcome.seq_gaps == [((SITE, LINE, "a", "telemetry"), 1)]  # seq 2 was never accounted: a gap

    # Replayed later, once the bucket has refilled, the refused message fills its gap.
    clock.now += 5.0
    replay = proc.process([batch("a", 2, 500)])
    assert replay.rejected == [] and len(replay.lines) == 500 and replay.duplicates == []


def test_quotas_fill_again_when_a_batch_was_not_stored() -> None:
    clock = FakeClock()
    proc = processor(rate=1, burst=1000, clock=clock)
    messages = [batch("a", 1, 1000)]
    assert proc.process(messages).rejected == []
    proc.forget_sequences()  # the batch comes again: it must not pay twice
    again = proc.process(messages)
    assert again.rejected == [] and len(again.lines) == 1000


def test_a_birth_refused_for_its_quota_still_restarts_the_seq_accounting() -> None:
    clock = FakeClock()
    proc = processor(rate=1, burst=1000, clock=clock)
    assert proc.process([batch("a", 5, 1000)]).rejected == []
    outcome = proc.process([birth("a", 1), batch("a", 1, 1)])
    assert [r.reason for _, r in outcome.rejected] == [RejectReason.RATE_LIMITED, RejectReason.RATE_LIMITED]
    clock.now += 10.0
    # The agent counts from 1 again after its birth: not a regression, not a duplicate.
    later = proc.process([batch("a", 1, 5)])
    assert later.rejected == [] and later.duplicates == [] and len(later.lines) == 5


def test_a_processor_without_quota_or_clock_bounds_takes_everything() -> None:
    proc = Processor(REGISTRY, Limits(max_payload_bytes=10 * 1024 * 1024))
    outcome = proc.process([batch("a", seq, 10_000) for seq in range(1, 4)])
    assert outcome.rejected == [] and len(outcome.lines) == 30_000


def test_the_processor_bounds_timestamps_by_its_wall_clock() -> None:
    limits = Limits(max_payload_bytes=1024 * 1024, max_clock_skew_s=600)
    proc = Processor(REGISTRY, limits, wall_clock=lambda: TS / 1000 - 3600)  # an hour before the records
    outcome = proc.process([batch("a", 1, 1)])
    assert [r.reason for _, r in outcome.rejected] == [RejectReason.FUTURE_TIMESTAMP]
    assert Processor(REGISTRY, limits, wall_clock=lambda: TS / 1000).process([batch("a", 1, 1)]).rejected == []


def test_a_bug_in_validation_costs_its_message_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from collector import processing  # noqa: PLC0415 - patched below

    real = processing.validate_message

    def failing(topic: str, payload: bytes, *args: object) -> object:
        if b'"seq": 2' in payload:
            raise RuntimeError("boom")
        return real(topic, payload, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(processing, "validate_message", failing)
    proc = Processor(REGISTRY, Limits(max_payload_bytes=1024 * 1024))
    outcome = proc.process([batch("a", 1, 1), batch("a", 2, 1), batch("a", 3, 1)])
    assert len(outcome.lines) == 2
    ((index, rejection),) = outcome.rejected
    assert index == 1 and rejection.reason is RejectReason.INTERNAL_ERROR
    assert "RuntimeError: boom" in rejection.detail and rejection.topic is not None


def test_settings_map_to_limits_and_zero_turns_each_off() -> None:
    defaults = Limits.from_settings(CollectorSettings())
    assert defaults.rate_limit == RateLimit(5000.0, 1_000_000)
    assert defaults.max_clock_skew_s == 600 and defaults.max_record_age_s == 0
    check = defaults.clock_check(TS / 1000)
    assert check is not None and check.max_ahead_ms == 600_000 and check.max_age_ms is None
    off = Limits.from_settings(CollectorSettings(rate_limit_records_per_s=0, max_clock_skew_s=0))
    assert off.rate_limit is None and off.clock_check(TS / 1000) is None


def test_a_burst_smaller_than_one_full_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="rate_limit_burst_records"):
        CollectorSettings(rate_limit_burst_records=9_999)


def test_a_share_group_member_writes_every_valid_message_whatever_its_seq() -> None:
    # Each member sees part of a device's seq: what looks like a regression or a duplicate is its share.
    limits = Limits.from_settings(CollectorSettings(share_group="line-5", max_clock_skew_s=0))
    assert not limits.judge_seq and Limits.from_settings(CollectorSettings()).judge_seq
    proc = Processor(REGISTRY, limits)
    outcome = proc.process([batch("a", 7, 1), batch("a", 3, 1), batch("a", 7, 1)])
    assert outcome.rejected == [] and outcome.duplicates == [] and outcome.seq_gaps == [] and len(outcome.lines) == 3
    judged = Processor(REGISTRY, Limits.from_settings(CollectorSettings(max_clock_skew_s=0)))
    outcome = judged.process([batch("a", 7, 1), batch("a", 3, 1), batch("a", 7, 1)])
    assert [r.reason for _, r in outcome.rejected] == [RejectReason.SEQ_REGRESSION] and len(outcome.duplicates) == 1


def test_the_receive_maximum_defaults_to_three_batches_and_must_hold_one() -> None:
    assert CollectorSettings().in_flight_limit == 15_000
    assert CollectorSettings(batch_size=30_000).in_flight_limit == 65_535
    assert CollectorSettings(receive_maximum=8_000).in_flight_limit == 8_000
    with pytest.raises(ValueError, match=r"receive_maximum .* is below batch_size"):
        CollectorSettings(receive_maximum=100)
