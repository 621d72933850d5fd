"""Console sessions end after 30 idle minutes or 8 hours or with their key, are kept in the database (only a digest
of their token), and the table for them stays bounded. On a SQLite file; two processes on PostgreSQL:
tests/integration/test_console_replicas.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from adapters.sql import AccessRepository, Database, default_url
from api.console import sessions
from api.console.sessions import IDLE_S, LIFETIME_S, TOUCH_EVERY_S, SessionStore
from pilot_core.access import Actor, Principal, Role

SETUP = Actor.system("test_console_sessions")


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with Database(default_url(tmp_path)) as database:
        database.upgrade()
        yield database


@pytest.fixture
def principal(database: Database) -> Principal:
    access = AccessRepository(database)
    access.create_organisation("evaluators", "Evaluators", actor=SETUP)
    key = access.create_key("someone", Role.EVALUATOR, "evaluators", actor=SETUP)[1]
    found = access.authenticate(key)
    assert found is not None
    return found


def test_a_session_ends_after_its_idle_time(database: Database, principal: Principal) -> None:
    clock = Clock()
    store = SessionStore(database, clock)
    session = store.open(principal)
    clock.now_s += IDLE_S - 1
    assert store.get(session.token) is not None  # used: its idle time starts again
    clock.now_s += IDLE_S - 1
    assert store.get(session.token) is not None
    clock.now_s += IDLE_S + 1
    assert store.get(session.token) is None
    clock.now_s -= IDLE_S + 1
    assert store.get(session.token) is None  # and it is gone for good


def test_a_session_ends_after_its_lifetime_however_busy(database: Database, principal: Principal) -> None:
    clock = Clock()
    start_s = clock.now_s
    store = SessionStore(database, clock)
    session = store.open(principal)
    while clock.now_s + 600 < start_s + LIFETIME_S:
        clock.now_s += 600
        assert store.get(session.token) is not None
    clock.now_s += 601
    assert store.get(session.token) is None


def test_tokens_are_random_closed_sessions_are_gone_and_unknown_tokens_open_nothing(
    database: Database, principal: Principal
) -> None:
    store = SessionStore(database)
    first, second = store.open(principal), store.open(principal)
    assert first.token != second.token and first.csrf != second.csrf and len(first.token) >= 40
    store.close(first.token)
    assert store.get(first.token) is None
    assert store.get(second.token) is not None
    assert store.get("") is None and store.get(None) is None and store.get("forged") is None


def test_the_database_holds_only_a_digest_and_another_store_on_it_knows_the_session(
    database: Database, principal: Principal
) -> None:
    session = SessionStore(database).open(principal)
    with database.engine.connect() as connection:
        stored = " ".join(str(v) for row in connection.execute(text("SELECT * FROM console_sessions")) for v in row)
    assert session.token not in stored and session.csrf not in stored
    again = SessionStore(database).get(session.token)  # another replica, or this one restarted
    assert again is not None and again.principal == principal and again.csrf == session.csrf


def test_a_page_view_writes_last_seen_at_most_once_a_minute(database: Database, principal: Principal) -> None:
    clock = Clock()
    store = SessionStore(database, clock)
    session = store.open(principal)

    def last_seen() -> object:
        with database.engine.connect() as connection:
            return connection.execute(text("SELECT last_seen_at FROM console_sessions")).scalar_one()

    opened = last_seen()
    clock.now_s += TOUCH_EVERY_S - 1
    assert store.get(session.token) is not None and last_seen() == opened
    clock.now_s += 1
    assert store.get(session.token) is not None and last_seen() != opened


def test_revoking_the_key_ends_its_sessions(database: Database, principal: Principal) -> None:
    store = SessionStore(database)
    session = store.open(principal)
    AccessRepository(database).revoke_key(principal.key_id, actor=SETUP)
    assert store.get(session.token) is None


def test_the_oldest_sessions_go_first_past_the_limit(
    monkeypatch: pytest.MonkeyPatch, database: Database, principal: Principal
) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    store = SessionStore(database)
    opened = [store.open(principal) for _ in range(5)]
    assert [store.get(s.token) is not None for s in opened] == [False, False, True, True, True]
