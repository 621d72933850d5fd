"""Empty databases for the integration tests: a SQLite file, and a schema on the real PostgreSQL.

PostgreSQL missing is a failure, never a skip: the API runs on it in production.
Each test gets an empty database: a fresh SQLite file, or a fresh schema in a
PostgreSQL database made for this session and dropped at its end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from adapters.sql import Database, default_url

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A uniquely named PostgreSQL database for this test session."""
    name = f"pilot_test_{uuid.uuid4().hex[:12]}"
    server = create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        server.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_SERVER} ({error.orig}); start it with trust auth for user"
            " postgres. These tests run on both SQLite and PostgreSQL and do not skip.",
            pytrace=False,
        )
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(default_url(tmp_path))
        yield database
        database.dispose()
        return
    url: str = request.getfixturevalue("postgres_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    database = Database(f"{url}?options=-csearch_path%3D{schema}")
    yield database
    database.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
