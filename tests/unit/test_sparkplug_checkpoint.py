"""The Sparkplug host's checkpoint file (collector.sparkplug_checkpoint): versioned JSON that never runs code.

The processor is the real one, fed real protobuf bytes; the file is on disk. A damaged, truncated or
unknown-version file, or a pickle from before, never stops the collector: it starts fresh and asks for rebirths.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import pytest

from adapters.sparkplug import sparkplug_b_pb2 as pb
from collector.processing import BatchOutcome, Limits, Processor, SparkplugIntake
from collector.sparkplug_checkpoint import CHECKPOINT_FILE, PICKLE_FILE
from pilot_core.sparkplug import STATE_VERSION, DataType
from tests.unit.test_sparkplug_host import DEVICE, GROUP, MAP, NODE, T0, registry


def payload(seq: int, ts: int, *metrics: tuple[str | None, int | None, int, float | int]) -> bytes:
    """Protobuf bytes: metrics as (name, alias, datatype, value)."""
    message = pb.Payload(timestamp=ts, seq=seq)
    for name, alias, datatype, value in metrics:
        metric = message.metrics.add()
        if name is not None:
            metric.name = name
        if alias is not None:
            metric.alias = alias
        metric.datatype = datatype
        if datatype == DataType.DOUBLE:
            metric.double_value = float(value)
        else:
            metric.long_value = int(value)
    return message.SerializeToString()


def topic(kind: str, device: str | None = DEVICE) -> str:
    return f"spBv1.0/{GROUP}/{kind}/{NODE}" + (f"/{device}" if device else "")


BIRTHS = [
    (topic("NBIRTH", None), payload(0, T0, ("bdSeq", None, DataType.INT64, 1))),
    (
        topic("DBIRTH"),
        payload(
            1,
            T0,
            ("belt_speed", 1, DataType.DOUBLE, 1.5),
            ("Status/Code", 2, DataType.INT64, 1),
            ("Counters/Boxes", 3, DataType.INT64, 100),
        ),
    ),
]


def boxes(seq: int, ts: int, count: int) -> tuple[str, bytes]:
    return topic("DDATA"), payload(seq, ts, (None, 3, DataType.INT64, count))


def processor(folder: Path) -> Processor:
    return Processor(registry(), Limits(65536), sparkplug=SparkplugIntake((MAP,), 10.0, folder / CHECKPOINT_FILE))


def durable(proc: Processor, outcome: BatchOutcome) -> None:
    assert outcome.checkpoint is not None
    proc.commit(outcome.checkpoint)


def production(outcome: BatchOutcome) -> list[str]:
    return [line for line in outcome.lines if line.startswith("production,")]


def test_the_checkpoint_is_versioned_json_written_whole_and_a_restart_carries_on_from_it(tmp_path: Path) -> None:
    first = processor(tmp_path)
    durable(first, first.process([*BIRTHS, boxes(2, T0 + 1000, 104)]))
    saved = json.loads((tmp_path / CHECKPOINT_FILE).read_bytes())
    assert saved["format"] == "pilot-sparkplug-host" and saved["version"] == STATE_VERSION
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left beside it

    again = processor(tmp_path)  # a restart: the same births, seq and counter, no rebirth needed
    outcome = again.process([boxes(3, T0 + 2000, 110)])
    assert outcome.rejected == [] and outcome.rebirths == [] and outcome.seq_gaps == []
    assert any("produced=6i" in line for line in production(outcome))  # counted from 104, not from nothing


def fresh(proc: Processor) -> None:
    """A processor that knows no birth: data is refused and a rebirth is asked for."""
    outcome = proc.process([boxes(2, T0 + 1000, 104)])
    assert [r.reason.value for _, r in outcome.rejected] == ["sparkplug_no_birth"]
    assert outcome.rebirths == [(GROUP, NODE)]


class RunsCode:
    """What a tampered pickle holds: unpickling it calls os.mkdir."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_a_checkpoint_that_would_run_code_when_unpickled_is_never_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "ran"
    (tmp_path / CHECKPOINT_FILE).write_bytes(pickle.dumps({"nodes": RunsCode(marker)}))
    with caplog.at_level(logging.WARNING, "pilot.collector"):
        proc = processor(tmp_path)
    assert not marker.exists()
    assert "Sparkplug host state" in caplog.text and "rebirth" in caplog.text
    fresh(proc)


def good_snapshot(folder: Path) -> bytes:
    proc = processor(folder)
    durable(proc, proc.process([*BIRTHS, boxes(2, T0 + 1000, 104)]))
    return (folder / CHECKPOINT_FILE).read_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        "empty",
        "truncated",
        "garbage",
        "unknown version",
        "another format",
        "a wrong type",
        "an unknown field",
        "a counter outside its register",
    ],
)
def test_a_damaged_truncated_or_unknown_version_checkpoint_is_logged_and_the_host_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    good = good_snapshot(tmp_path)
    state = json.loads(good)
    if damage == "unknown version":
        state["version"] = STATE_VERSION + 1
    elif damage == "another format":
        state["format"] = "something else"
    elif damage == "a wrong type":
        state["nodes"][0]["seq"] = "3"
    elif damage == "an unknown field":
        state["nodes"][0]["rebirth_requested_s"] = 1.0
    elif damage == "a counter outside its register":
        state["derivations"][0]["counters"]["produced"] = {"bits": 8, "max_step": None, "last": 1000}
    data = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "garbage": b"\x80\x04\x95garbage\xff",
    }.get(damage, json.dumps(state).encode())
    (tmp_path / CHECKPOINT_FILE).write_bytes(data)
    with caplog.at_level(logging.WARNING, "pilot.collector"):
        proc = processor(tmp_path)
    assert "Sparkplug host state" in caplog.text and "rebirth" in caplog.text
    fresh(proc)


def test_an_old_pickled_state_is_migrated_once_to_json_and_deleted(tmp_path: Path) -> None:
    proc = processor(tmp_path)
    proc.process([*BIRTHS, boxes(2, T0 + 1000, 104)])
    assert proc.host is not None
    # What versions before the JSON checkpoint wrote: the host's objects, pickled.
    (tmp_path / PICKLE_FILE).write_bytes(pickle.dumps({"nodes": proc.host.nodes, "derivations": proc.host.derivations}))

    migrated = processor(tmp_path)
    assert not (tmp_path / PICKLE_FILE).exists()
    assert json.loads((tmp_path / CHECKPOINT_FILE).read_bytes())["version"] == STATE_VERSION
    outcome = migrated.process([boxes(3, T0 + 2000, 110)])
    assert outcome.rejected == [] and outcome.rebirths == []
    assert any("produced=6i" in line for line in production(outcome))


def test_an_old_pickle_naming_anything_but_the_state_s_classes_is_ignored_unrun(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "ran"
    (tmp_path / PICKLE_FILE).write_bytes(pickle.dumps({"nodes": RunsCode(marker), "derivations": {}}))
    with caplog.at_level(logging.WARNING, "pilot.collector"):
        proc = processor(tmp_path)
    assert not marker.exists()
    assert "cannot be migrated" in caplog.text and "os" in caplog.text
    fresh(proc)
