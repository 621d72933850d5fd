"""Organisations, API keys, ownership and the audit log, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from adapters.sql import (
    AccessRepository,
    AuditLog,
    Database,
    DemonstrationRepository,
    DuplicateOrganisation,
    InvalidKeyScope,
    InvalidSlug,
    NotFound,
    OwnerIsNotAParticipant,
    UnknownOrganisation,
)
from adapters.sql.models import ROLES
from pilot_core import api_keys
from pilot_core.access import Actor, Principal, Role
from pilot_core.audit import AuditAction
from pilot_core.demonstration import DemonstrationPlan, plan_hash
from tests.unit.test_plan import raw_plan

OPERATOR = Actor.system("operator (test)")


@pytest.fixture
def database(empty_database: Database) -> Database:
    empty_database.upgrade()
    return empty_database


@pytest.fixture
def access(database: Database) -> AccessRepository:
    repository = AccessRepository(database)
    for slug in ("startup-a", "startup-b", "factory"):
        repository.create_organisation(slug, slug.title(), actor=OPERATOR)
    return repository


def plan(**changes: object) -> DemonstrationPlan:
    return DemonstrationPlan.model_validate({**raw_plan(), **changes})


def test_the_stored_roles_are_the_core_roles() -> None:
    assert set(ROLES) == {role.value for role in Role}


def test_organisations_are_unique_and_well_named(access: AccessRepository) -> None:
    assert [o.slug for o in access.organisations()] == ["startup-a", "startup-b", "factory"]
    assert access.organisation("factory").name == "Factory"
    with pytest.raises(DuplicateOrganisation):
        access.create_organisation("factory", "Again", actor=OPERATOR)
    with pytest.raises(InvalidSlug):
        access.create_organisation("Not A Slug", "", actor=OPERATOR)
    with pytest.raises(NotFound):
        access.organisation("nobody")


def test_a_key_authenticates_until_it_is_revoked(access: AccessRepository, database: Database) -> None:
    key, token = access.create_key("Kim", Role.STARTUP, "startup-a", actor=OPERATOR)
    assert token.startswith(f"pt_{key.key_id}_")
    assert access.authenticate(token) == Principal(key.key_id, "Kim", Role.STARTUP, "startup-a")
    with database.engine.connect() as connection:
        stored = connection.execute(text("SELECT secret_sha256 FROM api_keys")).scalar_one()
    assert token.split("_", 2)[2] not in stored and stored == api_keys.digest(token.split("_", 2)[2])

    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (wrong, "pt_000000000000_" + token.split("_", 2)[2], "", "Bearer x", token + "x"):
        assert access.authenticate(bad) is None
    revoked = access.revoke_key(key.key_id, actor=OPERATOR)
    assert revoked.revoked_at is not None
    assert access.authenticate(token) is None
    assert access.revoke_key(key.key_id, actor=OPERATOR) == revoked  # again: nothing changes
    with pytest.raises(NotFound):
        access.revoke_key("ffffffffffff", actor=OPERATOR)


def test_keys_name_a_known_organisation_and_may_be_limited_to_one_demonstration(
    access: AccessRepository, database: Database
) -> None:
    demonstration = DemonstrationRepository(database).create(plan(), actor=OPERATOR, owner="startup-a")
    with pytest.raises(UnknownOrganisation):
        access.create_key("Kim", Role.EVALUATOR, "nobody", actor=OPERATOR)
    with pytest.raises(NotFound):
        access.create_key("Kim", Role.EVALUATOR, "factory", actor=OPERATOR, demonstration="no-such-demo")
    with pytest.raises(InvalidKeyScope):
        access.create_key("Root", Role.ADMIN, "factory", actor=OPERATOR, demonstration=demonstration.id)
    key, token = access.create_key(
        "Evaluator", Role.EVALUATOR, "factory", actor=OPERATOR, demonstration=demonstration.slug
    )
    assert key.demonstration == demonstration.slug
    principal = access.authenticate(token)
    assert principal is not None and principal.demonstration_id == demonstration.id
    assert [k.key_id for k in access.keys("factory")] == [key.key_id]
    assert access.keys("startup-a") == []


def test_a_demonstration_has_one_owner_and_participants(access: AccessRepository, database: Database) -> None:
    demonstrations = DemonstrationRepository(database)
    created = demonstrations.create(plan(), actor=OPERATOR, owner="startup-a")
    assert (created.organisation, created.participants) == ("startup-a", ())
    with pytest.raises(UnknownOrganisation):
        demonstrations.create(plan(), actor=OPERATOR, owner="nobody")

    shared = demonstrations.add_participant(created.id, "factory", actor=OPERATOR)
    assert shared.participants == ("factory",)
    assert demonstrations.add_participant(created.id, "factory", actor=OPERATOR) == shared
    assert demonstrations.get(created.slug).participants == ("factory",)
    assert [d.participants for d in demonstrations.list()] == [("factory",)]
    with pytest.raises(OwnerIsNotAParticipant):
        demonstrations.add_participant(created.id, "startup-a", actor=OPERATOR)
    with pytest.raises(UnknownOrganisation):
        demonstrations.add_participant(created.id, "nobody", actor=OPERATOR)

    assert demonstrations.remove_participant(created.id, "factory", actor=OPERATOR).participants == ()
    with pytest.raises(NotFound):
        demonstrations.remove_participant(created.id, "factory", actor=OPERATOR)
    with pytest.raises(NotFound):
        demonstrations.remove_participant(created.id, "startup-a", actor=OPERATOR)  # the owner stays the owner


def test_every_change_is_audited_with_who_what_and_why(access: AccessRepository, database: Database) -> None:
    demonstrations = DemonstrationRepository(database)
    lee = Actor("Lee", Role.STARTUP, "startup-a", "0123456789ab")
    created = demonstrations.create(plan(), actor=lee, owner="startup-a")
    demonstrations.replace_draft(created.id, plan(name="Renamed cell"), actor=lee)
    demonstrations.freeze(created.id, actor=lee)
    demonstrations.freeze(created.id, actor=lee)  # changes nothing, so records nothing
    amended = demonstrations.amend(created.id, plan(name="Renamed cell", confidence_level=0.95), "asked", actor=lee)
    demonstrations.add_participant(created.id, "factory", actor=OPERATOR)

    entries = AuditLog(database).entries(created.id)
    assert [e.action for e in entries] == [
        AuditAction.PARTICIPANT_ADDED,
        AuditAction.PLAN_AMENDED,
        AuditAction.PLAN_FROZEN,
        AuditAction.DRAFT_REPLACED,
        AuditAction.DEMONSTRATION_CREATED,
    ]
    participant, amendment, frozen, replaced, creation = entries
    assert amendment.actor == lee and amendment.reason == "asked"
    assert amendment.details["changes"] == [{"path": "confidence_level", "before": 0.9, "after": 0.95}]
    assert amendment.details["plan_hash"] == amended.plan_hash
    assert replaced.details["changes"] == [{"path": "name", "before": raw_plan()["name"], "after": "Renamed cell"}]
    assert replaced.details["plan_hash_before"] == plan_hash(plan())
    assert frozen.details == {"version": 1, "plan_hash": plan_hash(plan(name="Renamed cell"))}
    assert creation.details["organisation"] == "startup-a"
    assert participant.actor == OPERATOR and participant.details == {"organisation": "factory"}
    assert all(e.at.tzinfo is not None and e.target == f"demonstration {created.slug}" for e in entries)
    assert entries[0].id > entries[-1].id
    assert [e.id for e in AuditLog(database).entries(created.id, limit=2, before_id=entries[1].id)] == [
        e.id for e in entries[2:4]
    ]

    everything = AuditLog(database).entries()
    assert {AuditAction.ORGANISATION_CREATED} <= {e.action for e in everything}


def test_the_database_itself_keeps_the_audit_log_append_only(access: AccessRepository, database: Database) -> None:
    with database.engine.connect() as connection:
        for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"):
                connection.execute(text(statement))
            connection.rollback()
    assert len(AuditLog(database).entries()) == 3


def test_a_sign_in_link_signs_in_once_before_it_expires(access: AccessRepository, database: Database) -> None:
    key, _ = access.create_key("Kim", Role.EVALUATOR, "factory", actor=OPERATOR)
    token = access.create_sign_in_link(key.key_id, dt.timedelta(minutes=5))
    with database.transaction() as session:
        stored = session.execute(text("SELECT token_sha256, used_at FROM sign_in_links")).one()
    assert stored == (api_keys.digest(token), None)  # the token itself is not stored
    assert access.redeem_sign_in_link(token) == Principal(key.key_id, "Kim", Role.EVALUATOR, "factory")
    assert access.redeem_sign_in_link(token) is None  # spent

    expired = access.create_sign_in_link(key.key_id, dt.timedelta(seconds=-1))
    assert access.redeem_sign_in_link(expired) is None
    revoked = access.create_sign_in_link(key.key_id, dt.timedelta(minutes=5))
    access.revoke_key(key.key_id, actor=OPERATOR)
    assert access.redeem_sign_in_link(revoked) is None
    with pytest.raises(InvalidKeyScope, match="revoked"):
        access.create_sign_in_link(key.key_id, dt.timedelta(minutes=5))
    for forged in ("", "x" * 43, token + "x", "pt_0123456789ab_" + "a" * 43):
        assert access.redeem_sign_in_link(forged) is None
