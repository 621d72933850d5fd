"""The agent's durable outbox: every message is on disk, with its seq, before it is sent.

SQLite in WAL mode with full sync: a record is durable once ``put`` returns,
and leaves the outbox only when the broker has acknowledged it (QoS 1). After
a crash or a long broker outage, whatever is left is sent again, in order, with
its original timestamp and seq; the collector recognises anything sent twice.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path


class OutboxFull(Exception):
    """The outbox is at its disk quota: the message was not recorded."""


class Outbox:
    def __init__(self, path: Path, quota_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")  # durable at commit: the point of an outbox
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, payload BLOB)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS seqs (channel TEXT PRIMARY KEY, last INTEGER NOT NULL)")
        # What the agent must remember across restarts with the messages it derived from (a counter's last
        # reading): written in the same transaction as those messages, so neither is kept without the other.
        self._db.execute("CREATE TABLE IF NOT EXISTS kept (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._bytes = self._db.execute("SELECT coalesce(sum(length(payload)), 0) FROM messages").fetchone()[0]

    def reserve(self, channel: str, count: int) -> int:
        """Take ``count`` seqs of the channel without recording messages; returns the first."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            first = self._next(channel)
            self._set_last(channel, first + count - 1)
            self._db.execute("COMMIT")
            return first

    def put(
        self,
        topic: str,
        channel: str,
        payload_for: Callable[[int], bytes],
        seq: int | None = None,
        keep: Mapping[str, str] | None = None,
    ) -> int:
        """Record ``payload_for(seq)`` with the channel's next seq (or a reserved one), and ``keep`` with it;
        returns the message's id."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._next(channel) if seq is None else seq
                payload = payload_for(seq)
                if self._bytes + len(payload) > self.quota_bytes:
                    raise OutboxFull(f"the outbox {self.path} is at its quota of {self.quota_bytes:,} bytes")
                self._set_last(channel, max(seq, self._next(channel) - 1))
                cursor = self._db.execute("INSERT INTO messages (topic, payload) VALUES (?, ?)", (topic, payload))
                self._keep(keep or {})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes += len(payload)
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def keep(self, values: Mapping[str, str]) -> None:
        """Remember ``values`` without a message (a counter read for the first time, or reset to its last value)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._keep(values)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def kept(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kept WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

    def _keep(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._db.execute(
                "INSERT INTO kept (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
                (key, value, value),
            )

    def _next(self, channel: str) -> int:
        row = self._db.execute("SELECT last FROM seqs WHERE channel = ?", (channel,)).fetchone()
        return 1 if row is None else int(row[0]) + 1

    def _set_last(self, channel: str, last: int) -> None:
        self._db.execute(
            "INSERT INTO seqs (channel, last) VALUES (?, ?) ON CONFLICT (channel) DO UPDATE SET last = ?",
            (channel, last, last),
        )

    def after(self, last_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        """The oldest messages with an id above ``last_id``."""
        with self._lock:
            return self._db.execute(
                "SELECT id, topic, payload FROM messages WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)
            ).fetchall()

    def remove(self, *message_ids: int) -> None:
        """The broker has these messages: one transaction, so one sync to disk for them all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                freed = 0
                for message_id in message_ids:
                    row = self._db.execute(
                        "SELECT length(payload) FROM messages WHERE id = ?", (message_id,)
                    ).fetchone()
                    if row is not None:
                        self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                        freed += row[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes -= freed

    @property
    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM messages").fetchone()[0])

    @property
    def bytes(self) -> int:
        with self._lock:
            return int(self._bytes)

    def close(self) -> None:
        with self._lock:
            self._db.close()
