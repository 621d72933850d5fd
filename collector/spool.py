"""The collector's on-disk spool: batches kept durable while InfluxDB cannot take them.

A batch goes to the spool only when InfluxDB has failed for a while; once its
record is appended and fsynced, the batch's messages may be acknowledged to the
broker. Records are replayed in order and dropped only after InfluxDB took them.

Layout: numbered segment files of records, each ``length, crc32, body``
(little-endian u32s), and a ``cursor`` file naming the first record not yet
replayed. A record is written at the end of the last whole one; a write the
disk refuses (full, or failing) is cut back off before ``append`` raises
SpoolFull, so the spool is as it was and the batch stays unacknowledged. A
crash mid-append leaves a torn tail, which is cut off on open: that batch was
never acknowledged, so the broker delivers it again. Bad bytes followed by
whole records (a corrupted disk, or a file the old appender left) are skipped,
never cut: the reader resynchronises on the next whole record, reports the
damage loudly and keeps the bad bytes beside the segment. Replaying a record
twice (a crash between the write and the cursor update) is harmless: InfluxDB
overwrites a point with itself.
"""

from __future__ import annotations

import base64
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger("pilot.collector.spool")

_HEADER = struct.Struct("<II")
_BODY_START = b'{"lines":'  # every body begins so (orjson keeps key order): where a record may start
SEGMENT_BYTES = 64 * 1024 * 1024
_WARN_AT = 0.8


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    lines: list[str]
    line_owner: list[int]  # index into ``messages`` of the message each line came from
    messages: list[tuple[str, bytes]]  # (topic, payload): what a refused line is dead-lettered as


@dataclass(frozen=True, slots=True)
class Record:
    batch: SpooledBatch
    segment: int
    end: int  # offset just past this record


class SpoolFull(Exception):
    """Appending would pass the disk quota, or the disk refused the write: the batch is not in the spool."""


class Spool:
    """Append-only batches on disk, replayed in order. Safe for one appender and one replayer thread."""

    def __init__(self, directory: Path, quota_bytes: int) -> None:
        self.directory = directory
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._cursor_file = directory / "cursor"
        self._segments = sorted(int(p.stem) for p in directory.glob("*.seg"))
        self._cursor = self._read_cursor()
        self._records = 0
        self._warned = False
        self._skips: dict[tuple[int, int], int] = {}  # (segment, offset of bad bytes) -> offset of the next record
        for segment in self._segments:
            self._records += self._scan(segment)
        if not self._segments:
            self._segments.append(1)
            self._path(1).touch()
            _fsync_directory(directory)
        self._end = self._path(self._segments[-1]).stat().st_size  # just past the last whole record
        self._bytes = sum(self._path(s).stat().st_size for s in self._segments)
        if self._records:
            log.warning("spool %s holds %d batches from before: replaying them", directory, self._records)
        self._check_free_space()

    # --- state ---------------------------------------------------------

    @property
    def pending(self) -> int:
        """Batches not yet replayed."""
        with self._lock:
            return self._records

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    # --- appending -----------------------------------------------------

    def append(self, batch: SpooledBatch) -> None:
        """Make ``batch`` durable (written and fsynced), or raise SpoolFull."""
        body = orjson.dumps(
            {
                "lines": batch.lines,
                "line_owner": batch.line_owner,
                "messages": [[t, base64.b64encode(p).decode("ascii")] for t, p in batch.messages],
            }
        )
        record = _HEADER.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            if self._bytes + len(record) > self.quota_bytes:
                raise SpoolFull(f"spool {self.directory} is at its quota of {self.quota_bytes:,} bytes")
            segment, offset = self._segments[-1], self._end
            new_segment = offset + len(record) > SEGMENT_BYTES
            if new_segment:
                segment, offset = segment + 1, 0
            try:
                _write_at(self._path(segment), offset, record, new_segment)
            except OSError as refused:
                raise SpoolFull(
                    f"spool {self.directory}: the disk refused a batch of {len(record):,} bytes ({refused.strerror});"
                    " the spool is as it was"
                ) from refused
            if new_segment:
                self._segments.append(segment)
            self._end = offset + len(record)
            self._bytes += len(record)
            self._records += 1
            if not self._warned and self._bytes > _WARN_AT * self.quota_bytes:
                self._warned = True
                log.error(
                    "spool %s is %.0f%% full (%s of %s bytes): when it is full, messages stay unacknowledged",
                    self.directory,
                    100 * self._bytes / self.quota_bytes,
                    f"{self._bytes:,}",
                    f"{self.quota_bytes:,}",
                )

    def _check_free_space(self) -> None:
        """Warn when the disk would fill before the quota does: then batches wait unacknowledged sooner."""
        stat = os.statvfs(self.directory)
        free = stat.f_bavail * stat.f_frsize
        if free + self._bytes < self.quota_bytes:
            log.warning(
                "spool %s: its filesystem has %s MB free, less than its quota (spool_quota_mb = %s MB, of which "
                "the spool uses %s MB): once the disk is full, batches wait in memory, unacknowledged",
                self.directory,
                f"{free / 2**20:,.0f}",
                f"{self.quota_bytes / 2**20:,.0f}",
                f"{self._bytes / 2**20:,.1f}",
            )

    # --- replaying -----------------------------------------------------

    def peek(self) -> Record | None:
        """The oldest batch not yet replayed."""
        with self._lock:
            if not self._records:
                return None
            segment, offset = self._cursor
            while True:
                offset = self._skips.get((segment, offset), offset)
                if segment == self._segments[-1] and offset >= self._end:
                    self._records = 0  # what was counted was damaged on disk, and reported
                    return None
                with open(self._path(segment), "rb") as file:
                    file.seek(offset)
                    header = file.read(_HEADER.size)
                    if len(header) == _HEADER.size:
                        length, crc = _HEADER.unpack(header)
                        body = file.read(length)
                        if len(body) == length and body.startswith(_BODY_START) and zlib.crc32(body) == crc:
                            return Record(_decode(body), segment, offset + _HEADER.size + length)
                        self._skip_damage(segment, offset)
                        continue
                segment, offset = self._next_segment(segment), 0

    def _skip_damage(self, segment: int, offset: int) -> None:
        """A record found damaged while replaying: go on at the next whole record, as a start would."""
        path = self._path(segment)
        data = path.read_bytes()
        end = self._end if segment == self._segments[-1] else len(data)
        resumed = _next_record(data[:end], offset + 1)
        self._skips[(segment, offset)] = resumed if resumed is not None else end
        self._records -= 1
        kept = _keep_corrupt(path, offset, data[offset : resumed if resumed is not None else end])
        log.error(
            "spool segment %s: the record at offset %d is damaged (copied to %s); replaying on from the next whole"
            " record. Its batch is lost: look for a gap in its devices' seq",
            path,
            offset,
            kept,
        )

    def commit(self, record: Record) -> None:
        """``record`` is in InfluxDB: move past it, and delete segments wholly replayed."""
        with self._lock:
            self._cursor = (record.segment, record.end)
            self._records -= 1
            self._write_cursor()
            while len(self._segments) > 1 and self._segments[0] < record.segment:
                old = self._segments.pop(0)
                self._bytes -= self._path(old).stat().st_size
                self._path(old).unlink()
            if not self._records and record.end == self._path(record.segment).stat().st_size:
                # Empty again: start the segment afresh, so the spool does not grow forever.
                self._bytes -= record.end
                self._path(record.segment).write_bytes(b"")
                self._cursor = (record.segment, 0)
                self._write_cursor()
                self._end = 0
                self._skips.clear()
                self._warned = False

    # --- files ---------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.seg"

    def _next_segment(self, segment: int) -> int:
        return self._segments[self._segments.index(segment) + 1]

    def _read_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = (int(x) for x in self._cursor_file.read_text().split())
        except (OSError, ValueError):
            return (self._segments[0] if self._segments else 1, 0)
        if self._segments and segment < self._segments[0]:
            return (self._segments[0], 0)
        return segment, offset

    def _write_cursor(self) -> None:
        replace_durably(self._cursor_file, f"{self._cursor[0]} {self._cursor[1]}\n".encode(), sync_directory=False)

    def _scan(self, segment: int) -> int:
        """Count the whole records not yet replayed in ``segment``: skip bad bytes that whole records follow
        (remembered in ``_skips``, reported, kept in a ``.corrupt`` file), and cut off a torn tail."""
        if segment < self._cursor[0]:
            return 0
        path = self._path(segment)
        data = path.read_bytes()
        offset = self._cursor[1] if segment == self._cursor[0] else 0
        if offset > len(data):  # emptied once replayed, and the process died before the cursor said so
            log.warning(
                "spool segment %s: the cursor (%d) is past its end: it was emptied, reading from 0", path, offset
            )
            offset, self._cursor = 0, (segment, 0)
            self._write_cursor()
        records = 0
        while offset < len(data):
            end = _record_end(data, offset)
            if end is not None:
                offset, records = end, records + 1
                continue
            resumed = _next_record(data, offset + 1)
            if resumed is None:
                break
            after = _count_records(data, resumed)
            self._skips[(segment, offset)] = resumed
            kept = _keep_corrupt(path, offset, data[offset:resumed])
            log.error(
                "spool segment %s: %d corrupt bytes at offset %d (copied to %s); kept the %d whole records after"
                " it. A batch in those bytes, if any, is lost: look for a gap in its devices' seq",
                path,
                resumed - offset,
                offset,
                kept,
                after,
            )
            offset = resumed
        if offset < len(data):
            _cut_tail(path, data, offset)
        return records


def _write_at(path: Path, offset: int, record: bytes, new_segment: bool) -> None:
    """Write ``record`` at ``offset`` and fsync it; on failure cut the file back to ``offset`` and re-raise.

    Writing at the known end, not appending, means that bytes a failed write left (if cutting them failed
    too) are overwritten by the next record instead of lying before it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            written = 0
            while written < len(record):
                written += os.pwrite(descriptor, memoryview(record)[written:], offset + written)
            if os.fstat(descriptor).st_size > offset + len(record):
                os.ftruncate(descriptor, offset + len(record))  # leftovers of an earlier failed write
            os.fsync(descriptor)
            if new_segment:
                _fsync_directory(path.parent)  # a new segment's name must survive a crash too
        except OSError:
            _cut_back(descriptor, path, offset, new_segment)
            raise
    finally:
        os.close(descriptor)


def _cut_back(descriptor: int, path: Path, offset: int, new_segment: bool) -> None:
    try:
        if new_segment:
            path.unlink()
            return
        os.ftruncate(descriptor, offset)
        os.fsync(descriptor)
    except OSError as exc:  # the next append writes over them; a restart cuts them as a torn tail
        log.error("spool %s: could not cut back a failed write (%s)", path, exc)


def _cut_tail(path: Path, data: bytes, offset: int) -> None:
    """Cut what follows the last whole record. Short of its length, it is a write a crash or a full disk
    cut short (never acknowledged); whole but failing its checksum, it was damaged on disk: say so loudly."""
    length = _HEADER.unpack_from(data, offset)[0] if offset + _HEADER.size <= len(data) else None
    if length is not None and offset + _HEADER.size + length == len(data):
        kept = _keep_corrupt(path, offset, data[offset:])
        log.error(
            "spool segment %s: the last record (%d bytes at offset %d) is corrupt; cutting it (copied to %s)."
            " Its batch is lost: look for a gap in its devices' seq",
            path,
            len(data) - offset,
            offset,
            kept,
        )
    else:
        log.warning("spool segment %s: cutting %d bytes of a torn record", path, len(data) - offset)
    with open(path, "r+b") as file:
        file.truncate(offset)
        os.fsync(file.fileno())


def _decode(body: bytes) -> SpooledBatch:
    fields = orjson.loads(body)
    return SpooledBatch(
        fields["lines"], fields["line_owner"], [(t, base64.b64decode(p)) for t, p in fields["messages"]]
    )


def _keep_corrupt(segment: Path, offset: int, data: bytes) -> str:
    """Copy bad bytes beside their segment for a person to look at; where they went, or why not."""
    kept = segment.with_name(f"{segment.name}.{offset}.corrupt")
    try:
        kept.write_bytes(data)
    except OSError as exc:
        return f"nowhere: {exc}"
    return str(kept)


def _record_end(data: bytes, offset: int) -> int | None:
    """The offset past the whole record at ``offset``, or None if none starts there."""
    if offset + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if length < len(_BODY_START) or start + length > len(data) or not data.startswith(_BODY_START, start):
        return None
    if zlib.crc32(memoryview(data)[start : start + length]) != crc:
        return None
    return start + length


def _next_record(data: bytes, offset: int) -> int | None:
    """Where the first whole record at or after ``offset`` starts."""
    position = data.find(_BODY_START, offset + _HEADER.size)
    while position != -1:
        if _record_end(data, position - _HEADER.size) is not None:
            return position - _HEADER.size
        position = data.find(_BODY_START, position + 1)
    return None


def _count_records(data: bytes, offset: int) -> int:
    count = 0
    while (end := _record_end(data, offset)) is not None:
        offset, count = end, count + 1
    return count


def replace_durably(path: Path, data: bytes, *, sync_directory: bool = True) -> None:
    """Make ``path`` hold ``data``, whole: after a crash it holds either this or what it held before.

    ``sync_directory``: also make the rename survive a power loss, so that the file is never older than this
    call once it returns (a directory fsync more: the spool's cursor does without, as replaying twice is harmless).
    """
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
    if sync_directory:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
