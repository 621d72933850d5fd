"""An engine, its sessions, and the migrations that bring its schema to head."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x70696C6F74_00  # "pilot", 0: the advisory lock key held while migrating PostgreSQL
DATABASE_FILE = "pilot.db"


def default_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir.resolve() / DATABASE_FILE}"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration that finds the migrations inside the package, whatever the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.attributes["url"] = url  # not a main option: configparser would choke on '%' in passwords
    return config


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")  # off by default in SQLite, per connection
    cursor.execute("PRAGMA journal_mode = WAL")  # the API reads while the roll-up job writes
    cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a crash loses at most the last commit
    cursor.close()


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = make_url(url)
        options: dict[str, Any] = {
            # The same JSON on both backends: NaN would pass SQLite and fail PostgreSQL.
            "json_serializer": functools.partial(json.dumps, allow_nan=False, ensure_ascii=False),
            "echo": echo,
        }
        if parsed.get_backend_name() == "postgresql":
            options["pool_pre_ping"] = True
        self.engine: Engine = create_engine(parsed, **options)
        if self.engine.dialect.name == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        with self.sessions.begin() as session:
            yield session

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision``; a no-op when the schema is there already."""
        config = alembic_config()
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":
                # Replicas starting together migrate one at a time: the others wait, then find the schema at head.
                connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()
