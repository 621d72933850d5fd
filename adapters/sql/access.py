"""Organisations and API keys in SQL, every change audited in its own transaction."""

from __future__ import annotations

import builtins
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.sql import audit
from adapters.sql.database import Database
from adapters.sql.errors import DuplicateOrganisation, InvalidKeyScope, NotFound
from adapters.sql.models import (
    ApiKeyRecord,
    ConsoleSessionRecord,
    DemonstrationRecord,
    OrganisationRecord,
    SignInLinkRecord,
)
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


@dataclass(frozen=True, slots=True)
class ConsoleSessionRow:
    """A stored console session, with the caller its key names now (None once the key is revoked)."""

    principal: Principal | None
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime


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
        token, token_sha256 = api_keys.new_secret_token()
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
        digest = api_keys.digest(token) if api_keys.is_secret_token(token) else None
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

    # --- console sessions (the policy, idle and absolute expiry, is api.console.sessions')

    def add_console_session(self, token_sha256: str, key_id: str, now: dt.datetime, expires_at: dt.datetime) -> None:
        with self._db.transaction() as session:
            record = self._key_row(session, key_id)[0]
            session.add(
                ConsoleSessionRecord(
                    token_sha256=token_sha256,
                    api_key_id=record.id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires_at,
                )
            )

    def console_session(self, token_sha256: str) -> ConsoleSessionRow | None:
        query = _KEYS.add_columns(ConsoleSessionRecord).join(
            ConsoleSessionRecord, ConsoleSessionRecord.api_key_id == ApiKeyRecord.id
        )
        with self._db.transaction() as session:
            row = session.execute(query.where(ConsoleSessionRecord.token_sha256 == token_sha256)).one_or_none()
        if row is None:
            return None
        key, organisation, _, stored = row
        principal = (
            None
            if key.revoked_at is not None
            else Principal(key.key_id, key.name, Role(key.role), organisation, key.demonstration_id)
        )
        return ConsoleSessionRow(principal, stored.created_at, stored.last_seen_at, stored.expires_at)

    def touch_console_session(self, token_sha256: str, now: dt.datetime) -> None:
        with self._db.transaction() as session:
            session.execute(
                update(ConsoleSessionRecord)
                .where(ConsoleSessionRecord.token_sha256 == token_sha256, ConsoleSessionRecord.last_seen_at < now)
                .values(last_seen_at=now)
            )

    def end_console_session(self, token_sha256: str) -> None:
        with self._db.transaction() as session:
            session.execute(delete(ConsoleSessionRecord).where(ConsoleSessionRecord.token_sha256 == token_sha256))

    def purge_console_sessions(self, now: dt.datetime, idle_since: dt.datetime, keep_at_most: int) -> None:
        """Delete the sessions that ended (idle since before ``idle_since``, or past their end), then the oldest
        beyond ``keep_at_most``: the table stays bounded whatever signs in."""
        with self._db.transaction() as session:
            session.execute(
                delete(ConsoleSessionRecord).where(
                    or_(ConsoleSessionRecord.last_seen_at < idle_since, ConsoleSessionRecord.expires_at <= now)
                )
            )
            excess = (session.scalar(select(func.count()).select_from(ConsoleSessionRecord)) or 0) - keep_at_most
            if excess > 0:
                oldest = (
                    select(ConsoleSessionRecord.id)
                    .order_by(ConsoleSessionRecord.created_at, ConsoleSessionRecord.id)
                    .limit(excess)
                )
                session.execute(delete(ConsoleSessionRecord).where(ConsoleSessionRecord.id.in_(oldest)))

    @staticmethod
    def _key_row(session: Session, key_id: str) -> tuple[ApiKeyRecord, str, str | None]:
        row = session.execute(_KEYS.where(ApiKeyRecord.key_id == key_id)).one_or_none()
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        return row[0], row[1], row[2]
