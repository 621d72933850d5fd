"""Organisations and API keys in SQL, every change audited in its own transaction."""

from __future__ import annotations

import builtins
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.sql import audit
from adapters.sql.database import Database
from adapters.sql.errors import DuplicateOrganisation, InvalidKeyScope, NotFound
from adapters.sql.models import ApiKeyRecord, DemonstrationRecord, OrganisationRecord, SignInLinkRecord
from adapters.sql.repository import DemonstrationRepository, check_slug, organisation_id
from pilot_core import api_keys
from pilot_core.access import Actor, Principal, Role
from pilot_core.audit import AuditAction


@dataclass(frozen=True, slots=True)
class Organisation:
    id: int
    slug: str
    name: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as listed: never its secret."""

    key_id: str
    name: str
    role: Role
    organisation: str
    demonstration: str | None  # slug of the one demonstration it is limited to
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _organisation(record: OrganisationRecord) -> Organisation:
    return Organisation(record.id, record.slug, record.name, record.created_at)


_KEYS = (
    select(ApiKeyRecord, OrganisationRecord.slug, DemonstrationRecord.slug)
    .join(OrganisationRecord, OrganisationRecord.id == ApiKeyRecord.organisation_id)
    .outerjoin(DemonstrationRecord, DemonstrationRecord.id == ApiKeyRecord.demonstration_id)
)


def _key(record: ApiKeyRecord, organisation: str, demonstration: str | None) -> ApiKey:
    return ApiKey(
        record.key_id,
        record.name,
        Role(record.role),
        organisation,
        demonstration,
        record.created_at,
        record.revoked_at,
    )


class AccessRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    # --- organisations

    def create_organisation(self, slug: str, name: str, *, actor: Actor) -> Organisation:
        check_slug(slug)
        try:
            with self._db.transaction() as session:
                if session.scalar(select(OrganisationRecord.id).where(OrganisationRecord.slug == slug)):
                    raise DuplicateOrganisation(f"an organisation with slug {slug!r} exists already")
                record = OrganisationRecord(slug=slug, name=name.strip() or slug, created_at=_now())
                session.add(record)
                audit.record(
                    session,
                    actor,
                    AuditAction.ORGANISATION_CREATED,
                    f"organisation {slug}",
                    details={"slug": slug, "name": record.name},
                )
                session.flush()
                return _organisation(record)
        except IntegrityError as error:  # created by another writer between our check and insert
            raise DuplicateOrganisation(f"an organisation with slug {slug!r} exists already") from error

    def organisations(self) -> builtins.list[Organisation]:
        with self._db.transaction() as session:
            return [
                _organisation(r) for r in session.scalars(select(OrganisationRecord).order_by(OrganisationRecord.id))
            ]

    def organisation(self, slug: str) -> Organisation:
        with self._db.transaction() as session:
            record = session.scalar(select(OrganisationRecord).where(OrganisationRecord.slug == slug))
            if record is None:
                raise NotFound(f"no organisation {slug!r}")
            return _organisation(record)

    # --- API keys

    def create_key(
        self,
        name: str,
        role: Role,
        organisation: str,
        *,
        actor: Actor,
        demonstration: int | str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its token, which is returned here once and never stored."""
        if role is Role.ADMIN and demonstration is not None:
            raise InvalidKeyScope("an admin key cannot be limited to one demonstration; give the key another role")
        new = api_keys.new_key()
        with self._db.transaction() as session:
            owner_id = organisation_id(session, organisation)
            scope = None
            if demonstration is not None:
                scope = DemonstrationRepository.find(session, demonstration)
            now = _now()
            record = ApiKeyRecord(
                key_id=new.key_id,
                secret_sha256=new.secret_sha256,
                name=name.strip() or "unnamed",
                role=role.value,
                organisation_id=owner_id,
                demonstration_id=scope.id if scope else None,
                created_at=now,
                revoked_at=None,
            )
            session.add(record)
            audit.record(
                session,
                actor,
                AuditAction.API_KEY_CREATED,
                f"api key {new.key_id}",
                demonstration_id=scope.id if scope else None,
                details={
                    "key_id": new.key_id,
                    "name": record.name,
                    "role": role.value,
                    "organisation": organisation,
                    "demonstration": scope.slug if scope else None,
                },
            )
            session.flush()
            return _key(record, organisation, scope.slug if scope else None), new.token

    def keys(self, organisation: str | None = None) -> builtins.list[ApiKey]:
        query = _KEYS.order_by(ApiKeyRecord.id)
        if organisation is not None:
            query = query.where(OrganisationRecord.slug == organisation)
        with self._db.transaction() as session:
            return [_key(*row) for row in session.execute(query)]

    def revoke_key(self, key_id: str, *, actor: Actor) -> ApiKey:
        """Revoke a key for good; revoking it again changes nothing."""
        with self._db.transaction() as session:
            row = self._key_row(session, key_id)
            record = row[0]
            if record.revoked_at is None:
                record.revoked_at = _now()
                audit.record(
                    session,
                    actor,
                    AuditAction.API_KEY_REVOKED,
                    f"api key {key_id}",
                    demonstration_id=record.demonstration_id,
                    details={"key_id": key_id, "name": record.name},
                )
            return _key(*row)

    def authenticate(self, token: str) -> Principal | None:
        """The caller a token names, or None for a malformed, unknown, wrong or revoked one."""
        parsed = api_keys.parse(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        with self._db.transaction() as session:
            row = session.execute(_KEYS.where(ApiKeyRecord.key_id == key_id)).one_or_none()
        if row is None:
            api_keys.matches(secret, "0" * 64)  # about as long as a real check: no timing tells a key id exists
            return None
        record, organisation, _ = row
        if not api_keys.matches(secret, record.secret_sha256) or record.revoked_at is not None:
            return None
        return Principal(record.key_id, record.name, Role(record.role), organisation, record.demonstration_id)

    def principal(self, key_id: str) -> Principal | None:
        """The caller of the key ``key_id`` as it stands now: None once it is revoked or gone (console sessions)."""
        with self._db.transaction() as session:
            row = session.execute(_KEYS.where(ApiKeyRecord.key_id == key_id)).one_or_none()
        if row is None or row[0].revoked_at is not None:
            return None
        record, organisation, _ = row
        return Principal(record.key_id, record.name, Role(record.role), organisation, record.demonstration_id)

    # --- one-time sign-in links

    def create_sign_in_link(self, key_id: str, valid_for: dt.timedelta) -> str:
        """A token that signs in to the console once, as key ``key_id``, within ``valid_for``; only its digest is
        stored, so the token is returned here once."""
        token, token_sha256 = api_keys.new_link_token()
        with self._db.transaction() as session:
            record = self._key_row(session, key_id)[0]
            if record.revoked_at is not None:
                raise InvalidKeyScope(f"api key {key_id} is revoked: a link would sign in as no one")
            now = _now()
            session.add(
                SignInLinkRecord(
                    token_sha256=token_sha256,
                    api_key_id=record.id,
                    created_at=now,
                    expires_at=now + valid_for,
                    used_at=None,
                )
            )
        return token

    def redeem_sign_in_link(self, token: str) -> Principal | None:
        """The caller a link's token signs in as, once: the token is spent by this call whatever it returns.

        None for an unknown, spent or expired token, or one whose key was revoked since.
        """
        digest = api_keys.digest(token) if api_keys.is_link_token(token) else None
        if digest is None:
            return None
        with self._db.transaction() as session:
            # Spent in one statement: two requests racing with the same token cannot both win.
            spent = session.execute(
                update(SignInLinkRecord)
                .where(SignInLinkRecord.token_sha256 == digest, SignInLinkRecord.used_at.is_(None))
                .values(used_at=_now())
                .returning(SignInLinkRecord.api_key_id, SignInLinkRecord.expires_at)
            ).one_or_none()
            if spent is None:
                return None
            key_row_id, expires_at = spent
            if expires_at <= _now():
                return None
            key_id = session.scalar(select(ApiKeyRecord.key_id).where(ApiKeyRecord.id == key_row_id))
        return None if key_id is None else self.principal(key_id)

    @staticmethod
    def _key_row(session: Session, key_id: str) -> tuple[ApiKeyRecord, str, str | None]:
        row = session.execute(_KEYS.where(ApiKeyRecord.key_id == key_id)).one_or_none()
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        return row[0], row[1], row[2]
