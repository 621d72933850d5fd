"""Issue 23: API replicas on one PostgreSQL account each device-day of a plan once, whoever asks first, and read
the same numbers from the accounted days."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.sql import Database, RollupRepository
from kpi_engine.evaluation import evaluate_accounted
from kpi_engine.service import HourStore, plan_hours
from pilot_core.demonstration import plan_hash
from tests.integration.test_replicas import empty_url
from tests.unit.test_accounted_days import DAY_MS, DEVICES, INTERVALS, RESULT, hour_store, plant_hours, plant_plan

__all__ = ["empty_url"]  # test_replicas' fixture: an empty schema of its own


def test_replicas_asked_at_once_account_each_day_once_and_agree(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plant_plan()
    days = len({t - t % DAY_MS for t in plan_hours(plan)})
    written: list[int] = []
    lock = threading.Lock()
    put = RollupRepository.put_accounted_days

    def counted(self: RollupRepository, site: str, line: str, device: str, key: str, rows: Iterable[Any]) -> None:
        rows = list(rows)
        with lock:
            written.append(len(rows))
        put(self, site, line, device, key, rows)

    monkeypatch.setattr(RollupRepository, "put_accounted_days", counted)
    with Database(empty_url) as database, InfluxClient(InfluxSettings()) as unused:
        database.upgrade()
        hour_store(database, unused).rollups.upsert("s", "l", [h for hs in plant_hours().values() for h in hs])
        stores = [hour_store(database, unused) for _ in range(3)]  # three servers, each with its own memory
        start = threading.Barrier(len(stores))

        def ask(store: HourStore) -> bytes:
            start.wait()  # all at once, none finding a day accounted
            accounted = store.accounted(plan)
            assert accounted is not None
            return RESULT.dump_json(evaluate_accounted(plan, plan_hash(plan), accounted, INTERVALS))

        with ThreadPoolExecutor(len(stores)) as pool:
            answers = list(pool.map(ask, stores))
        assert sum(written) == len(DEVICES) * days  # every device-day accounted by one of them, once
        assert all(a == answers[0] for a in answers)
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM rollup_accounts")).scalar() == len(DEVICES) * days
