"""Alembic environment: uses the caller's connection, else PILOT_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from adapters.sql.models import Base


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.config.attributes.get("url") or os.environ.get("PILOT_DATABASE_URL")
    if not url:
        raise RuntimeError("set PILOT_DATABASE_URL to the database to migrate, e.g. sqlite:///.pilot/pilot.db")
    return str(url)


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
elif (shared := context.config.attributes.get("connection")) is not None:
    _migrate(shared)
else:
    from adapters.sql.database import Database  # its engine sets the SQLite pragmas

    with Database(_url()) as database, database.engine.begin() as connection:
        _migrate(connection)
