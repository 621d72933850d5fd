"""The collector's disk spool: durable appends, ordered replay, torn tails, quota, reopening."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from adapters.scratch_disk import fill, small_filesystem
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


def test_an_append_that_fills_the_disk_leaves_the_spool_as_it_was_and_loses_nothing(tmp_path: Path) -> None:
    """Issue 16: a write torn by ENOSPC, then space freed, then more batches acknowledged after it."""
    with small_filesystem(1) as disk:
        directory = disk / "spool"
        spool = Spool(directory, quota_bytes=100_000_000)
        acknowledged = [batch(n) for n in range(3)]
        for item in acknowledged:
            spool.append(item)
        (segment,) = directory.glob("*.seg")
        before = segment.read_bytes()
        ballast = fill(disk, leave_bytes=0)
        big = SpooledBatch([f"m v={n}i" for n in range(20_000)], [0] * 20_000, [("t", b"x" * 50_000)])
        with pytest.raises((SpoolFull, OSError)) as refused:
            spool.append(big)
        assert segment.read_bytes() == before  # no torn record left behind
        # A full disk is a full spool to the collector: the batch waits for InfluxDB, unacknowledged.
        assert isinstance(refused.value, SpoolFull) and "disk refused" in str(refused.value)
        assert spool.pending == 3 and spool.bytes == len(before)
        ballast.unlink()
        for n in range(3, 6):
            spool.append(batch(n))
            acknowledged.append(batch(n))
        first = spool.peek()
        assert first is not None and first.batch == batch(0)
        reopened = Spool(directory, quota_bytes=100_000_000)  # the next start must keep every record
        assert reopened.pending == 6
        assert drain(reopened) == acknowledged


def test_a_full_disk_while_rolling_over_to_a_new_segment_leaves_no_empty_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)
    with small_filesystem(1) as disk:
        directory = disk / "spool"
        spool = Spool(directory, quota_bytes=100_000_000)
        spool.append(batch(0))
        segments = sorted(directory.glob("*.seg"))
        ballast = fill(disk, leave_bytes=0)
        big = SpooledBatch(["m v=1i"] * 50_000, [0] * 50_000, [("t", b"x")])
        with pytest.raises(SpoolFull):
            spool.append(big)
        assert sorted(directory.glob("*.seg")) == segments
        ballast.unlink()
        spool.append(batch(1))
        assert drain(Spool(directory, quota_bytes=100_000_000)) == [batch(0), batch(1)]


def four_batches_the_second_damaged(directory: Path) -> Spool:
    """A spool of batches 0 to 3 whose record 1's body no longer matches its checksum."""
    spool = Spool(directory, quota_bytes=1_000_000)
    for n in range(4):
        spool.append(batch(n))
    (segment,) = directory.glob("*.seg")
    data = bytearray(segment.read_bytes())
    second = data.index(b'{"lines":', data.index(b'{"lines":') + 1)
    data[second + 20] ^= 0xFF
    segment.write_bytes(bytes(data))
    return spool


def test_records_after_a_corrupt_one_are_kept_and_the_corruption_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Recovery never drops a record that lies after a bad one: it resynchronises on the next whole record."""
    four_batches_the_second_damaged(tmp_path)
    with caplog.at_level(logging.ERROR, logger="pilot.collector.spool"):
        reopened = Spool(tmp_path, quota_bytes=1_000_000)
    assert reopened.pending == 3
    assert drain(reopened) == [batch(0), batch(2), batch(3)]
    assert "corrupt" in caplog.text and "kept the 2 whole records after it" in caplog.text
    assert list(tmp_path.glob("*.corrupt"))  # the bad bytes are kept for a person to look at


def test_torn_bytes_between_whole_records_are_skipped_not_cut(tmp_path: Path) -> None:
    """The file the old appender left on a disk that filled and was freed: a record, the head of a torn one,
    then a record appended after it and acknowledged."""

    def record_of(n: int) -> bytes:
        directory = tmp_path / f"one-{n}"  # a spool of its own for each record
        Spool(directory, quota_bytes=1_000_000).append(batch(n))
        return next(directory.glob("*.seg")).read_bytes()

    directory = tmp_path / "spool"
    first, torn, third = record_of(0), record_of(1)[:17], record_of(2)
    Spool(directory, quota_bytes=1_000_000)
    (segment,) = directory.glob("*.seg")
    segment.write_bytes(first + torn + third)
    reopened = Spool(directory, quota_bytes=1_000_000)
    assert reopened.pending == 2
    reopened.append(batch(3))
    assert drain(Spool(directory, quota_bytes=1_000_000)) == [batch(0), batch(2), batch(3)]


def test_a_spool_on_a_disk_with_less_free_space_than_its_quota_warns_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with small_filesystem(2) as disk:
        with caplog.at_level(logging.WARNING, logger="pilot.collector.spool"):
            Spool(disk / "spool", quota_bytes=1024 * 1024 * 1024)
        assert "less than its quota" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pilot.collector.spool"):
            Spool(disk / "other", quota_bytes=1024 * 1024)
        assert "less than its quota" not in caplog.text


def test_a_crash_between_emptying_the_spool_and_moving_the_cursor_loses_no_later_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path, quota_bytes=1_000_000)
    spool.append(batch(0))
    old_end = spool.bytes
    drain(spool)  # empties the segment, then moves the cursor to 0
    (tmp_path / "cursor").write_text(f"1 {old_end}\n")  # as if the process died in between
    reopened = Spool(tmp_path, quota_bytes=1_000_000)
    assert reopened.pending == 0
    reopened.append(batch(1))
    assert drain(Spool(tmp_path, quota_bytes=1_000_000)) == [batch(1)]


def test_a_record_damaged_while_the_collector_runs_is_skipped_by_the_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = four_batches_the_second_damaged(tmp_path)  # damaged on disk after it was appended
    with caplog.at_level(logging.ERROR, logger="pilot.collector.spool"):
        assert drain(spool) == [batch(0), batch(2), batch(3)]
    assert "damaged" in caplog.text and spool.pending == 0
    spool.append(batch(4))
    assert drain(spool) == [batch(4)]


def test_a_damaged_last_record_while_running_leaves_an_empty_spool_that_takes_more(tmp_path: Path) -> None:
    spool = Spool(tmp_path, quota_bytes=1_000_000)
    spool.append(batch(0))
    spool.append(batch(1))
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert drain(spool) == [batch(0)]
    assert spool.pending == 0
    spool.append(batch(2))
    assert drain(spool) == [batch(2)]
    assert drain(Spool(tmp_path, quota_bytes=1_000_000)) == []
