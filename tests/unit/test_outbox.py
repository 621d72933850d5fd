"""The agent's outbox: seq per channel, reservations, ids that never go back, the quota, reopening."""

from __future__ import annotations

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
