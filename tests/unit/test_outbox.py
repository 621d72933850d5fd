"""The agent's outbox: seq per channel, reservations, ids that never go back, the quota, reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge_agent.outbox import Outbox, OutboxFull


def payload(seq: int) -> bytes:
    return f'{{"seq": {seq}}}'.encode()


def test_seq_grows_per_channel_and_survives_reopening(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", quota_bytes=10_000)
    for _ in range(3):
        outbox.put("t", "telemetry", payload)
    outbox.put("s", "state", payload)
    assert outbox.reserve("status", 2) == 1 and outbox.put("st", "status", payload) == 5
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite", quota_bytes=10_000)
    assert [p for _, _, p in reopened.after(0, 10)] == [payload(1), payload(2), payload(3), payload(1), payload(3)]
    reopened.put("t", "telemetry", payload)
    assert reopened.after(5, 10)[0][2] == payload(4)


def test_ids_never_go_back_when_the_outbox_empties(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", quota_bytes=10_000)
    first = outbox.put("t", "telemetry", payload)
    outbox.remove(first)
    assert outbox.pending == 0 and outbox.bytes == 0
    assert outbox.put("t", "telemetry", payload) > first  # the sender, past ``first``, must still see it


def test_the_quota_refuses_without_taking_a_seq(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", quota_bytes=len(payload(1)) * 2)
    outbox.put("t", "telemetry", payload)
    outbox.put("t", "telemetry", payload)
    with pytest.raises(OutboxFull, match="quota"):
        outbox.put("t", "telemetry", payload)
    outbox.remove(outbox.after(0, 1)[0][0])
    outbox.put("t", "telemetry", payload)
    assert outbox.after(0, 10)[-1][2] == payload(3)


def test_several_messages_leave_in_one_removal_and_their_bytes_with_them(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", quota_bytes=10_000)
    ids = [outbox.put("t", "telemetry", payload) for _ in range(4)]
    outbox.remove(ids[0], ids[2], ids[2], 999)  # an id twice, or one not there, is nothing to remove
    assert [p for _, _, p in outbox.after(0, 10)] == [payload(2), payload(4)]
    assert outbox.bytes == len(payload(2)) + len(payload(4))


def test_what_is_kept_with_a_message_is_kept_only_if_the_message_is(tmp_path: Path) -> None:
    """A counter's reading is kept with the production derived from it: both, or (over quota) neither."""
    outbox = Outbox(tmp_path / "outbox.sqlite", quota_bytes=len(payload(1)) * 2)
    outbox.put("p", "production", payload, keep={"counters": "100"})
    outbox.keep({"counters": "101"})  # a reading with nothing produced: kept without a message
    with pytest.raises(OutboxFull):
        outbox.put("p", "production", lambda seq: payload(seq) * 2, keep={"counters": "150"})
    assert outbox.kept("counters") == "101" and outbox.kept("other") is None
    outbox.close()
    assert Outbox(tmp_path / "outbox.sqlite", quota_bytes=1_000).kept("counters") == "101"


def test_devices_sharing_one_outbox_keep_their_own_seqs_order_kept_values_and_quota(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", quota_bytes=len(payload(1)) * 2)
    outbox.put("a", "telemetry", payload, device="s/l/a")
    outbox.put("b", "telemetry", payload, device="s/l/b", keep={"counters": "7"})
    outbox.put("a", "telemetry", payload, device="s/l/a")
    with pytest.raises(OutboxFull, match="s/l/a"):  # a's quota is full; b still has room
        outbox.put("a", "telemetry", payload, device="s/l/a")
    outbox.put("b", "telemetry", payload, device="s/l/b")
    assert [p for _, _, p in outbox.after(0, 10, device="s/l/a")] == [payload(1), payload(2)]
    assert [p for _, _, p in outbox.after(0, 10, device="s/l/b")] == [payload(1), payload(2)]
    assert outbox.kept("counters", device="s/l/b") == "7" and outbox.kept("counters", device="s/l/a") is None
    assert (outbox.pending_of("s/l/a"), outbox.pending_of("s/l/b"), outbox.pending) == (2, 2, 0)


def test_a_grouped_outbox_sends_nothing_before_the_commit_that_makes_it_durable(tmp_path: Path) -> None:
    """Several devices' messages share one commit; until it, ``after`` does not hand them to the sender."""
    outbox = Outbox(tmp_path / "outbox.sqlite", quota_bytes=len(payload(1)) * 3, grouped=True)
    outbox.put("a", "telemetry", payload, device="a")
    outbox.put("b", "production", payload, device="b", keep={"counters": "5"})
    with pytest.raises(OutboxFull):  # refused alone: the group's other writes stay
        outbox.put("b", "production", lambda seq: payload(seq) * 3, device="b", keep={"counters": "9"})
    assert outbox.open_since is not None
    assert outbox.after(0, 10, device="a") == [] and outbox.after(0, 10, device="b") == []
    elsewhere = sqlite3.connect(tmp_path / "outbox.sqlite")  # what a crash now would leave on disk
    assert elsewhere.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    outbox.commit()
    assert outbox.open_since is None
    assert [len(outbox.after(0, 10, device=d)) for d in ("a", "b")] == [1, 1]
    assert elsewhere.execute("SELECT device FROM messages ORDER BY id").fetchall() == [("a",), ("b",)]
    assert elsewhere.execute("SELECT value FROM kept WHERE device = 'b'").fetchall() == [("5",)]
    elsewhere.close()
    outbox.close()


def _write_schema_1_outbox(path: Path) -> None:
    """An outbox as an agent before the shared database wrote it: one device, no device column."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, payload BLOB)")
    db.execute("CREATE TABLE seqs (channel TEXT PRIMARY KEY, last INTEGER NOT NULL)")
    db.execute("CREATE TABLE kept (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.executemany("INSERT INTO messages (topic, payload) VALUES (?, ?)", [("t", payload(41)), ("t", payload(42))])
    db.execute("INSERT INTO seqs VALUES ('telemetry', 42)")
    db.execute("INSERT INTO kept VALUES ('counters', '1000')")
    db.commit()
    db.close()


def test_an_older_outbox_is_opened_with_its_messages_seqs_and_kept_values(tmp_path: Path) -> None:
    _write_schema_1_outbox(tmp_path / "outbox.sqlite")
    outbox = Outbox(tmp_path / "outbox.sqlite", quota_bytes=10_000)
    assert [p for _, _, p in outbox.after(0, 10)] == [payload(41), payload(42)]
    assert outbox.put("t", "telemetry", payload) == 3 and outbox.after(2, 1)[0][2] == payload(43)
    assert outbox.kept("counters") == "1000" and outbox.bytes == 3 * len(payload(41))


def test_a_devices_own_older_outbox_is_absorbed_into_the_shared_one_seqs_going_on(tmp_path: Path) -> None:
    _write_schema_1_outbox(tmp_path / "old.sqlite")
    shared = Outbox(tmp_path / "outbox.sqlite", quota_bytes=10_000, grouped=True)
    assert shared.absorb(tmp_path / "old.sqlite", "s/l/a") == 2
    assert not (tmp_path / "old.sqlite").exists()
    shared.put("t", "telemetry", payload, device="s/l/a")
    shared.commit()
    assert [p for _, _, p in shared.after(0, 10, device="s/l/a")] == [payload(41), payload(42), payload(43)]
    assert shared.kept("counters", device="s/l/a") == "1000"


def test_a_source_map_agent_moves_each_devices_older_outbox_into_the_shared_one(tmp_path: Path) -> None:
    """An agent updated in place: the outbox folders of the older, one-database-per-device layout are taken in
    at start (nothing is sent: the agents are not started)."""
    from adapters.catalog import load_profiles  # noqa: PLC0415 - only this test builds the agents
    from adapters.mqtt import MqttSettings  # noqa: PLC0415
    from edge_agent.sources import SourceAgents, outbox_folder  # noqa: PLC0415
    from pilot_core.source_map import parse_source_map  # noqa: PLC0415

    text = """devices:
  - {site: 판교, line: L1, device: press-1, profile: conveyor, modbus: {host: 127.0.0.1},
     items: [{name: current, table: input, address: 0, type: float32, metric: motor_current}]}
"""
    catalog = load_profiles()
    source_map = parse_source_map(text, "agent.yaml", catalog)
    legacy = outbox_folder(tmp_path, source_map.devices[0]) / "outbox.sqlite"
    legacy.parent.mkdir(parents=True)
    _write_schema_1_outbox(legacy)
    agents = SourceAgents(source_map, catalog, MqttSettings(host="127.0.0.1", port=1), tmp_path)
    (derivation,) = agents.derivations
    assert derivation.agent.pending == 2 and derivation.agent.kept("counters") == "1000"
    assert not legacy.parent.exists()
    assert agents.stop(flush_timeout_s=0) == 2  # still there for the next start
    reopened = Outbox(tmp_path / "outbox.sqlite", quota_bytes=10_000)
    assert [p for _, _, p in reopened.after(0, 10, device="판교/L1/press-1")] == [payload(41), payload(42)]
