"""The agent's durable outbox: every message is on disk, with its seq, before it is sent.

SQLite in WAL mode with full sync. One database may hold many devices' messages (one agent process
reading many machines): each row names its device, and each device has its own seqs, its own order,
its own kept values and its own quota. A message leaves the outbox only when the broker has
acknowledged it (QoS 1). After a crash or a long broker outage, whatever is left is sent again, in order,
with its original timestamp and seq; the collector recognises anything sent twice.

By default a record is durable once ``put`` returns (one sync per message). A ``grouped`` outbox leaves
its writes in one open transaction until ``commit``: the agents' network thread commits every few tens
of milliseconds, so the messages several devices recorded meanwhile share one sync to disk, and it
publishes only what a commit made durable (``after`` never returns a message not yet committed).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")
_SCHEMA = 2  # 1: one device per database, no device column


class OutboxFull(Exception):
    """The outbox is at its disk quota: the message was not recorded."""


class Outbox:
    def __init__(self, path: Path, quota_bytes: int, *, grouped: bool = False) -> None:
        """``quota_bytes`` is each device's quota."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.quota_bytes = quota_bytes
        self.grouped = grouped
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")  # durable at commit: the point of an outbox
        self._migrate()
        self._bytes: dict[str, int] = dict(
            self._db.execute("SELECT device, sum(length(payload)) FROM messages GROUP BY device").fetchall()
        )
        self._durable_id = int(self._db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0])
        self._last_put_id = self._durable_id
        self._open_since: float | None = None  # monotonic time of the oldest write not yet committed

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version == _SCHEMA:
            return
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self._db.execute("BEGIN IMMEDIATE")
        if "messages" in tables and version < _SCHEMA:
            # An outbox of one device written by an older agent: its rows become device '' (a lone agent's key).
            self._db.execute("ALTER TABLE messages ADD COLUMN device TEXT NOT NULL DEFAULT ''")
            self._db.execute("ALTER TABLE seqs RENAME TO seqs_1")
            self._db.execute("ALTER TABLE kept RENAME TO kept_1")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, payload BLOB,"
            " device TEXT NOT NULL DEFAULT '')"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS messages_of_device ON messages (device, id)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seqs (device TEXT NOT NULL, channel TEXT NOT NULL, last INTEGER NOT NULL,"
            " PRIMARY KEY (device, channel))"
        )
        # What the agent must remember across restarts with the messages it derived from (a counter's last
        # reading): written in the same transaction as those messages, so neither is kept without the other.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kept (device TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (device, key))"
        )
        if "messages" in tables and version < _SCHEMA:
            self._db.execute("INSERT INTO seqs SELECT '', channel, last FROM seqs_1")
            self._db.execute("INSERT INTO kept SELECT '', key, value FROM kept_1")
            self._db.execute("DROP TABLE seqs_1")
            self._db.execute("DROP TABLE kept_1")
        self._db.execute(f"PRAGMA user_version = {_SCHEMA}")
        self._db.execute("COMMIT")

    # --- writing ----------------------------------------------------------

    def _write(self, work: Callable[[], _T]) -> _T:
        """``work`` in the open transaction, all or nothing; committed at once unless the outbox is grouped.
        Call with the lock held."""
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._open_since = time.monotonic()
        self._db.execute("SAVEPOINT write")
        try:
            result = work()
        except BaseException:
            self._db.execute("ROLLBACK TO write")  # this write only: other devices' writes in the group stay
            self._db.execute("RELEASE write")
            if not self.grouped:
                self._commit()
            raise
        self._db.execute("RELEASE write")
        if not self.grouped:
            self._commit()
        return result

    def _commit(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")
        self._durable_id = self._last_put_id
        self._open_since = None

    def commit(self) -> None:
        """Make every write so far durable: one sync to disk for them all."""
        with self._lock:
            self._commit()

    @property
    def open_since(self) -> float | None:
        """When (``time.monotonic``) the oldest write still waiting for ``commit`` was made; None if none is."""
        return self._open_since

    def reserve(self, channel: str, count: int, device: str = "") -> int:
        """Take ``count`` seqs of the device's channel without recording messages; returns the first.
        Durable when it returns, grouped or not: a will sent with a reserved seq must never see it reused."""
        with self._lock:

            def work() -> int:
                first = self._next(device, channel)
                self._set_last(device, channel, first + count - 1)
                return first

            first = self._write(work)
            self._commit()
            return first

    def put(
        self,
        topic: str,
        channel: str,
        payload_for: Callable[[int], bytes],
        seq: int | None = None,
        keep: Mapping[str, str] | None = None,
        device: str = "",
    ) -> int:
        """Record ``payload_for(seq)`` with the device's channel's next seq (or a reserved one), and ``keep``
        with it; returns the message's id."""
        with self._lock:

            def work() -> tuple[int, int]:
                number = self._next(device, channel) if seq is None else seq
                payload = payload_for(number)
                used = self._bytes.get(device, 0)
                if used + len(payload) > self.quota_bytes:
                    where = f"{self.path}" + (f" (device {device})" if device else "")
                    raise OutboxFull(f"the outbox {where} is at its quota of {self.quota_bytes:,} bytes")
                self._set_last(device, channel, max(number, self._next(device, channel) - 1))
                cursor = self._db.execute(
                    "INSERT INTO messages (topic, payload, device) VALUES (?, ?, ?)", (topic, payload, device)
                )
                self._keep(device, keep or {})
                assert cursor.lastrowid is not None
                return cursor.lastrowid, len(payload)

            self._last_put_id, size = self._write(work)
            message_id = self._last_put_id
            self._bytes[device] = self._bytes.get(device, 0) + size
            if not self.grouped:
                self._durable_id = message_id
            return message_id

    def keep(self, values: Mapping[str, str], device: str = "") -> None:
        """Remember ``values`` without a message (a counter read for the first time, or reset to its last value)."""
        with self._lock:
            self._write(lambda: self._keep(device, values))

    def kept(self, key: str, device: str = "") -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kept WHERE device = ? AND key = ?", (device, key)).fetchone()
            return None if row is None else str(row[0])

    def _keep(self, device: str, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._db.execute(
                "INSERT INTO kept (device, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (device, key) DO UPDATE SET value = ?",
                (device, key, value, value),
            )

    def _next(self, device: str, channel: str) -> int:
        row = self._db.execute("SELECT last FROM seqs WHERE device = ? AND channel = ?", (device, channel)).fetchone()
        return 1 if row is None else int(row[0]) + 1

    def _set_last(self, device: str, channel: str, last: int) -> None:
        self._db.execute(
            "INSERT INTO seqs (device, channel, last) VALUES (?, ?, ?)"
            " ON CONFLICT (device, channel) DO UPDATE SET last = ?",
            (device, channel, last, last),
        )

    # --- sending ----------------------------------------------------------

    def after(self, last_id: int, limit: int, device: str = "") -> list[tuple[int, str, bytes]]:
        """The device's oldest durable messages with an id above ``last_id``."""
        with self._lock:
            return self._db.execute(
                "SELECT id, topic, payload FROM messages WHERE device = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?",
                (device, last_id, self._durable_id, limit),
            ).fetchall()

    def remove(self, *message_ids: int) -> None:
        """The broker has these messages: one transaction (in a grouped outbox, the next commit's)."""
        with self._lock:

            def work() -> dict[str, int]:
                freed: dict[str, int] = {}
                for message_id in message_ids:
                    row = self._db.execute(
                        "SELECT device, length(payload) FROM messages WHERE id = ?", (message_id,)
                    ).fetchone()
                    if row is not None:
                        self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                        freed[row[0]] = freed.get(row[0], 0) + row[1]
                return freed

            for device, size in self._write(work).items():
                self._bytes[device] -= size

    def pending_of(self, device: str) -> int:
        """The device's messages recorded and not yet acknowledged."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM messages WHERE device = ?", (device,)).fetchone()[0])

    def bytes_of(self, device: str) -> int:
        with self._lock:
            return self._bytes.get(device, 0)

    @property
    def pending(self) -> int:
        """A lone device's messages (device ''): recorded and not yet acknowledged."""
        return self.pending_of("")

    @property
    def bytes(self) -> int:
        return self.bytes_of("")

    def absorb(self, other: Path, device: str) -> int:
        """Take in the outbox of one device at ``other`` (an older agent's, one database per device) under
        ``device``: its messages in order, its seqs and what it kept; then delete it. Returns its messages."""
        old = Outbox(other, quota_bytes=1 << 62)
        with old._lock:
            messages = old._db.execute("SELECT topic, payload FROM messages WHERE device = '' ORDER BY id").fetchall()
            seqs = old._db.execute("SELECT channel, last FROM seqs WHERE device = ''").fetchall()
            kept = dict(old._db.execute("SELECT key, value FROM kept WHERE device = ''").fetchall())
        old.close()
        with self._lock:

            def work() -> None:
                for channel, last in seqs:
                    self._set_last(device, channel, max(int(last), self._next(device, channel) - 1))
                for topic, payload in messages:
                    cursor = self._db.execute(
                        "INSERT INTO messages (topic, payload, device) VALUES (?, ?, ?)", (topic, payload, device)
                    )
                    assert cursor.lastrowid is not None
                    self._last_put_id = cursor.lastrowid
                    self._bytes[device] = self._bytes.get(device, 0) + len(payload)
                self._keep(device, kept)

            self._write(work)
            self._commit()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{other}{suffix}").unlink(missing_ok=True)
        return len(messages)

    def close(self) -> None:
        with self._lock:
            self._commit()
            self._db.close()
