"""The collector's disk spool: durable appends, ordered replay, torn tails, quota, reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector import spool as spool_module
from collector.spool import Spool, SpooledBatch, SpoolFull


def batch(n: int) -> SpooledBatch:
    return SpooledBatch(
        [f"m,device=d{n} v={n}i {n}"], [0], [(f"pilot/v1/s/l/d{n}/telemetry", f'{{"seq": {n}}}'.encode())]
    )


def drain(spool: Spool) -> list[SpooledBatch]:
    replayed = []
    while (record := spool.peek()) is not None:
        replayed.append(record.batch)
        spool.commit(record)
    return replayed


def test_batches_replay_in_order_and_the_spool_empties(tmp_path: Path) -> None:
    spool = Spool(tmp_path, quota_bytes=1_000_000)
    for n in range(5):
        spool.append(batch(n))
    assert spool.pending == 5 and spool.bytes > 0
    assert drain(spool) == [batch(n) for n in range(5)]
    assert spool.pending == 0 and spool.bytes == 0
    spool.append(batch(9))  # and it takes more afterwards
    assert drain(spool) == [batch(9)]


def test_a_reopened_spool_replays_what_was_left_and_nothing_twice(tmp_path: Path) -> None:
    spool = Spool(tmp_path, quota_bytes=1_000_000)
    for n in range(4):
        spool.append(batch(n))
    first = spool.peek()
    assert first is not None
    spool.commit(first)
    reopened = Spool(tmp_path, quota_bytes=1_000_000)  # as after a crash
    assert reopened.pending == 3
    assert drain(reopened) == [batch(n) for n in range(1, 4)]


def test_a_torn_last_record_is_cut_off_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, quota_bytes=1_000_000)
    spool.append(batch(1))
    spool.append(batch(2))
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-3])  # the process died mid-append: that batch was never acknowledged
    reopened = Spool(tmp_path, quota_bytes=1_000_000)
    assert reopened.pending == 1
    reopened.append(batch(3))
    assert drain(reopened) == [batch(1), batch(3)]


def test_the_quota_refuses_more_and_frees_as_it_drains(tmp_path: Path) -> None:
    one = Spool(tmp_path / "probe", quota_bytes=1_000_000)
    one.append(batch(0))
    size = one.bytes
    spool = Spool(tmp_path / "spool", quota_bytes=3 * size)
    for n in range(3):
        spool.append(batch(n))
    with pytest.raises(SpoolFull, match="quota"):
        spool.append(batch(3))
    record = spool.peek()
    assert record is not None
    spool.commit(record)
    assert spool.pending == 2


def test_segments_roll_over_and_are_deleted_once_replayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)
    spool = Spool(tmp_path, quota_bytes=1_000_000)
    for n in range(6):
        spool.append(batch(n))
    assert len(list(tmp_path.glob("*.seg"))) > 2
    assert Spool(tmp_path, quota_bytes=1_000_000).pending == 6
    assert drain(spool) == [batch(n) for n in range(6)]
    assert len(list(tmp_path.glob("*.seg"))) == 1 and spool.bytes == 0
