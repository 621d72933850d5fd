"""The collector's on-disk spool: batches kept durable while InfluxDB cannot take them.

A batch goes to the spool only when InfluxDB has failed for a while; once its
record is appended and fsynced, the batch's messages may be acknowledged to the
broker. Records are replayed in order and dropped only after InfluxDB took them.

Layout: numbered segment files of records, each ``length, crc32, body``
(little-endian u32s), and a ``cursor`` file naming the first record not yet
replayed. A crash mid-append leaves a torn tail, which is cut off on open:
that batch was never acknowledged, so the broker delivers it again. Replaying a
record twice (a crash between the write and the cursor update) is harmless:
InfluxDB overwrites a point with itself.
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
    """Appending would pass the disk quota."""


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
        for segment in self._segments:
            self._records += self._scan(segment)
        if not self._segments:
            self._segments.append(1)
            self._path(1).touch()
            _fsync_directory(directory)
        self._bytes = sum(self._path(s).stat().st_size for s in self._segments)
        if self._records:
            log.warning("spool %s holds %d batches from before: replaying them", directory, self._records)

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
            segment = self._segments[-1]
            new_segment = self._path(segment).stat().st_size + len(record) > SEGMENT_BYTES
            if new_segment:
                segment += 1
                self._segments.append(segment)
            with open(self._path(segment), "ab") as file:
                file.write(record)
                file.flush()
                os.fsync(file.fileno())
            if new_segment:
                _fsync_directory(self.directory)  # a new segment's name must survive a crash too
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

    # --- replaying -----------------------------------------------------

    def peek(self) -> Record | None:
        """The oldest batch not yet replayed."""
        with self._lock:
            if not self._records:
                return None
            segment, offset = self._cursor
            while True:
                with open(self._path(segment), "rb") as file:
                    file.seek(offset)
                    header = file.read(_HEADER.size)
                    if len(header) == _HEADER.size:
                        length, _crc = _HEADER.unpack(header)
                        body = orjson.loads(file.read(length))
                        batch = SpooledBatch(
                            body["lines"],
                            body["line_owner"],
                            [(t, base64.b64decode(p)) for t, p in body["messages"]],
                        )
                        return Record(batch, segment, offset + _HEADER.size + length)
                segment, offset = self._next_segment(segment), 0

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
        temporary = self._cursor_file.with_suffix(".tmp")
        with open(temporary, "w") as file:
            file.write(f"{self._cursor[0]} {self._cursor[1]}\n")
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self._cursor_file)

    def _scan(self, segment: int) -> int:
        """Count the whole records not yet replayed in ``segment``; cut off a torn or corrupt tail."""
        path = self._path(segment)
        data = path.read_bytes()
        offset = self._cursor[1] if segment == self._cursor[0] else 0
        if segment < self._cursor[0]:
            return 0
        records = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            body = data[offset + _HEADER.size : offset + _HEADER.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                break
            offset += _HEADER.size + length
            records += 1
        if offset < len(data):
            log.warning("spool segment %s: cutting %d bytes of a torn record", path, len(data) - offset)
            with open(path, "r+b") as file:
                file.truncate(offset)
                os.fsync(file.fileno())
        return records


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
