"""`pilot orgs` and `pilot keys`: organisations and API keys, made on the server itself.

The first admin key has to come from here: the API accepts nothing without one.
Every change is audited, with the operating-system user who ran the command.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pilot.output import console, errors, fail, table
from pilot_core.access import Actor, Role

if TYPE_CHECKING:
    from adapters.sql import AccessRepository

orgs_app = typer.Typer(no_args_is_help=True, help="Organisations: startups, factories, evaluators, the operator.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys: who may call the API, in which role.")

ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML configuration file (default ./pilot.yaml)")
]
ROLES = "startup, factory_manager, evaluator or admin"


def _access(config: Path | None) -> AccessRepository:
    """The repository over the configured database, migrated to the latest schema."""
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.sql import AccessRepository, Database
    from collector.settings import CollectorSettings

    try:
        database = Database(CollectorSettings.load(config).database_url)
        database.upgrade()
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    except SQLAlchemyError as exc:
        raise fail(f"the demonstrations database could not be opened: {exc}") from None
    return AccessRepository(database)


def _actor() -> Actor:
    return Actor.system(f"{getpass.getuser()} (pilot command line)")


@orgs_app.command("create")
def orgs_create(
    slug: Annotated[str, typer.Argument(help="Lower-case words joined by hyphens, e.g. pangyo-robotics")],
    name: Annotated[str, typer.Option(help="Display name (default: the slug)")] = "",
    config: ConfigFile = None,
) -> None:
    """Create an organisation."""
    from adapters.sql import RepositoryError

    try:
        organisation = _access(config).create_organisation(slug, name, actor=_actor())
    except RepositoryError as exc:
        raise fail(str(exc)) from None
    console.print(f"created organisation [bold]{organisation.slug}[/bold] ({organisation.name})")


@orgs_app.command("list")
def orgs_list(config: ConfigFile = None) -> None:
    """List the organisations."""
    listed = table("Organisations", ("slug", "name", "created"), whole=("slug", "created"))
    for organisation in _access(config).organisations():
        listed.add_row(organisation.slug, organisation.name, f"{organisation.created_at:%Y-%m-%d %H:%M}")
    console.print(listed)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who holds the key: a person or a system")],
    role: Annotated[str, typer.Option(help=ROLES)],
    org: Annotated[str, typer.Option("--org", help="Slug of the holder's organisation")],
    demonstration: Annotated[str | None, typer.Option(help="Limit the key to this demonstration (id or slug)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the key as JSON")] = False,
    config: ConfigFile = None,
) -> None:
    """Create an API key. Its token is printed once, on standard output, and never stored."""
    from adapters.sql import RepositoryError

    try:
        kind = Role(role)
    except ValueError:
        raise fail(f"unknown role {role!r}; use {ROLES}") from None
    try:
        key, token = _access(config).create_key(name, kind, org, actor=_actor(), demonstration=demonstration)
    except RepositoryError as exc:
        raise fail(str(exc)) from None
    if json_output:
        sys.stdout.write(json.dumps({"key_id": key.key_id, "role": key.role.value, "token": token}) + "\n")
        return
    errors.print(
        f"created {key.role.value} key {key.key_id} for {key.name} ({key.organisation})"
        + (f", limited to {key.demonstration}" if key.demonstration else "")
        + "; the token below is shown only now:"
    )
    sys.stdout.write(token + "\n")


@keys_app.command("list")
def keys_list(
    org: Annotated[str | None, typer.Option("--org", help="Only this organisation's keys")] = None,
    config: ConfigFile = None,
) -> None:
    """List the API keys (never their secrets)."""
    columns = ("key id", "name", "role", "organisation", "demonstration", "created", "revoked")
    listed = table("API keys", columns, whole=("key id", "role"))
    for key in _access(config).keys(org):
        listed.add_row(
            key.key_id,
            key.name,
            key.role.value,
            key.organisation,
            key.demonstration or "",
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
        )
    console.print(listed)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `pilot keys list` shows it")],
    config: ConfigFile = None,
) -> None:
    """Revoke an API key for good."""
    from adapters.sql import RepositoryError

    try:
        key = _access(config).revoke_key(key_id, actor=_actor())
    except RepositoryError as exc:
        raise fail(str(exc)) from None
    console.print(f"revoked key {key.key_id} of {key.name} ({key.organisation})")
