"""Console sessions end after 30 idle minutes or 8 hours, and memory for them stays bounded."""

from __future__ import annotations

import pytest

from api.console import sessions
from api.console.sessions import IDLE_S, LIFETIME_S, SessionStore
from pilot_core.access import Principal, Role

PRINCIPAL = Principal("0123456789ab", "someone", Role.EVALUATOR, "evaluators")


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_a_session_ends_after_its_idle_time() -> None:
    clock = Clock()
    store = SessionStore(clock)
    session = store.open(PRINCIPAL)
    clock.now_s += IDLE_S - 1
    assert store.get(session.token) is not None  # used: its idle time starts again
    clock.now_s += IDLE_S - 1
    assert store.get(session.token) is not None
    clock.now_s += IDLE_S + 1
    assert store.get(session.token) is None
    assert store.get(session.token) is None  # and it is gone for good


def test_a_session_ends_after_its_lifetime_however_busy() -> None:
    clock = Clock()
    store = SessionStore(clock)
    session = store.open(PRINCIPAL)
    while clock.now_s + 600 < 1000 + LIFETIME_S:
        clock.now_s += 600
        assert store.get(session.token) is not None
    clock.now_s += 601
    assert store.get(session.token) is None


def test_tokens_are_random_closed_sessions_are_gone_and_unknown_tokens_open_nothing() -> None:
    store = SessionStore()
    first, second = store.open(PRINCIPAL), store.open(PRINCIPAL)
    assert first.token != second.token and first.csrf != second.csrf and len(first.token) >= 40
    store.close(first.token)
    assert store.get(first.token) is None
    assert store.get(second.token) is not None
    assert store.get("") is None and store.get(None) is None and store.get("forged") is None


def test_the_oldest_sessions_go_first_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    store = SessionStore()
    opened = [store.open(PRINCIPAL) for _ in range(5)]
    assert [store.get(s.token) is not None for s in opened] == [False, False, True, True, True]
