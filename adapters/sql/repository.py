"""Demonstrations with versioned plans, hourly roll-ups and cached results, over a ``Database``.

Each method is one transaction. A plan's version 1 is a draft until frozen and
may be replaced in place; a frozen version never changes (the database refuses
too); an amendment is a new version, frozen at once, with a reason.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from sqlalchemy import false, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.sql import audit
from adapters.sql.database import Database
from adapters.sql.errors import (
    AmendmentNeedsReason,
    DuplicateSlug,
    InvalidSlug,
    NotFound,
    NotFrozenYet,
    OwnerIsNotAParticipant,
    PlanFrozen,
    UnknownOrganisation,
)
from adapters.sql.models import (
    SLUG_LENGTH,
    CachedResultRecord,
    DemonstrationOrganisationRecord,
    DemonstrationRecord,
    OrganisationRecord,
    PlanVersionRecord,
    rollups,
)
from pilot_core.access import Actor, Membership
from pilot_core.audit import AuditAction, json_changes
from pilot_core.demonstration import DemonstrationPlan, canonical_json, plan_hash
from pilot_core.device_hours import DeviceHour

# Words of letters or digits (any script) joined by single hyphens; never all digits, which would read as an id.
_SLUG = re.compile(r"[^\W_]+(?:-[^\W_]+)*")


def _storable(key: int) -> bool:
    """Whether ``key`` fits a 64-bit integer column: larger numbers name nothing, and SQLite's driver overflows."""
    return -(2**63) <= key < 2**63


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def slugify(name: str) -> str:
    words = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFKC", name).casefold()).strip("-")
    slug = words[: SLUG_LENGTH - 10].strip("-") or "demonstration"  # room for a "-2" suffix
    return f"demo-{slug}" if slug.isdigit() else slug


def check_slug(slug: str) -> str:
    if len(slug) > SLUG_LENGTH or not _SLUG.fullmatch(slug) or slug.isdigit() or slug != slug.casefold():
        raise InvalidSlug(
            f"slug {slug!r} must be 1–{SLUG_LENGTH} lower-case letters or digits in words joined by single hyphens,"
            " and not only digits"
        )
    return slug


@dataclass(frozen=True, slots=True)
class PlanVersion:
    version: int
    plan: DemonstrationPlan
    plan_hash: str
    frozen: bool
    frozen_at: dt.datetime | None
    reason: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class StoredDemonstration:
    """A demonstration with its current (latest) plan version, its owner and its participants."""

    id: int
    slug: str
    version: int
    frozen: bool
    frozen_at: dt.datetime | None
    plan: DemonstrationPlan
    plan_hash: str  # as stored when the version was written: the name results cite
    created_at: dt.datetime
    updated_at: dt.datetime
    organisation: str | None = None  # slug of the owner; None: made by an admin for no one in particular
    participants: tuple[str, ...] = ()  # slugs of the other organisations that take part

    @property
    def membership(self) -> Membership:
        return Membership(self.id, self.organisation, self.participants)


def _version(record: PlanVersionRecord) -> PlanVersion:
    return PlanVersion(
        version=record.version,
        plan=DemonstrationPlan.model_validate_json(record.plan),
        plan_hash=record.plan_hash,
        frozen=record.frozen,
        frozen_at=record.frozen_at,
        reason=record.reason,
        created_at=record.created_at,
    )


def _stored(
    demonstration: DemonstrationRecord, current: PlanVersionRecord, members: Sequence[tuple[str, str]] = ()
) -> StoredDemonstration:
    """``members``: (organisation slug, relation) of the demonstration."""
    return StoredDemonstration(
        id=demonstration.id,
        slug=demonstration.slug,
        version=current.version,
        frozen=current.frozen,
        frozen_at=current.frozen_at,
        plan=DemonstrationPlan.model_validate_json(current.plan),
        plan_hash=current.plan_hash,
        created_at=demonstration.created_at,
        updated_at=demonstration.updated_at,
        organisation=next((slug for slug, relation in members if relation == OWNER), None),
        participants=tuple(sorted(slug for slug, relation in members if relation == PARTICIPANT)),
    )


OWNER, PARTICIPANT = "owner", "participant"


def _target(demonstration: DemonstrationRecord) -> str:
    return f"demonstration {demonstration.slug}"


def _plan_json(record: PlanVersionRecord) -> Any:
    return orjson.loads(record.plan)


class DemonstrationRepository:
    """Demonstrations and their plans. Every change is written to the audit log in the same transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def create(
        self, plan: DemonstrationPlan, slug: str | None = None, *, actor: Actor, owner: str | None = None
    ) -> StoredDemonstration:
        """A new demonstration whose version 1 is a draft, owned by the organisation ``owner`` (a slug).

        Without a slug, one is made from the plan's name.
        """
        try:
            with self._db.transaction() as session:
                owner_id = organisation_id(session, owner) if owner is not None else None
                if slug is None:
                    slug = self._free_slug(session, slugify(plan.name))
                else:
                    check_slug(slug)
                    if session.scalar(select(DemonstrationRecord.id).where(DemonstrationRecord.slug == slug)):
                        raise DuplicateSlug(f"a demonstration with slug {slug!r} exists already")
                now = _now()
                demonstration = DemonstrationRecord(slug=slug, created_at=now, updated_at=now)
                session.add(demonstration)
                session.flush()
                draft = PlanVersionRecord(
                    demonstration_id=demonstration.id,
                    version=1,
                    plan=canonical_json(plan),
                    plan_hash=plan_hash(plan),
                    frozen=False,
                    frozen_at=None,
                    reason=None,
                    created_at=now,
                )
                session.add(draft)
                members: list[tuple[str, str]] = []
                if owner is not None and owner_id is not None:
                    session.add(
                        DemonstrationOrganisationRecord(
                            demonstration_id=demonstration.id,
                            organisation_id=owner_id,
                            relation=OWNER,
                            added_at=now,
                        )
                    )
                    members.append((owner, OWNER))
                audit.record(
                    session,
                    actor,
                    AuditAction.DEMONSTRATION_CREATED,
                    _target(demonstration),
                    demonstration_id=demonstration.id,
                    details={"slug": slug, "version": 1, "plan_hash": draft.plan_hash, "organisation": owner},
                )
                session.flush()
                return _stored(demonstration, draft, members)
        except IntegrityError as error:  # another writer took the slug between our check and insert
            raise DuplicateSlug(f"a demonstration with slug {slug!r} exists already") from error

    def get(self, id_or_slug: int | str) -> StoredDemonstration:
        """By id (an int, or a string of ASCII digits) or by slug."""
        with self._db.transaction() as session:
            demonstration = self.find(session, id_or_slug)
            return self._loaded(session, demonstration, self._current(session, demonstration.id))

    def list(self) -> builtins.list[StoredDemonstration]:
        latest = (
            select(PlanVersionRecord.demonstration_id, func.max(PlanVersionRecord.version).label("version"))
            .group_by(PlanVersionRecord.demonstration_id)
            .subquery()
        )
        query = (
            select(DemonstrationRecord, PlanVersionRecord)
            .join(latest, latest.c.demonstration_id == DemonstrationRecord.id)
            .join(
                PlanVersionRecord,
                (PlanVersionRecord.demonstration_id == latest.c.demonstration_id)
                & (PlanVersionRecord.version == latest.c.version),
            )
            .order_by(DemonstrationRecord.id)
        )
        with self._db.transaction() as session:
            members: dict[int, builtins.list[tuple[str, str]]] = {}
            for demonstration_id, slug, relation in session.execute(_MEMBERS):
                members.setdefault(demonstration_id, []).append((slug, relation))
            return [
                _stored(demonstration, current, members.get(demonstration.id, []))
                for demonstration, current in session.execute(query)
            ]

    def replace_draft(self, id_or_slug: int | str, plan: DemonstrationPlan, *, actor: Actor) -> StoredDemonstration:
        with self._db.transaction() as session:
            demonstration = self.find(session, id_or_slug, for_update=True)
            current = self._current(session, demonstration.id)
            if current.frozen:
                raise PlanFrozen(current.version, current.plan_hash)
            before, before_hash = _plan_json(current), current.plan_hash
            current.plan = canonical_json(plan)
            current.plan_hash = plan_hash(plan)
            demonstration.updated_at = _now()
            audit.record(
                session,
                actor,
                AuditAction.DRAFT_REPLACED,
                _target(demonstration),
                demonstration_id=demonstration.id,
                details={
                    "version": current.version,
                    "plan_hash_before": before_hash,
                    "plan_hash": current.plan_hash,
                    "changes": json_changes(before, _plan_json(current)),
                },
            )
            return self._loaded(session, demonstration, current)

    def freeze(self, id_or_slug: int | str, *, actor: Actor) -> StoredDemonstration:
        """Freeze the draft; freezing a frozen plan changes nothing (and records nothing)."""
        with self._db.transaction() as session:
            demonstration = self.find(session, id_or_slug, for_update=True)
            current = self._current(session, demonstration.id)
            if not current.frozen:
                now = _now()
                current.frozen = True
                current.frozen_at = now
                demonstration.updated_at = now
                audit.record(
                    session,
                    actor,
                    AuditAction.PLAN_FROZEN,
                    _target(demonstration),
                    demonstration_id=demonstration.id,
                    details={"version": current.version, "plan_hash": current.plan_hash},
                )
            return self._loaded(session, demonstration, current)

    def amend(
        self, id_or_slug: int | str, plan: DemonstrationPlan, reason: str, *, actor: Actor
    ) -> StoredDemonstration:
        """A new version, frozen at once; every earlier version stays as it was."""
        if not reason or not reason.strip():
            raise AmendmentNeedsReason()
        with self._db.transaction() as session:
            demonstration = self.find(session, id_or_slug, for_update=True)
            current = self._current(session, demonstration.id)
            if not current.frozen:
                raise NotFrozenYet(current.version)
            now = _now()
            amended = PlanVersionRecord(
                demonstration_id=demonstration.id,
                version=current.version + 1,
                plan=canonical_json(plan),
                plan_hash=plan_hash(plan),
                frozen=True,
                frozen_at=now,
                reason=reason.strip(),
                created_at=now,
            )
            session.add(amended)
            demonstration.updated_at = now
            audit.record(
                session,
                actor,
                AuditAction.PLAN_AMENDED,
                _target(demonstration),
                demonstration_id=demonstration.id,
                reason=amended.reason,
                details={
                    "version_before": current.version,
                    "version": amended.version,
                    "plan_hash_before": current.plan_hash,
                    "plan_hash": amended.plan_hash,
                    "changes": json_changes(_plan_json(current), _plan_json(amended)),
                },
            )
            session.flush()
            return self._loaded(session, demonstration, amended)

    def add_participant(self, id_or_slug: int | str, organisation: str, *, actor: Actor) -> StoredDemonstration:
        """Let ``organisation`` (a slug) see the demonstration; adding a participant again changes nothing."""
        with self._db.transaction() as session:
            demonstration = self.find(session, id_or_slug, for_update=True)
            joining = organisation_id(session, organisation)
            relation = session.scalar(
                select(DemonstrationOrganisationRecord.relation).where(
                    DemonstrationOrganisationRecord.demonstration_id == demonstration.id,
                    DemonstrationOrganisationRecord.organisation_id == joining,
                )
            )
            if relation == OWNER:
                raise OwnerIsNotAParticipant(f"{organisation!r} owns demonstration {demonstration.slug!r} already")
            if relation is None:
                session.add(
                    DemonstrationOrganisationRecord(
                        demonstration_id=demonstration.id,
                        organisation_id=joining,
                        relation=PARTICIPANT,
                        added_at=_now(),
                    )
                )
                audit.record(
                    session,
                    actor,
                    AuditAction.PARTICIPANT_ADDED,
                    _target(demonstration),
                    demonstration_id=demonstration.id,
                    details={"organisation": organisation},
                )
                session.flush()
            return self._loaded(session, demonstration, self._current(session, demonstration.id))

    def remove_participant(self, id_or_slug: int | str, organisation: str, *, actor: Actor) -> StoredDemonstration:
        with self._db.transaction() as session:
            demonstration = self.find(session, id_or_slug, for_update=True)
            record = session.scalar(
                select(DemonstrationOrganisationRecord)
                .join(OrganisationRecord, OrganisationRecord.id == DemonstrationOrganisationRecord.organisation_id)
                .where(
                    DemonstrationOrganisationRecord.demonstration_id == demonstration.id,
                    OrganisationRecord.slug == organisation,
                    DemonstrationOrganisationRecord.relation == PARTICIPANT,
                )
            )
            if record is None:
                raise NotFound(f"{organisation!r} does not take part in demonstration {demonstration.slug!r}")
            session.delete(record)
            audit.record(
                session,
                actor,
                AuditAction.PARTICIPANT_REMOVED,
                _target(demonstration),
                demonstration_id=demonstration.id,
                details={"organisation": organisation},
            )
            session.flush()
            return self._loaded(session, demonstration, self._current(session, demonstration.id))

    def versions(self, id_or_slug: int | str) -> builtins.list[PlanVersion]:
        with self._db.transaction() as session:
            demonstration = self.find(session, id_or_slug)
            records = session.scalars(
                select(PlanVersionRecord)
                .where(PlanVersionRecord.demonstration_id == demonstration.id)
                .order_by(PlanVersionRecord.version)
            )
            return [_version(record) for record in records]

    def version(self, id_or_slug: int | str, number: int) -> PlanVersion:
        with self._db.transaction() as session:
            demonstration = self.find(session, id_or_slug)
            record = session.get(PlanVersionRecord, (demonstration.id, number)) if _storable(number) else None
            if record is None:
                raise NotFound(f"demonstration {demonstration.slug!r} has no plan version {number}")
            return _version(record)

    @staticmethod
    def _loaded(
        session: Session, demonstration: DemonstrationRecord, current: PlanVersionRecord
    ) -> StoredDemonstration:
        members = session.execute(_MEMBERS.where(DemonstrationOrganisationRecord.demonstration_id == demonstration.id))
        return _stored(demonstration, current, [(slug, relation) for _, slug, relation in members])

    @staticmethod
    def find(session: Session, id_or_slug: int | str, *, for_update: bool = False) -> DemonstrationRecord:
        query = select(DemonstrationRecord)
        if isinstance(id_or_slug, int) or (id_or_slug.isascii() and id_or_slug.isdigit()):
            key = int(id_or_slug)
            query = query.where(DemonstrationRecord.id == key if _storable(key) else false())
        else:
            query = query.where(DemonstrationRecord.slug == id_or_slug)
        if for_update:
            query = query.with_for_update()
        demonstration = session.scalar(query)
        if demonstration is None:
            raise NotFound(f"no demonstration {id_or_slug!r}")
        return demonstration

    @staticmethod
    def _current(session: Session, demonstration_id: int) -> PlanVersionRecord:
        return session.scalars(
            select(PlanVersionRecord)
            .where(PlanVersionRecord.demonstration_id == demonstration_id)
            .order_by(PlanVersionRecord.version.desc())
            .limit(1)
        ).one()

    @staticmethod
    def _free_slug(session: Session, base: str) -> str:
        taken = set(
            session.scalars(
                select(DemonstrationRecord.slug).where(
                    (DemonstrationRecord.slug == base)
                    | DemonstrationRecord.slug.startswith(f"{base}-", autoescape=True)
                )
            )
        )
        slug, n = base, 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        return slug


_MEMBERS = select(
    DemonstrationOrganisationRecord.demonstration_id, OrganisationRecord.slug, DemonstrationOrganisationRecord.relation
).join(OrganisationRecord, OrganisationRecord.id == DemonstrationOrganisationRecord.organisation_id)


def organisation_id(session: Session, slug: str) -> int:
    found = session.scalar(select(OrganisationRecord.id).where(OrganisationRecord.slug == slug))
    if found is None:
        raise UnknownOrganisation(
            f"no organisation {slug!r}; create it first (pilot orgs create, or POST /v1/organisations)"
        )
    return found


class HourStamp(NamedTuple):  # a tuple: read by the ten thousand on every request
    """What is known of a stored device-hour without decoding it."""

    device: str
    start_ms: int
    fingerprint: str
    computed_at_ms: int


class RangeSummary(NamedTuple):
    """A device's stored hours in a range, summed up: enough to tell whether any changed or may still change."""

    hours: int
    last_computed_ms: int  # every upsert moves this: it versions the range's content
    least_settled_ms: int  # min(computed_at - hour start) over the hours


def _insert(database: Database) -> Any:
    """INSERT … ON CONFLICT, which SQLite and PostgreSQL spell alike but SQLAlchemy builds per dialect."""
    if database.dialect == "postgresql":
        return postgresql.insert
    if database.dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"upserts are written for SQLite and PostgreSQL, not {database.dialect}")


_KEY = ("site", "line", "device", "hour_start_ms")


class RollupRepository:
    """Device-hours condensed from InfluxDB, kept so that no query ever scans weeks of raw points."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def upsert(self, site: str, line: str, hours: Iterable[DeviceHour], computed_at_ms: int | None = None) -> int:
        """Insert or replace hours by (site, line, device, start); returns how many were written.

        ``computed_at_ms`` (default: now) is when they were read from the store, which decides their settling.
        """
        now_ms = round(_now().timestamp() * 1000) if computed_at_ms is None else computed_at_ms
        values = []
        for hour in hours:
            text = orjson.dumps(hour.to_json(), option=orjson.OPT_SORT_KEYS).decode()
            values.append(
                {
                    "site": site,
                    "line": line,
                    "device": hour.device,
                    "hour_start_ms": hour.start_ms,
                    "hour": text,
                    "fingerprint": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                    "computed_at_ms": now_ms,
                }
            )
        if not values:
            return 0
        statement = _insert(self._db)(rollups)
        statement = statement.on_conflict_do_update(
            index_elements=list(_KEY),
            set_={c.name: statement.excluded[c.name] for c in rollups.c if c.name not in _KEY},
        )
        with self._db.engine.begin() as connection:
            connection.execute(statement, values)
        return len(values)

    def stamps(self, site: str, line: str, devices: Sequence[str], start_ms: int, end_ms: int) -> list[HourStamp]:
        """The stored hours that start in [start_ms, end_ms), by device then time, without their data."""
        columns = (rollups.c.device, rollups.c.hour_start_ms, rollups.c.fingerprint, rollups.c.computed_at_ms)
        with self._db.engine.connect() as connection:
            return [
                HourStamp(*row)
                for row in connection.execute(self._select_in_range(columns, site, line, devices, start_ms, end_ms))
            ]

    def summary(
        self, site: str, line: str, devices: Sequence[str], start_ms: int, end_ms: int
    ) -> dict[str, RangeSummary]:
        """Per device, what is stored of the hours that start in [start_ms, end_ms), in one aggregate query."""
        query = (
            select(
                rollups.c.device,
                func.count(),
                func.max(rollups.c.computed_at_ms),
                func.min(rollups.c.computed_at_ms - rollups.c.hour_start_ms),
            )
            .where(*_in_range(site, line, devices, start_ms, end_ms))
            .group_by(rollups.c.device)
        )
        with self._db.engine.connect() as connection:
            return {row[0]: RangeSummary(*row[1:]) for row in connection.execute(query)}

    def read(self, site: str, line: str, devices: Sequence[str], start_ms: int, end_ms: int) -> list[DeviceHour]:
        """The stored hours that start in [start_ms, end_ms), by device then time."""
        return [hour for _, hour in self.read_fingerprinted(site, line, devices, start_ms, end_ms)]

    def read_fingerprinted(
        self,
        site: str,
        line: str,
        devices: Sequence[str],
        start_ms: int,
        end_ms: int,
        known: Mapping[str, DeviceHour] | None = None,
    ) -> list[tuple[str, DeviceHour]]:
        """(fingerprint, hour) of the stored hours, by device then time.

        Hours whose fingerprint is in ``known`` are taken from it rather than decoded again: decoding is most
        of the cost of reading a month of a line.
        """
        known = known or {}
        query = self._select_in_range((rollups.c.fingerprint, rollups.c.hour), site, line, devices, start_ms, end_ms)
        with self._db.engine.connect() as connection:
            return [
                (fingerprint, known.get(fingerprint) or DeviceHour.decode(text))
                for fingerprint, text in connection.execute(query)
            ]

    @staticmethod
    def _select_in_range(
        columns: Sequence[Any], site: str, line: str, devices: Sequence[str], start_ms: int, end_ms: int
    ) -> Any:
        return (
            select(*columns)
            .where(*_in_range(site, line, devices, start_ms, end_ms))
            .order_by(rollups.c.device, rollups.c.hour_start_ms)
        )


def _in_range(site: str, line: str, devices: Sequence[str], start_ms: int, end_ms: int) -> list[Any]:
    """The rows of these devices of the line whose hour starts in [start_ms, end_ms)."""
    return [
        rollups.c.site == site,
        rollups.c.line == line,
        rollups.c.device.in_(list(devices)),
        rollups.c.hour_start_ms >= start_ms,
        rollups.c.hour_start_ms < end_ms,
    ]


def _digest(fingerprint: str) -> str:
    # The key holds a digest, so fingerprints of any length fit a B-tree index.
    return hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()


class ResultCache:
    """Computed results keyed by plan version, kind and the fingerprint of the data they used."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def get(self, demonstration_id: int, plan_version: int, kind: str, fingerprint: str) -> dict[str, Any] | None:
        with self._db.transaction() as session:
            record = session.get(CachedResultRecord, (demonstration_id, plan_version, kind, _digest(fingerprint)))
            return None if record is None else dict(record.payload)

    def put(
        self, demonstration_id: int, plan_version: int, kind: str, fingerprint: str, payload: Mapping[str, Any]
    ) -> None:
        """Store (or overwrite) a result; the plan version must exist."""
        statement = _insert(self._db)(CachedResultRecord).values(
            demonstration_id=demonstration_id,
            plan_version=plan_version,
            kind=kind,
            fingerprint=_digest(fingerprint),
            payload=dict(payload),
            created_at=_now(),
        )
        statement = statement.on_conflict_do_update(
            index_elements=["demonstration_id", "plan_version", "kind", "fingerprint"],
            set_={"payload": statement.excluded.payload, "created_at": statement.excluded.created_at},
        )
        with self._db.transaction() as session:
            session.execute(statement)
