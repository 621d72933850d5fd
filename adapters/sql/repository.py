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
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, and_, bindparam, case, false, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.sql import audit
from adapters.sql.database import Database
from adapters.sql.errors import (
    AmendmentNeedsReason,
    DuplicateSlug,
    FrozenByAnother,
    InvalidSlug,
    NotFound,
    NotFrozenYet,
    OwnerIsNotAParticipant,
    PlanFrozen,
    UnknownOrganisation,
)
from adapters.sql.models import (
    SLUG_LENGTH,
    AuditRecord,
    CachedResultRecord,
    DemonstrationOrganisationRecord,
    DemonstrationRecord,
    OrganisationRecord,
    PlanVersionRecord,
    rollup_accounts,
    rollup_marks,
    rollups,
    storable,
)
from pilot_core.access import Actor, Membership
from pilot_core.accounted_days import DAY_MS, fingerprint_bits
from pilot_core.audit import AuditAction, json_changes
from pilot_core.demonstration import STORED, DemonstrationPlan, canonical_json, plan_hash
from pilot_core.device_hours import DeviceHour

# Words of letters or digits (any script) joined by single hyphens; never all digits, which would read as an id.
_SLUG = re.compile(r"[^\W_]+(?:-[^\W_]+)*")


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
        plan=DemonstrationPlan.model_validate_json(record.plan, context=STORED),
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
        plan=DemonstrationPlan.model_validate_json(current.plan, context=STORED),
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
        """Freeze the draft. Freezing it again changes nothing (and records nothing) for whoever froze it, so a
        retry is safe; anyone else learns that the plan was frozen before them (``FrozenByAnother``).

        The demonstration's row is locked first, so of two callers freezing at once (two API replicas on one
        PostgreSQL) one freezes and the other then finds the plan frozen.
        """
        with self._db.transaction() as session:
            demonstration = self.find(session, id_or_slug, for_update=True)
            current = self._current(session, demonstration.id)
            if current.frozen:
                froze = _who_froze(session, demonstration.id)
                if froze is not None and not _same_actor(froze, actor):
                    at = current.frozen_at.isoformat(timespec="seconds") if current.frozen_at else "an unknown time"
                    raise FrozenByAnother(current.version, current.plan_hash, _named(froze), at)
            else:
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
            record = session.get(PlanVersionRecord, (demonstration.id, number)) if storable(number) else None
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
            query = query.where(DemonstrationRecord.id == key if storable(key) else false())
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


def _who_froze(session: Session, demonstration_id: int) -> AuditRecord | None:
    """The audit entry of the change that froze the current version: its freeze, or the amendment that made it."""
    return session.scalars(
        select(AuditRecord)
        .where(
            AuditRecord.demonstration_id == demonstration_id,
            AuditRecord.action.in_([AuditAction.PLAN_FROZEN.value, AuditAction.PLAN_AMENDED.value]),
        )
        .order_by(AuditRecord.id.desc())
        .limit(1)
    ).first()


def _same_actor(entry: AuditRecord, actor: Actor) -> bool:
    return (entry.actor, entry.actor_organisation, entry.actor_key_id) == (
        actor.name,
        actor.organisation,
        actor.key_id,
    )


def _named(entry: AuditRecord) -> str:
    return f"{entry.actor} ({entry.actor_organisation})" if entry.actor_organisation else entry.actor


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


class AccountedDaysRewritten(Exception):
    """Accounted days were rewritten (their hours changed) between reading them and reading their detail: the
    evaluation then goes the device-hour way, so no request sees this."""


class HourStamp(NamedTuple):  # a tuple: read by the ten thousand on every request
    """What is known of a stored device-hour without decoding it."""

    device: str
    start_ms: int
    fingerprint: str
    computed_at_ms: int
    source_values: int | None = None  # count(*) of its fields in InfluxDB when it was read; None: not counted


class RangeSummary(NamedTuple):
    """A device's stored hours in a range, summed up: enough to tell whether any changed or may still change."""

    hours: int
    last_computed_ms: int  # every upsert moves this: it versions the range's content
    least_settled_ms: int  # min(computed_at - hour start) over the hours
    late_hours: int = 0  # hours that took in data which arrived after they had settled
    last_late_ms: int | None = None  # when the latest of those was taken in


def _insert(database: Database) -> Any:
    """INSERT … ON CONFLICT, which SQLite and PostgreSQL spell alike but SQLAlchemy builds per dialect."""
    if database.dialect == "postgresql":
        return postgresql.insert
    if database.dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"upserts are written for SQLite and PostgreSQL, not {database.dialect}")


_KEY = ("site", "line", "device", "hour_start_ms")
_FINGERPRINTS_PER_QUERY = 500  # the hours whose text is fetched by one query (an IN list of this many)
_ROWS_PER_FETCH = 1000  # rows a server-side cursor sends at a time (accounted days: about 5 MB)


def stored_text(hour: DeviceHour) -> str:
    return orjson.dumps(hour.to_json(), option=orjson.OPT_SORT_KEYS).decode()


def fingerprint_of(hour: DeviceHour) -> str:
    """The fingerprint the hour is stored with: the SHA-256 of its stored text."""
    return hashlib.sha256(stored_text(hour).encode("utf-8")).hexdigest()


# Builders of a device's hours in this process, where the database has no locks of its own to lend (SQLite).
_LOCAL_BUILDERS: dict[tuple[str, str, str, str], threading.Lock] = {}
_LOCAL_BUILDERS_GUARD = threading.Lock()


def _advisory_key(site: str, line: str, device: str) -> int:
    """A 64-bit key naming the building of one device's hours, the same in every process."""
    digest = hashlib.sha256(f"pilot rollups\0{site}\0{line}\0{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class RollupRepository:
    """Device-hours condensed from InfluxDB, kept so that no query ever scans weeks of raw points."""

    def __init__(self, database: Database, connection: Connection | None = None) -> None:
        self._db = database
        self._connection = connection  # set inside ``building``: every read and write goes through its lock
        self._written = False  # inside ``building``: whether hours were written, to count as it ends

    @contextmanager
    def building(self, site: str, line: str, device: str) -> Iterator[RollupRepository]:
        """Hold the right to build ``device``'s hours while the block runs; yields the repository to build with.

        On PostgreSQL a transaction-scoped advisory lock, so API replicas (and ``pilot rollups``) sharing the
        database build a device's hours one at a time: whoever comes second waits, then reads what the first
        stored (read the stamps again inside the block) rather than reading InfluxDB again. The hours written
        in the block commit when it ends, which releases the lock; a builder that dies releases it with its
        connection. One device at a time and never two locks at once, so builders cannot deadlock. Elsewhere
        (SQLite: one process) a lock in this process does the same.
        """
        if self._connection is not None:
            raise RuntimeError("building() is not re-entrant: one device's lock at a time")
        if self._db.dialect == "postgresql":
            with self._db.engine.begin() as connection:
                connection.execute(select(func.pg_advisory_xact_lock(_advisory_key(site, line, device))))
                builder = RollupRepository(self._db, connection)
                yield builder
                if builder._written:
                    self._moved(connection, site, line)
            return
        key = (str(self._db.engine.url), site, line, device)
        with _LOCAL_BUILDERS_GUARD:
            lock = _LOCAL_BUILDERS.setdefault(key, threading.Lock())
        with lock:
            yield self

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[Connection]:
        if self._connection is not None:
            yield self._connection
        elif write:
            with self._db.engine.begin() as connection:
                yield connection
        else:
            with self._db.engine.connect() as connection:
                yield connection

    def upsert(
        self,
        site: str,
        line: str,
        hours: Iterable[DeviceHour],
        computed_at_ms: int | None = None,
        *,
        source_values: Mapping[tuple[str, int], int] | None = None,
        late: bool = False,
    ) -> int:
        """Insert or replace hours by (site, line, device, start); returns how many were written.

        ``computed_at_ms`` (default: now) is when they were read from the store, which decides their settling;
        ``source_values`` the count of their fields in InfluxDB by (device, hour start), when it was counted;
        ``late``: they are read again because data came after they had settled, which they keep a mark of.
        """
        now_ms = round(_now().timestamp() * 1000) if computed_at_ms is None else computed_at_ms
        counted = source_values or {}
        values = []
        for hour in hours:
            text = stored_text(hour)
            fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()  # fingerprint_of(hour)
            values.append(
                {
                    "site": site,
                    "line": line,
                    "device": hour.device,
                    "hour_start_ms": hour.start_ms,
                    "hour": text,
                    "fingerprint": fingerprint,
                    "fingerprint_bits": fingerprint_bits(fingerprint),
                    "computed_at_ms": now_ms,
                    "source_values": counted.get((hour.device, hour.start_ms)),
                    "late_at_ms": now_ms if late else None,
                }
            )
        if not values:
            return 0
        statement = _insert(self._db)(rollups)
        kept = {"late_at_ms", "source_values"}  # an ordinary re-read keeps the late mark, and a count it lacks
        statement = statement.on_conflict_do_update(
            index_elements=list(_KEY),
            set_={
                **{c.name: statement.excluded[c.name] for c in rollups.c if c.name not in (*_KEY, *kept)},
                **{name: func.coalesce(statement.excluded[name], rollups.c[name]) for name in kept},
            },
        )
        with self._connect(write=True) as connection:
            connection.execute(statement, values)
            if self._connection is None:
                self._moved(connection, site, line)
            else:
                self._written = True  # counted once, as the build commits: its row is then locked for a moment
        return len(values)

    def _moved(self, connection: Connection, site: str, line: str) -> None:
        """Count a write to the line's roll-ups, in the writer's transaction."""
        statement = _insert(self._db)(rollup_marks).values(site=site, line=line, changes=1)
        statement = statement.on_conflict_do_update(
            index_elements=["site", "line"], set_={"changes": rollup_marks.c.changes + 1}
        )
        connection.execute(statement)

    def mark(self, site: str, line: str) -> int:
        """How many writes the line's roll-ups have had: unchanged, so are they (read it before the hours)."""
        query = select(rollup_marks.c.changes).where(rollup_marks.c.site == site, rollup_marks.c.line == line)
        with self._connect() as connection:
            return int(connection.scalar(query) or 0)

    def count_sources(self, site: str, line: str, counts: Mapping[tuple[str, int], int]) -> None:
        """Record the count of fields in InfluxDB of stored hours counted for the first time (by device, start)."""
        if not counts:
            return
        statement = (
            update(rollups)
            .where(
                rollups.c.site == site,
                rollups.c.line == line,
                rollups.c.device == bindparam("d"),
                rollups.c.hour_start_ms == bindparam("t"),
            )
            .values(source_values=bindparam("n"))
        )
        with self._connect(write=True) as connection:
            connection.execute(statement, [{"d": d, "t": t, "n": n} for (d, t), n in counts.items()])

    def stamps(self, site: str, line: str, devices: Sequence[str], start_ms: int, end_ms: int) -> list[HourStamp]:
        """The stored hours that start in [start_ms, end_ms), by device then time, without their data."""
        columns = (
            rollups.c.device,
            rollups.c.hour_start_ms,
            rollups.c.fingerprint,
            rollups.c.computed_at_ms,
            rollups.c.source_values,
        )
        with self._connect() as connection:
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
                func.count(rollups.c.late_at_ms),
                func.max(rollups.c.late_at_ms),
            )
            .where(*_in_range(site, line, devices, start_ms, end_ms))
            .group_by(rollups.c.device)
        )
        with self._connect() as connection:
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
        if not known:
            query = self._select_in_range(
                (rollups.c.fingerprint, rollups.c.hour), site, line, devices, start_ms, end_ms
            )
            with self._connect() as connection:
                return [(fingerprint, DeviceHour.decode(text)) for fingerprint, text in connection.execute(query)]
        # Most hours known (a running server): their fingerprints first, then the text of the others only, as
        # moving every hour's text out of the database costs as much as the rest of the evaluation.
        query = self._select_in_range((rollups.c.fingerprint,), site, line, devices, start_ms, end_ms)
        with self._connect() as connection:
            fingerprints = connection.execute(query).scalars().all()
            missing = sorted({f for f in fingerprints if f not in known})
            decoded: dict[str, DeviceHour] = {}
            for index in range(0, len(missing), _FINGERPRINTS_PER_QUERY):
                chosen = missing[index : index + _FINGERPRINTS_PER_QUERY]
                texts = self._select_in_range(
                    (rollups.c.fingerprint, rollups.c.hour), site, line, devices, start_ms, end_ms
                ).where(rollups.c.fingerprint.in_(chosen))
                decoded.update((f, DeviceHour.decode(text)) for f, text in connection.execute(texts))
        if len(decoded) < len(missing):  # rewritten between the two queries: read them all as they are now
            return self.read_fingerprinted(site, line, devices, start_ms, end_ms)
        return [(f, known.get(f) or decoded[f]) for f in fingerprints]

    def summaries_and_checks(
        self,
        site: str,
        line: str,
        devices: Sequence[str],
        ranges: Sequence[tuple[int, int]],
        days: Sequence[tuple[int, int]],
    ) -> tuple[list[dict[str, RangeSummary]], dict[tuple[str, int], tuple[int, int]]]:
        """``summary`` of each of ``ranges`` (which must not overlap) and ``day_checks`` over ``days`` (runs of
        whole days holding the ranges), from one scan of the hours grouped by device, day and range."""
        start = rollups.c.hour_start_ms
        day = start - start % DAY_MS
        ranged = case(*((and_(start >= low, start < high), index) for index, (low, high) in enumerate(ranges)))
        summed = [dict[str, list[Any]]() for _ in ranges]
        checks: dict[tuple[str, int], tuple[int, int]] = {}
        with self._connect() as connection:
            if connection.dialect.name == "postgresql":
                # A plant's scan (864,000 rows) costs enough for PostgreSQL to compile it (JIT), which costs more
                # than it saves: about 50 ms of the 0.6 s.
                connection.execute(text("SET LOCAL jit = off"))
            for low, high in days:
                query = (
                    select(
                        rollups.c.device,
                        day,
                        ranged,
                        func.count(),
                        func.sum(rollups.c.fingerprint_bits),
                        func.max(rollups.c.computed_at_ms),
                        func.min(rollups.c.computed_at_ms - start),
                        func.count(rollups.c.late_at_ms),
                        func.max(rollups.c.late_at_ms),
                    )
                    .where(*_in_range(site, line, devices, low, high))
                    .group_by(rollups.c.device, day, ranged)
                )
                for device, at, index, n, bits, last, least, late, last_late in connection.execute(query):
                    hours, total = checks.get((device, int(at)), (0, 0))
                    checks[(device, int(at))] = (hours + int(n), total + int(bits or 0))
                    if index is None:
                        continue
                    kept = summed[int(index)].get(device)
                    if kept is None:
                        summed[int(index)][device] = [int(n), last, least, int(late), last_late]
                        continue
                    kept[0] += int(n)
                    kept[1] = max(kept[1], last)
                    kept[2] = min(kept[2], least)
                    kept[3] += int(late)
                    if last_late is not None:
                        kept[4] = last_late if kept[4] is None else max(kept[4], last_late)
        return [{d: RangeSummary(*values) for d, values in by_device.items()} for by_device in summed], checks

    def day_checks(
        self, site: str, line: str, devices: Sequence[str], start_ms: int, end_ms: int
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """Per (device, UTC day start) of the hours that start in [start_ms, end_ms): how many are stored and the
        sum of their fingerprint bits (``accounted_days.day_check``), in one aggregate query."""
        day = rollups.c.hour_start_ms - rollups.c.hour_start_ms % DAY_MS
        query = (
            select(rollups.c.device, day, func.count(), func.sum(rollups.c.fingerprint_bits))
            .where(*_in_range(site, line, devices, start_ms, end_ms))
            .group_by(rollups.c.device, day)
        )
        with self._connect() as connection:
            return {(d, int(t)): (int(n), int(bits or 0)) for d, t, n, bits in connection.execute(query)}

    def accounted_days(
        self,
        site: str,
        line: str,
        accounting: Mapping[str, str],
        runs: Sequence[tuple[int, int]],
        *,
        data: bool = True,
    ) -> Iterator[tuple[str, int, tuple[int, int], bytes | None]]:
        """The accounted days stored for each device under its accounting key (``accounting``: device → key) whose
        day starts in one of ``runs`` ([start, end) each), a device's days together in time order: (device, day
        start, (hours, fingerprint sum), the day's AccountedDay or None if not ``data``). One query, read as it is
        consumed (a plant's half-year of days is 36,000 rows: a device's at a time in memory)."""
        t = rollup_accounts.c
        columns = [t.device, t.accounting, t.day_start_ms, t.hours, t.fingerprint_sum, *([t.day] if data else [])]
        if not accounting or not runs:
            return
        query = (
            select(*columns)
            .where(
                t.site == site,
                t.line == line,
                t.device.in_(list(accounting)),
                t.accounting.in_(sorted(set(accounting.values()))),
                or_(*(and_(t.day_start_ms >= start, t.day_start_ms < end) for start, end in runs)),
            )
            .order_by(t.device, t.accounting, t.day_start_ms)  # the primary key's order
        )
        with self._connect() as connection:
            for row in _binary_rows(connection, query, streamed=True):
                if accounting.get(row[0]) == row[1]:
                    yield row[0], int(row[2]), (int(row[3]), int(row[4])), bytes(row[5]) if data else None

    def accounted_details(
        self, site: str, line: str, accounting: Mapping[str, str], checks: Mapping[tuple[str, int], tuple[int, int]]
    ) -> dict[tuple[str, int], bytes]:
        """The DayDetail stored with accounted days, by (device, day start) (``checks``: the check each was read
        with; ``accounting``: device → key), in one query; a day rewritten since, or gone, raises LookupError."""
        t = rollup_accounts.c
        query = select(t.device, t.accounting, t.day_start_ms, t.hours, t.fingerprint_sum, t.detail).where(
            t.site == site,
            t.line == line,
            t.device.in_(sorted({device for device, _ in checks})),
            t.accounting.in_(sorted({accounting[device] for device, _ in checks})),
            t.day_start_ms.in_(sorted({day for _, day in checks})),
        )
        found: dict[tuple[str, int], bytes] = {}
        with self._connect() as connection:
            for device, key, day, hours, bits, detail in _binary_rows(connection, query):
                wanted = checks.get((device, int(day)))
                if accounting.get(device) == key and wanted == (int(hours), int(bits)):
                    found[(device, int(day))] = bytes(detail)
        if len(found) != len(checks):
            raise AccountedDaysRewritten("accounted days were rewritten while they were read")
        return found

    def put_accounted_days(
        self,
        site: str,
        line: str,
        device: str,
        accounting: str,
        days: Iterable[tuple[int, tuple[int, int], bytes, bytes]],
    ) -> None:
        """Store (or replace) accounted days: (day start, (hours, fingerprint sum), AccountedDay, DayDetail)."""
        now_ms = round(_now().timestamp() * 1000)
        values = [
            {
                "site": site,
                "line": line,
                "device": device,
                "accounting": accounting,
                "day_start_ms": day,
                "hours": check[0],
                "fingerprint_sum": check[1],
                "day": data,
                "detail": detail,
                "computed_at_ms": now_ms,
            }
            for day, check, data, detail in days
        ]
        if not values:
            return
        statement = _insert(self._db)(rollup_accounts)
        statement = statement.on_conflict_do_update(
            index_elements=["site", "line", "device", "accounting", "day_start_ms"],
            set_={c: statement.excluded[c] for c in ("hours", "fingerprint_sum", "day", "detail", "computed_at_ms")},
        )
        with self._connect(write=True) as connection:
            connection.execute(statement, values)

    @staticmethod
    def _select_in_range(
        columns: Sequence[Any], site: str, line: str, devices: Sequence[str], start_ms: int, end_ms: int
    ) -> Any:
        return (
            select(*columns)
            .where(*_in_range(site, line, devices, start_ms, end_ms))
            .order_by(rollups.c.device, rollups.c.hour_start_ms)
        )


def _binary_rows(connection: Connection, query: Any, *, streamed: bool = False) -> Iterator[Sequence[Any]]:
    """The rows of ``query``; on PostgreSQL received in binary, so that ``bytea`` comes as its bytes rather than
    as hex text twice their size for psycopg to decode (most of reading a plant's accounted days); ``streamed``:
    through a server-side cursor, a batch of rows at a time, rather than all at once."""
    if connection.dialect.name != "postgresql":
        yield from connection.execute(query)
        return
    compiled = query.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    driver = connection.connection.driver_connection
    if driver is None:
        raise RuntimeError("no driver connection to read from")
    if streamed:
        with driver.cursor("pilot_binary_rows", binary=True) as server_cursor:
            server_cursor.itersize = _ROWS_PER_FETCH
            server_cursor.execute(compiled.string, compiled.params)
            yield from server_cursor
        return
    with driver.cursor(binary=True) as cursor:
        cursor.execute(compiled.string, compiled.params)
        yield from cursor


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
