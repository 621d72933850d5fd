"""The Sparkplug B host's state machine (pilot_core.sparkplug), without I/O: births, aliases, seq, deaths, mapping."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.catalog import load_profiles
from adapters.sparkplug.codec import SparkplugDecodeError, decode_payload, rebirth_command
from collector.settings import CollectorSettings
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.sparkplug import (
    DataType,
    SparkplugDeviceMap,
    SparkplugHost,
    SparkplugTopic,
    SpbMetric,
    SpbPayload,
    Verdict,
    map_problems,
    parse_sparkplug_topic,
)
from pilot_core.validation import ClockCheck, RejectReason

GROUP, NODE, DEVICE = "plant1", "line3", "belt1"
T0 = 1_780_000_000_000


@functools.cache
def registry() -> DeviceRegistry:
    entries = [DeviceEntry(site=GROUP, line=NODE, device=DEVICE, profile="conveyor")]
    return DeviceRegistry(entries, load_profiles())


def metric(
    name: str | None, value: float | bool | int, datatype: int, alias: int | None = None, **extra: int | bool
) -> SpbMetric:
    field = {DataType.DOUBLE: "double_value", DataType.BOOLEAN: "boolean_value", DataType.INT64: "long_value"}.get(
        DataType(datatype), "int_value"
    )
    return SpbMetric(name, alias, extra.get("timestamp"), datatype, value, field, bool(extra.get("is_historical")))


def topic(kind: str, device: str | None = DEVICE) -> SparkplugTopic:
    return parse_sparkplug_topic(f"spBv1.0/{GROUP}/{kind}/{NODE}" + (f"/{device}" if device else ""))


def nbirth(seq: int = 0, bd_seq: int = 1) -> SpbPayload:
    return SpbPayload(T0, seq, (metric("bdSeq", bd_seq, DataType.INT64),))


def dbirth(seq: int) -> SpbPayload:
    return SpbPayload(
        T0,
        seq,
        (
            metric("belt_speed", 1.5, DataType.DOUBLE, alias=1),
            metric("Status/Code", 1, DataType.INT32, alias=2),
            metric("Counters/Boxes", 100, DataType.INT64, alias=3),
            metric("Diagnostics/Uptime", 7, DataType.INT64, alias=4),
        ),
    )


def ddata(seq: int, ts: int, *metrics: SpbMetric) -> SpbPayload:
    return SpbPayload(ts, seq, metrics)


MAP = SparkplugDeviceMap.model_validate(
    {
        "group": GROUP,
        "edge_node": NODE,
        "device": DEVICE,
        "metrics": {"Status/Code": "code", "Counters/Boxes": "boxes"},
        "state": {"item": "code", "map": {1: "running", 2: "jammed"}},
        "production": {"product": "box", "counters": {"produced": {"item": "boxes"}}},
    }
)


def born_host() -> SparkplugHost:
    host = SparkplugHost(registry(), [MAP], rebirth_interval_s=10)
    assert host.handle(topic("NBIRTH", None), nbirth(), T0, 0.0).verdict is Verdict.STORED
    result = host.handle(topic("DBIRTH"), dbirth(1), T0, 0.0)
    assert result.verdict is Verdict.STORED and result.rejection is None
    return host


def test_a_birth_then_aliased_data_become_telemetry_states_and_production() -> None:
    host = born_host()
    result = host.handle(
        topic("DDATA"),
        ddata(2, T0 + 1000, metric(None, 2.5, DataType.DOUBLE, alias=1), metric(None, 104, DataType.INT64, alias=3)),
        T0 + 1000,
        1.0,
    )
    assert result.rejection is None
    lines = "\n".join(result.lines)
    assert f"belt_speed=2.5,seq=2i {T0 + 1000}" in lines
    assert "produced=4i,good=4i,scrap=0i" in lines
    state = host.handle(
        topic("DDATA"),
        ddata(3, T0 + 2000, metric(None, 2, DataType.INT32, alias=2)),
        T0 + 2000,
        2.0,
    )
    assert any(line.startswith("state,") and 'state="jammed"' in line for line in state.lines)


def test_data_before_any_birth_is_refused_and_a_rebirth_requested_but_not_twice_within_the_interval() -> None:
    host = SparkplugHost(registry(), [MAP], rebirth_interval_s=10)
    first = host.handle(topic("DDATA"), ddata(5, T0, metric(None, 1.0, DataType.DOUBLE, alias=1)), T0, 0.0)
    assert first.rejection is not None and first.rejection.reason is RejectReason.SPARKPLUG_NO_BIRTH
    assert first.rebirth == (GROUP, NODE)
    again = host.handle(topic("DDATA"), ddata(6, T0, metric(None, 1.0, DataType.DOUBLE, alias=1)), T0, 5.0)
    assert again.rebirth is None
    later = host.handle(topic("DDATA"), ddata(7, T0, metric(None, 1.0, DataType.DOUBLE, alias=1)), T0, 10.5)
    assert later.rebirth == (GROUP, NODE)


def test_an_unknown_alias_is_refused_with_a_rebirth() -> None:
    host = born_host()
    result = host.handle(topic("DDATA"), ddata(2, T0, metric(None, 1.0, DataType.DOUBLE, alias=99)), T0, 1.0)
    assert result.rejection is not None and result.rejection.reason is RejectReason.SPARKPLUG_UNKNOWN_ALIAS
    assert result.rebirth == (GROUP, NODE)


def test_a_seq_gap_is_written_and_asks_for_a_rebirth_and_a_repeat_is_a_duplicate() -> None:
    host = born_host()
    gap = host.handle(topic("DDATA"), ddata(5, T0 + 1, metric(None, 1.0, DataType.DOUBLE, alias=1)), T0, 1.0)
    assert gap.seq_gap == 3 and gap.rebirth == (GROUP, NODE) and gap.lines
    repeat = host.handle(topic("DDATA"), ddata(5, T0 + 1, metric(None, 1.0, DataType.DOUBLE, alias=1)), T0, 1.0)
    assert repeat.verdict is Verdict.DUPLICATE and not repeat.lines


def test_a_death_with_a_stale_bd_seq_is_ignored_and_the_current_one_takes_the_devices_offline() -> None:
    host = born_host()
    stale = host.handle(topic("NDEATH", None), SpbPayload(T0, None, (metric("bdSeq", 0, DataType.INT64),)), T0, 1.0)
    assert stale.verdict is Verdict.STALE_DEATH and not stale.lines
    death = host.handle(topic("NDEATH", None), SpbPayload(T0, None, (metric("bdSeq", 1, DataType.INT64),)), T0 + 5, 1.0)
    assert any(line.startswith("status,") and "online=f" in line for line in death.lines)
    after = host.handle(topic("DDATA"), ddata(2, T0, metric(None, 1.0, DataType.DOUBLE, alias=1)), T0, 20.0)
    assert after.rejection is not None and after.rejection.reason is RejectReason.SPARKPLUG_NO_BIRTH


def test_a_mapped_metric_of_a_type_that_does_not_fit_is_refused_and_types_never_change() -> None:
    host = born_host()
    wrong = host.handle(
        topic("DDATA"),
        ddata(2, T0, SpbMetric(alias=1, value="fast", value_field="string_value")),
        T0,
        1.0,
    )
    assert wrong.rejection is not None and wrong.rejection.reason is RejectReason.WRONG_TYPE
    # An integer for a float metric is stored as a float: the profile decides the field's type.
    widened = host.handle(
        topic("DDATA"),
        ddata(3, T0, SpbMetric(name="belt_speed", datatype=DataType.INT32, value=2, value_field="int_value")),
        T0,
        1.0,
    )
    assert widened.rejection is None and "belt_speed=2.0" in widened.lines[0]
    template = host.handle(
        topic("DDATA"),
        ddata(4, T0, SpbMetric(name="belt_speed", datatype=DataType.TEMPLATE, value_field="template_value")),
        T0,
        1.0,
    )
    assert template.rejection is not None and template.rejection.reason is RejectReason.SPARKPLUG_UNSUPPORTED


def test_historical_metrics_keep_their_timestamps_and_are_counted() -> None:
    host = born_host()
    old = T0 - 60_000
    result = host.handle(
        topic("DDATA"),
        ddata(2, T0, metric(None, 0.5, DataType.DOUBLE, alias=1, timestamp=old, is_historical=True)),
        T0,
        1.0,
    )
    assert result.historical_points == 1 and result.lines[0].endswith(f" {old}")


def test_the_state_survives_a_json_round_trip() -> None:
    host = born_host()
    copy = SparkplugHost(registry(), [MAP])
    copy.restore(host.snapshot())
    result = copy.handle(topic("DDATA"), ddata(2, T0, metric(None, 1.0, DataType.DOUBLE, alias=1)), T0, 1.0)
    assert result.rejection is None and result.seq_gap == 0


def test_hostile_bytes_never_decode_into_something() -> None:
    _, good = rebirth_command(GROUP, NODE, T0)
    for bad in (good[:-3], b"\xff" * 50, b"\x12\x05\x0a\x03abc\xff"):
        try:
            decode_payload(bad)
        except SparkplugDecodeError:
            continue
        raise AssertionError(f"{bad!r} decoded")


@given(st.lists(st.integers(0, 255), min_size=1, max_size=60))
def test_any_seq_sequence_never_crashes_and_gaps_count_what_is_missing(seqs: list[int]) -> None:
    host = born_host()
    last = 1
    for n, seq in enumerate(seqs):
        result = host.handle(
            topic("DDATA"),
            ddata(seq, T0 + n, metric(None, 1.0, DataType.DOUBLE, alias=1)),
            T0,
            float(n * 100),
        )
        behind = (last - seq) % 256
        if behind < 16:
            assert result.verdict is Verdict.DUPLICATE
        else:
            assert result.seq_gap == (seq - last - 1) % 256
            assert (result.rebirth is not None) == (result.seq_gap > 0)
            last = seq


@given(
    st.lists(
        st.builds(
            SpbMetric,
            name=st.one_of(st.none(), st.sampled_from(["belt_speed", "Status/Code", "x"])),
            alias=st.one_of(st.none(), st.integers(0, 5)),
            timestamp=st.one_of(st.none(), st.integers(0, 2**45)),
            datatype=st.one_of(st.none(), st.integers(0, 40)),
            value=st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text()),
            value_field=st.sampled_from(
                [None, "int_value", "long_value", "double_value", "boolean_value", "string_value"]
            ),
            is_historical=st.booleans(),
            is_null=st.booleans(),
        ),
        max_size=6,
    ),
    st.sampled_from(["NBIRTH", "DBIRTH", "DDATA", "NDATA", "DDEATH", "NDEATH"]),
)
def test_any_payload_is_stored_refused_or_ignored_never_a_crash(metrics: list[SpbMetric], kind: str) -> None:
    host = born_host()
    result = host.handle(topic(kind, DEVICE if kind[0] == "D" else None), SpbPayload(T0, 2, tuple(metrics)), T0, 1.0)
    assert (result.verdict is Verdict.REFUSED) == (result.rejection is not None)


def test_a_mapping_to_an_unregistered_device_or_an_unknown_state_is_reported_at_start() -> None:
    bad = SparkplugDeviceMap.model_validate(
        {**MAP.model_dump(exclude_none=True), "state": {"item": "code", "map": {1: "sprinting"}}}
    )
    elsewhere = SparkplugDeviceMap(group=GROUP, edge_node=NODE, device="nobody")
    problems = map_problems([bad, elsewhere], registry())
    assert any("no state 'sprinting'" in p for p in problems)
    assert any("'nobody' is not registered" in p for p in problems)
    assert map_problems([MAP], registry()) == []


def test_the_sparkplug_host_refuses_a_shared_subscription() -> None:
    with pytest.raises(ValueError, match="shared subscription splits"):
        CollectorSettings(share_group="g", sparkplug={"enabled": True})  # type: ignore[arg-type]


def test_a_device_neither_registered_nor_mapped_is_not_ours_and_is_ignored_not_dead_lettered() -> None:
    host = born_host()
    other = parse_sparkplug_topic(f"spBv1.0/{GROUP}/DBIRTH/{NODE}/hvac")
    result = host.handle(other, dbirth(2), T0, 1.0)
    assert result.verdict is Verdict.STORED and not result.lines and result.rejection is None


@pytest.mark.parametrize("ts", [1, 978_307_199_999, 2**45, 2**63, 2**64 - 1])
def test_a_timestamp_outside_the_contract_s_range_is_refused_and_changes_nothing(ts: int) -> None:
    # Sparkplug timestamps are uint64: the contract's 2001-2100 holds for them too, in every message kind, and a
    # refused message leaves the state and counters derived so far as they were.
    clock = ClockCheck(T0, max_ahead_ms=300_000)
    for kind, payload in (
        ("DDATA", ddata(2, T0 + 1, metric(None, 2.0, DataType.DOUBLE, alias=1, timestamp=ts))),  # telemetry
        ("DDATA", ddata(2, T0 + 1, metric(None, 2, DataType.INT32, alias=2, timestamp=ts))),  # a state signal only
        ("DDATA", ddata(2, ts, metric(None, 104, DataType.INT64, alias=3))),  # a counter, by the payload's time
        ("DBIRTH", SpbPayload(ts, 2, dbirth(2).metrics)),
        ("DDEATH", SpbPayload(ts, 2, ())),
        ("NDEATH", SpbPayload(ts, None, (metric("bdSeq", 1, DataType.INT64),))),
    ):
        for checked in (clock, None):
            host = born_host()
            result = host.handle(topic(kind, None if kind[0] == "N" else DEVICE), payload, T0, 1.0, checked)
            assert result.rejection is not None, (kind, payload)
            assert result.rejection.reason is RejectReason.BAD_TIMESTAMP, result.rejection
            assert "epoch milliseconds" in result.rejection.detail
            after = host.handle(
                topic("DDATA"),
                ddata(
                    3, T0 + 5000, metric(None, 2, DataType.INT32, alias=2), metric(None, 107, DataType.INT64, alias=3)
                ),
                T0 + 5000,
                2.0,
                checked,
            )
            assert after.rejection is None, after.rejection
            lines = "\n".join(after.lines)
            assert f'state="jammed",time_class="minor_stop",seq=3i {T0 + 5000}' in lines, (kind, ts, lines)
            assert "produced=7i" in lines, (kind, ts, lines)


def test_a_message_refused_while_deriving_leaves_the_counters_and_state_as_they_were() -> None:
    # A future timestamp on a signal that is no profile metric is refused only once the state is derived; a counter
    # leap larger than a count can hold, only once it is counted. Neither may move what the next message counts.
    clock = ClockCheck(T0, max_ahead_ms=300_000)
    host = born_host()
    future = host.handle(
        topic("DDATA"), ddata(2, T0 + 86_400_000, metric(None, 2, DataType.INT32, alias=2)), T0, 1.0, clock
    )
    assert future.rejection is not None and future.rejection.reason is RejectReason.FUTURE_TIMESTAMP
    leap = host.handle(
        topic("DDATA"),
        ddata(3, T0 + 1000, SpbMetric(None, 3, None, DataType.UINT64, 2**64 - 1, "long_value")),
        T0,
        1.0,
        clock,
    )
    assert leap.rejection is not None and leap.rejection.reason is RejectReason.OUT_OF_RANGE, leap.rejection
    after = host.handle(
        topic("DDATA"),
        ddata(4, T0 + 2000, metric(None, 2, DataType.INT32, alias=2), metric(None, 105, DataType.INT64, alias=3)),
        T0,
        2.0,
        clock,
    )
    lines = "\n".join(after.lines)
    assert f'state="jammed",time_class="minor_stop",seq=4i {T0 + 2000}' in lines, lines
    assert "produced=5i,good=5i" in lines, lines


@pytest.mark.parametrize(
    ("metrics", "detail"),
    [
        (
            (metric("belt_speed", 1.5, DataType.DOUBLE, alias=1), metric("Status/Code", 1, DataType.INT32, alias=1)),
            "alias 1 is given to both 'belt_speed' and 'Status/Code'",
        ),
        (
            (metric("belt_speed", 1.5, DataType.DOUBLE, alias=1), metric("belt_speed", True, DataType.BOOLEAN)),
            "'belt_speed' is in the birth twice, as Double and as Boolean",
        ),
    ],
)
def test_a_birth_that_names_a_metric_ambiguously_is_refused_and_the_earlier_birth_kept(
    metrics: tuple[SpbMetric, ...], detail: str
) -> None:
    # Otherwise the later entry wins silently: a belt speed sent by alias 1 would be read as a state code.
    host = born_host()
    refused = host.handle(topic("DBIRTH"), SpbPayload(T0 + 1, 2, metrics), T0, 1.0)
    assert refused.rejection is not None and refused.rejection.reason is RejectReason.SCHEMA
    assert detail in refused.rejection.detail, refused.rejection.detail
    node = host.handle(
        topic("NBIRTH", None), SpbPayload(T0, 0, (metric("bdSeq", 2, DataType.INT64), *metrics)), T0, 1.0
    )
    assert node.rejection is not None and detail in node.rejection.detail
    after = host.handle(topic("DDATA"), ddata(3, T0 + 2, metric(None, 2.0, DataType.DOUBLE, alias=1)), T0, 2.0)
    assert after.rejection is None and after.lines == [
        f"telemetry_conveyor,device={DEVICE},line={NODE},site={GROUP} belt_speed=2.0,seq=3i {T0 + 2}"
    ]
