"""Signals to states and counters to production: the pure rules every source shares."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pilot_core.signals import (
    Condition,
    CounterEvent,
    CounterRole,
    CounterSpec,
    CounterTracker,
    EnumStates,
    ProductionCounters,
    StateChange,
    StateDebouncer,
    StateRule,
    as_unsigned,
    classify,
)

# --- counters: what the machine really counted, and what the readings show -------------------------------


@st.composite
def sampled_counter(draw: st.DrawFn) -> tuple[CounterSpec, list[int], int]:
    """A counter's spec, its readings, and the true number of parts counted between the first and the last.

    Between two readings the machine either counts ``k`` parts (0 <= k <= max_step, so it wraps at most
    once), or is reset to 0 and then counts ``k`` parts with ``k`` below the last reading and far enough from
    a wrap to be told apart from one: the conditions under which readings can show what happened at all.
    """
    bits = draw(st.sampled_from([16, 32, None]))
    modulus = None if bits is None else 1 << bits
    max_step = draw(st.none() | st.integers(1, (modulus - 1) if modulus else 10**12))
    spec = CounterSpec(bits=bits, max_step=max_step)
    register = draw(st.integers(0, (modulus - 1) if modulus else 10**12))
    readings, truth = [register], 0
    step_limit = spec.wrap_limit if modulus is not None else 10**12
    for _ in range(draw(st.integers(0, 60))):
        if draw(st.booleans()) or register == 0:
            # Near the top of the register often, so that wraps are common.
            if modulus is not None and draw(st.booleans()):
                k = draw(st.integers(min(max(0, modulus - register - 3), step_limit), step_limit))
            else:
                k = draw(st.integers(0, min(step_limit, 10**6)))
            register = register + k if modulus is None else (register + k) % modulus
        else:
            k = draw(st.integers(0, register - 1))
            if modulus is not None and modulus - register + k <= spec.wrap_limit:
                continue  # would read as a wrap: a reset this close to the top cannot be seen as one
            register = k
        truth += k
        readings.append(register)
    return spec, readings, truth


@given(sampled_counter())
def test_any_readings_with_resets_and_wraps_count_exactly_the_true_increments(
    case: tuple[CounterSpec, list[int], int],
) -> None:
    spec, readings, truth = case
    tracker = CounterTracker(spec)
    steps = [tracker.observe(value) for value in readings]
    assert steps[0] == (0, CounterEvent.FIRST)
    assert all(step.increment >= 0 for step in steps)
    assert sum(step.increment for step in steps) == truth


@given(sampled_counter(), st.data())
def test_a_restart_resuming_from_the_kept_last_reading_counts_nothing_twice_and_nothing_lost(
    case: tuple[CounterSpec, list[int], int], data: st.DataObject
) -> None:
    spec, readings, truth = case
    cut = data.draw(st.integers(1, len(readings)))
    before = CounterTracker(spec)
    counted = sum(before.observe(value).increment for value in readings[:cut])
    after = CounterTracker(spec, last=before.last)  # what the agent keeps on disk
    counted += sum(after.observe(value).increment for value in readings[cut:])
    assert counted == truth


@given(st.sampled_from([16, 32]), st.data())
def test_whatever_a_register_reads_the_production_is_never_negative_nor_beyond_its_range(
    bits: int, data: st.DataObject
) -> None:
    top = (1 << bits) - 1
    tracker = CounterTracker(CounterSpec(bits=bits))
    for value in data.draw(st.lists(st.integers(0, top), max_size=50)):
        assert 0 <= tracker.observe(value).increment <= top


def test_a_16_bit_counter_wraps_at_65536_and_a_fall_far_from_the_top_is_a_reset() -> None:
    tracker = CounterTracker(CounterSpec(bits=16), last=65_530)
    assert tracker.observe(4) == (10, CounterEvent.WRAP)
    assert tracker.observe(1_000) == (996, CounterEvent.RISE)
    assert tracker.observe(3) == (3, CounterEvent.RESET)  # set back to 0 by the PLC, then 3 parts
    assert tracker.observe(3) == (0, CounterEvent.STEADY)


def test_a_32_bit_counter_wraps_at_its_own_width_and_max_step_decides_wrap_or_reset() -> None:
    assert CounterTracker(CounterSpec(bits=32), last=2**32 - 2).observe(1) == (3, CounterEvent.WRAP)
    strict = CounterTracker(CounterSpec(bits=16, max_step=100), last=65_000)
    assert strict.observe(10) == (10, CounterEvent.RESET)  # a wrap would mean 546 parts in one interval


def test_a_counter_that_never_wraps_reads_every_fall_as_a_reset() -> None:
    tracker = CounterTracker(CounterSpec(bits=None), last=10**15)
    assert tracker.observe(7) == (7, CounterEvent.RESET)


def test_a_reset_that_climbs_back_past_the_last_reading_cannot_be_seen() -> None:
    """The documented limit: 0 then 150 parts after a reading of 100 looks like 50 parts."""
    tracker = CounterTracker(CounterSpec(bits=16), last=100)
    assert tracker.observe(150) == (50, CounterEvent.RISE)


def test_readings_outside_the_register_and_bad_specs_are_refused_clearly() -> None:
    tracker = CounterTracker(CounterSpec(bits=16))
    with pytest.raises(ValueError, match="outside the register's range 0 to 65,535"):
        tracker.observe(65_536)
    with pytest.raises(ValueError, match="outside the register's range"):
        tracker.observe(-1)
    with pytest.raises(TypeError, match="integer"):
        tracker.observe(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="below the register's range"):
        CounterSpec(bits=16, max_step=65_536)
    with pytest.raises(ValueError, match="1 to 64 bits"):
        CounterSpec(bits=0)
    assert as_unsigned(-1, 16) == 65_535


# --- several counters make one production record -------------------------------------------------------


def test_good_and_scrap_counters_add_up_to_produced() -> None:
    counters = ProductionCounters({CounterRole.GOOD: CounterSpec(16), CounterRole.SCRAP: CounterSpec(16)})
    counters.observe({CounterRole.GOOD: 10, CounterRole.SCRAP: 2})
    counts, _ = counters.observe({CounterRole.GOOD: 15, CounterRole.SCRAP: 3})
    assert counts == (6, 5, 1)


def test_counters_that_do_not_say_what_was_produced_are_refused() -> None:
    with pytest.raises(ValueError, match="do not say what was produced"):
        ProductionCounters({CounterRole.SCRAP: CounterSpec(16)})
    counters = ProductionCounters({CounterRole.PRODUCED: CounterSpec(16)})
    with pytest.raises(ValueError, match="no reading of the produced counter"):
        counters.observe({})


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=40))
def test_a_total_and_a_scrap_counter_out_of_step_lose_no_scrap_and_never_make_good_negative(
    steps: list[tuple[int, int]],
) -> None:
    counters = ProductionCounters({CounterRole.PRODUCED: CounterSpec(16), CounterRole.SCRAP: CounterSpec(16)})
    total = scrap = 0
    counters.observe({CounterRole.PRODUCED: 0, CounterRole.SCRAP: 0})
    produced_sum = scrap_sum = 0
    for total_step, scrap_step in steps:
        total, scrap = (total + total_step) % 65_536, (scrap + scrap_step) % 65_536
        counts, _ = counters.observe({CounterRole.PRODUCED: total, CounterRole.SCRAP: scrap})
        assert counts.good >= 0 and counts.scrap >= 0 and counts.good + counts.scrap == counts.produced
        produced_sum += counts.produced
        scrap_sum += counts.scrap
    assert produced_sum == sum(t for t, _ in steps)
    assert scrap_sum + counters.scrap_ahead == sum(s for _, s in steps)


# --- states from signals --------------------------------------------------------------------------------

CLAMP = (
    StateRule("cutting", (Condition("spindle_current", above=4.0),), min_duration_ms=5_000),
    StateRule("idle", (Condition("spindle_current", below=0.5),), min_duration_ms=5_000),
)


def run(rules: tuple[StateRule, ...], samples: list[tuple[int, dict[str, float | bool]]]) -> list[StateChange]:
    debouncer = StateDebouncer()
    changes = []
    for ts, signals in samples:
        rule = classify(rules, signals)
        change = debouncer.observe(ts, rule.state if rule else None, rule.min_duration_ms if rule else 0)
        if change:
            changes.append(change)
    return changes


def test_a_current_clamp_calls_cutting_after_5_s_above_4_a_dated_when_it_started() -> None:
    samples = [(t * 1000, {"spindle_current": 6.0}) for t in range(0, 7)]
    assert run(CLAMP, samples) == [StateChange(0, "cutting")]


def test_a_flicker_shorter_than_the_minimum_duration_is_not_a_state_change() -> None:
    samples = [(t * 1000, {"spindle_current": 6.0}) for t in range(0, 10)]
    samples += [(10_000, {"spindle_current": 0.1}), (11_000, {"spindle_current": 0.2})]  # 2 s dip
    samples += [(t * 1000, {"spindle_current": 6.0}) for t in range(12, 20)]
    assert run(CLAMP, samples) == [StateChange(0, "cutting")]


def test_a_current_between_the_thresholds_keeps_the_state_it_was_in() -> None:
    samples = [(t * 1000, {"spindle_current": 6.0}) for t in range(0, 6)]
    samples += [(t * 1000, {"spindle_current": 2.0}) for t in range(6, 60)]  # hysteresis band
    samples += [(t * 1000, {"spindle_current": 0.2}) for t in range(60, 66)]
    assert run(CLAMP, samples) == [StateChange(0, "cutting"), StateChange(60_000, "idle")]


def test_the_band_between_thresholds_breaks_a_candidate_state() -> None:
    samples = [(0, {"spindle_current": 6.0}), (3_000, {"spindle_current": 2.0}), (4_000, {"spindle_current": 6.0})]
    samples += [(8_000, {"spindle_current": 6.0}), (9_000, {"spindle_current": 6.0})]
    assert run(CLAMP, samples) == [StateChange(4_000, "cutting")]


def test_stack_light_bits_first_matching_rule_wins() -> None:
    rules = (
        StateRule("alarm", (Condition("red", equals=True),)),
        StateRule("cutting", (Condition("green", equals=True),)),
        StateRule("idle", (Condition("green", equals=False), Condition("red", equals=False))),
    )
    assert classify(rules, {"red": True, "green": True}) == rules[0]
    assert classify(rules, {"red": False, "green": True}) == rules[1]
    assert classify(rules, {"red": False, "green": False}) == rules[2]
    assert classify(rules, {"green": False}) is None  # the red bit was not read: no rule holds
    assert not Condition("green", equals=True).holds(1)  # a number is not a bit


def test_a_plc_state_number_maps_to_a_state_and_an_unknown_number_calls_for_none() -> None:
    states = EnumStates({1: "cutting", 2: "alarm"})
    assert [states.state_of(v) for v in (1, 2.0, 3, 1.5)] == ["cutting", "alarm", None, None]
    assert EnumStates({1: "cutting"}, otherwise="idle").state_of(9) == "idle"


def test_a_lost_source_forgets_the_state_so_the_same_state_is_reported_again() -> None:
    debouncer = StateDebouncer()
    assert debouncer.observe(0, "cutting") == StateChange(0, "cutting")
    assert debouncer.observe(1_000, "cutting") is None
    debouncer.forget()
    assert debouncer.observe(60_000, "cutting") == StateChange(60_000, "cutting")


def test_bad_conditions_and_time_going_backwards_are_refused() -> None:
    with pytest.raises(ValueError, match="needs above, below or equals"):
        Condition("x")
    with pytest.raises(ValueError, match="never holds"):
        Condition("x", above=5, below=1)
    debouncer = StateDebouncer()
    debouncer.observe(1_000, "idle")
    with pytest.raises(ValueError, match="older than the last one"):
        debouncer.observe(500, "idle")


@given(
    st.lists(st.tuples(st.integers(0, 3_000), st.sampled_from(["a", "b", "c", None])), max_size=80),
    st.integers(0, 5_000),
)
def test_every_state_change_was_called_for_without_a_break_for_its_minimum_duration(
    gaps_and_states: list[tuple[int, str | None]], min_duration_ms: int
) -> None:
    assume(gaps_and_states)
    samples, ts = [], 0
    for gap, state in gaps_and_states:
        ts += gap
        samples.append((ts, state))
    debouncer = StateDebouncer()
    changes = [c for t, s in samples if (c := debouncer.observe(t, s, min_duration_ms))]
    for before, after in itertools.pairwise(changes):
        assert before.state != after.state and before.ts_ms <= after.ts_ms
    for change in changes:
        # Some run of samples starting at the change's time called for its state without a break for at
        # least the minimum duration.
        starts = [i for i, (t, s) in enumerate(samples) if t == change.ts_ms and s == change.state]
        longest = 0
        for i in starts:
            j = i
            while j + 1 < len(samples) and samples[j + 1][1] == change.state:
                j += 1
            longest = max(longest, samples[j][0] - change.ts_ms)
        assert starts and longest >= min_duration_ms
