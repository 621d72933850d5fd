"""The SQL repositories, the same tests on SQLite and on the real PostgreSQL at 127.0.0.1:5432.

Each test gets an empty database (``empty_database`` in conftest.py); PostgreSQL
missing is a failure, never a skip.
"""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from adapters.sql import (
    AmendmentNeedsReason,
    Database,
    DemonstrationRepository,
    DuplicateSlug,
    InvalidSlug,
    NotFound,
    NotFrozenYet,
    PlanFrozen,
    ResultCache,
    RollupRepository,
)
from adapters.sql.models import Base
from pilot_core.access import Actor
from pilot_core.contract import TimeClass
from pilot_core.demonstration import DemonstrationPlan, plan_hash
from pilot_core.device_hours import DeviceHour, SeqSpan, StateEvent
from pilot_core.histogram import LogHistogram
from pilot_core.time_accounting import ProductionTotals
from tests.unit.test_plan import raw_plan

HOUR_MS = 3_600_000
ACTOR = Actor.system("test_repository")


@pytest.fixture
def database(empty_database: Database) -> Database:
    empty_database.upgrade()
    return empty_database


@pytest.fixture
def demonstrations(database: Database) -> DemonstrationRepository:
    return DemonstrationRepository(database)


def plan(**changes: object) -> DemonstrationPlan:
    return DemonstrationPlan.model_validate({**raw_plan(), **changes})


# --- migrations


def test_migrations_run_on_an_empty_database_and_twice(empty_database: Database) -> None:
    assert inspect(empty_database.engine).get_table_names() == []
    empty_database.upgrade()
    empty_database.upgrade()
    tables = set(inspect(empty_database.engine).get_table_names())
    assert tables == {
        "alembic_version",
        "demonstrations",
        "plan_versions",
        "rollups",
        "rollup_marks",
        "rollup_accounts",
        "result_cache",
        "organisations",
        "api_keys",
        "demonstration_organisations",
        "audit_log",
        "sign_in_links",
        "console_sessions",
    }
    with empty_database.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0006"]


def test_the_models_match_the_migrations(database: Database) -> None:
    with database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


# --- demonstrations and their plan versions


def test_a_plan_is_drafted_frozen_and_amended(demonstrations: DemonstrationRepository) -> None:
    created = demonstrations.create(plan(), actor=ACTOR)
    assert (created.version, created.frozen, created.slug) == (1, False, "cobot-cell-pilot")
    assert created.plan == plan() and created.plan_hash == plan_hash(plan())

    replaced = demonstrations.replace_draft(created.id, plan(name="Cobot cell pilot, two weeks"), actor=ACTOR)
    assert (replaced.version, replaced.frozen) == (1, False)
    assert replaced.plan_hash == plan_hash(plan(name="Cobot cell pilot, two weeks")) != created.plan_hash
    assert replaced.updated_at >= created.updated_at

    frozen = demonstrations.freeze(created.id, actor=ACTOR)
    assert (frozen.version, frozen.frozen, frozen.plan_hash) == (1, True, replaced.plan_hash)
    assert demonstrations.freeze(created.id, actor=ACTOR) == frozen  # freezing again changes nothing

    with pytest.raises(PlanFrozen, match=r"version 1 is frozen \(sha256:[0-9a-f]{64}\); amend it with a reason"):
        demonstrations.replace_draft(created.id, plan(name="Sneaky edit"), actor=ACTOR)
    with pytest.raises(AmendmentNeedsReason):
        demonstrations.amend(created.id, plan(confidence_level=0.95), reason="  ", actor=ACTOR)

    amended = demonstrations.amend(
        created.id, plan(confidence_level=0.95), reason="evaluator asked for 95%", actor=ACTOR
    )
    assert (amended.version, amended.frozen) == (2, True)
    assert amended.plan_hash not in (frozen.plan_hash, created.plan_hash)
    assert demonstrations.get(created.id) == amended

    first, second = demonstrations.versions(created.id)
    assert (first.version, first.plan_hash, first.reason) == (1, frozen.plan_hash, None)
    assert first.plan == plan(name="Cobot cell pilot, two weeks") and first.frozen and first.frozen_at is not None
    assert (second.version, second.reason, second.plan.confidence_level) == (2, "evaluator asked for 95%", 0.95)
    assert second.frozen_at is not None and second.frozen_at.tzinfo is not None
    assert demonstrations.version(created.slug, 1) == first

    with pytest.raises(PlanFrozen, match="version 2 is frozen"):
        demonstrations.replace_draft(created.id, plan(), actor=ACTOR)


def test_a_draft_cannot_be_amended(demonstrations: DemonstrationRepository) -> None:
    created = demonstrations.create(plan(), actor=ACTOR)
    with pytest.raises(NotFrozenYet, match="version 1 is a draft"):
        demonstrations.amend(created.id, plan(name="Other"), reason="because", actor=ACTOR)


def test_the_database_itself_refuses_to_change_a_frozen_version(
    database: Database, demonstrations: DemonstrationRepository
) -> None:
    created = demonstrations.freeze(demonstrations.create(plan(), actor=ACTOR).id, actor=ACTOR)
    for statement in ("UPDATE plan_versions SET plan = '{}'", "DELETE FROM plan_versions"):
        with pytest.raises(DBAPIError, match="frozen"), database.engine.begin() as connection:
            connection.execute(text(statement))
    assert demonstrations.version(created.id, 1).plan_hash == created.plan_hash


def test_demonstrations_are_found_by_id_or_slug(demonstrations: DemonstrationRepository) -> None:
    first = demonstrations.create(plan(), actor=ACTOR)
    second = demonstrations.create(plan(), actor=ACTOR)  # the same name: the derived slug gets a suffix
    named = demonstrations.create(plan(name="판교 협동로봇 셀"), actor=ACTOR)
    given = demonstrations.create(plan(), slug="pangyo-2026", actor=ACTOR)
    assert (second.slug, named.slug) == ("cobot-cell-pilot-2", "판교-협동로봇-셀")
    assert demonstrations.get("cobot-cell-pilot-2") == second
    assert demonstrations.get(str(given.id)) == demonstrations.get(given.id) == given
    assert [d.id for d in demonstrations.list()] == [first.id, second.id, named.id, given.id]

    with pytest.raises(DuplicateSlug, match="pangyo-2026"):
        demonstrations.create(plan(), slug="pangyo-2026", actor=ACTOR)
    for bad in ("Pangyo", "2026", "a--b", "-a", "a b", ""):
        with pytest.raises(InvalidSlug):
            demonstrations.create(plan(), slug=bad, actor=ACTOR)


def test_missing_things_are_not_found(demonstrations: DemonstrationRepository) -> None:
    created = demonstrations.create(plan(), actor=ACTOR)
    for call in (
        lambda: demonstrations.get("no-such-demonstration"),
        lambda: demonstrations.get(created.id + 100),
        lambda: demonstrations.freeze("no-such-demonstration", actor=ACTOR),
        lambda: demonstrations.version(created.id, 2),
        # Beyond any integer column: no id or version, rather than a driver overflow.
        lambda: demonstrations.get("9" * 30),
        lambda: demonstrations.get(-(2**70)),
        lambda: demonstrations.version(created.id, 2**70),
    ):
        with pytest.raises(NotFound):
            call()
    assert NotFound.status == 404 and NotFound.title


# --- roll-ups


def device_hour(device: str, hour: int, good: int = 10) -> DeviceHour:
    start = 1_790_000_000_000 // HOUR_MS * HOUR_MS + hour * HOUR_MS
    cycle_times = LogHistogram()
    for seconds in (41.0, 42.5, 44.0):
        cycle_times.add(seconds)
    return DeviceHour(
        device=device,
        start_ms=start,
        state_at_start=StateEvent(start - 5_000, "running", TimeClass.PRODUCTION),
        events=[StateEvent(start + 60_000, "조립 대기", TimeClass.IDLE), StateEvent(start + 90_000, None, None)],
        production={"SKU-1": ProductionTotals(produced=good + 1, good=good, scrap=1, cycles=good + 1)},
        cycle_times=cycle_times,
        energy_kwh=1.25,
        telemetry_points=3600,
        seq={"telemetry": SeqSpan(3600, 1, 3601)},
    )


def test_a_device_hour_round_trips_and_an_upsert_replaces_it(database: Database) -> None:
    rollups = RollupRepository(database)
    first = device_hour("프레스-1", 0)
    assert rollups.upsert("판교", "line 1", [first]) == 1
    (stamp,) = rollups.stamps("판교", "line 1", ["프레스-1"], first.start_ms, first.end_ms)
    changed = device_hour("프레스-1", 0, good=12)
    rollups.upsert("판교", "line 1", [changed])
    assert rollups.read("판교", "line 1", ["프레스-1"], first.start_ms, first.end_ms) == [changed]
    (restamp,) = rollups.stamps("판교", "line 1", ["프레스-1"], first.start_ms, first.end_ms)
    assert restamp.fingerprint != stamp.fingerprint and restamp.computed_at_ms >= stamp.computed_at_ms
    rollups.upsert("판교", "line 1", [device_hour("프레스-1", 0, good=12)])
    (same,) = rollups.stamps("판교", "line 1", ["프레스-1"], first.start_ms, first.end_ms)
    assert same.fingerprint == restamp.fingerprint  # the fingerprint is of the content only
    assert rollups.upsert("판교", "line 1", []) == 0


def test_every_write_to_a_lines_rollups_moves_its_mark_once(database: Database) -> None:
    rollups = RollupRepository(database)
    assert rollups.mark("판교", "line 1") == 0
    rollups.upsert("판교", "line 1", [device_hour("프레스-1", 0)])
    assert (rollups.mark("판교", "line 1"), rollups.mark("판교", "line 2")) == (1, 0)
    with rollups.building("판교", "line 1", "프레스-1") as builder:
        builder.upsert("판교", "line 1", [device_hour("프레스-1", 1)])
        builder.upsert("판교", "line 1", [device_hour("프레스-1", 2)])
    assert rollups.mark("판교", "line 1") in (2, 3)  # PostgreSQL counts a build once, as it commits
    with rollups.building("판교", "line 1", "프레스-1") as builder:
        assert len(builder.stamps("판교", "line 1", ["프레스-1"], 0, 2**62)) == 3  # nothing written: no move
    assert rollups.mark("판교", "line 1") in (2, 3)


def test_rollups_are_read_in_range_by_device_then_time(database: Database) -> None:
    rollups = RollupRepository(database)
    rollups.upsert(
        "pangyo", "line-1", [device_hour(d, h) for h in (3, 0, 2, 1) for d in ("b-press", "a-cobot", "c-meter")]
    )
    start, end = device_hour("x", 1).start_ms, device_hour("x", 3).start_ms  # hours 1 and 2
    got = rollups.read("pangyo", "line-1", ["b-press", "a-cobot"], start, end)
    assert [(h.device, h.start_ms) for h in got] == [
        (d, device_hour(d, h).start_ms) for d in ("a-cobot", "b-press") for h in (1, 2)
    ]
    stamps = rollups.stamps("pangyo", "line-1", ["b-press", "a-cobot"], start, end)
    assert [(s.device, s.start_ms) for s in stamps] == [(h.device, h.start_ms) for h in got]
    assert rollups.read("pangyo", "line-2", ["a-cobot"], start, end) == []
    assert rollups.read("pangyo", "line-1", [], start, end) == []


def test_accounted_days_come_back_as_stored_byte_for_byte(database: Database) -> None:
    """On PostgreSQL they are read in binary (no hex text): every byte value, large days, non-ASCII names."""
    rollups = RollupRepository(database)
    day_ms = 24 * HOUR_MS
    every_byte = bytes(range(256)) * 40  # 10 kB, larger than a page's share: stored out of line, compressed
    rows = [(n * day_ms, (24, 2**52 + n), every_byte[n:] + b"\x00", bytes([n]) * 3) for n in range(3)]
    rollups.put_accounted_days("판교", "line 1", "프레스", "k" * 64, rows)
    rollups.put_accounted_days("판교", "line 1", "other", "k" * 64, [(0, (1, 1), b"x", b"y")])
    got = list(rollups.accounted_days("판교", "line 1", {"프레스": "k" * 64}, [(0, 3 * day_ms)]))
    assert got == [("프레스", day, check, data) for day, check, data, _ in rows]
    assert all(type(v) is bytes for *_, v in got)
    assert list(rollups.accounted_days("판교", "line 1", {"프레스": "k" * 64}, [(0, 3 * day_ms)], data=False)) == [
        ("프레스", day, check, None) for day, check, _, _ in rows
    ]
    assert list(rollups.accounted_days("판교", "line 1", {"프레스": "other-key"}, [(0, 3 * day_ms)])) == []
    runs = [(0, day_ms), (2 * day_ms, 5 * day_ms)]  # days 0 and 2, of both devices: one device's days together
    both = {"프레스": "k" * 64, "other": "k" * 64}
    assert [(d, day) for d, day, *_ in rollups.accounted_days("판교", "line 1", both, runs)] in (
        [("other", 0), ("프레스", 0), ("프레스", 2 * day_ms)],
        [("프레스", 0), ("프레스", 2 * day_ms), ("other", 0)],
    )
    checks = {("프레스", day): check for day, check, _, _ in rows[1:]}
    details = rollups.accounted_details("판교", "line 1", {"프레스": "k" * 64}, checks)
    assert details == {("프레스", day): detail for day, _, _, detail in rows[1:]}


# --- cached results


def test_cached_results_are_found_by_fingerprint(database: Database, demonstrations: DemonstrationRepository) -> None:
    cache = ResultCache(database)
    demonstration = demonstrations.create(plan(), actor=ACTOR)
    assert cache.get(demonstration.id, 1, "evaluation", "n=10") is None
    cache.put(demonstration.id, 1, "evaluation", "n=10", {"oee": 0.61, "coverage": None})
    assert cache.get(demonstration.id, 1, "evaluation", "n=10") == {"oee": 0.61, "coverage": None}
    assert cache.get(demonstration.id, 1, "evaluation", "n=11") is None
    assert cache.get(demonstration.id, 1, "coverage", "n=10") is None
    cache.put(demonstration.id, 1, "evaluation", "n=10", {"oee": 0.62})
    assert cache.get(demonstration.id, 1, "evaluation", "n=10") == {"oee": 0.62}
    long_fingerprint = ";".join(f"device-{i}:{i * 1000}" for i in range(2000))
    cache.put(demonstration.id, 1, "evaluation", long_fingerprint, {"oee": 0.5})
    assert cache.get(demonstration.id, 1, "evaluation", long_fingerprint) == {"oee": 0.5}
    with pytest.raises(DBAPIError):  # results belong to a stored plan version
        cache.put(demonstration.id, 2, "evaluation", "n=10", {"oee": 0.6})
