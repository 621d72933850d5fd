"""What the console's pages show, from the services the API's routers call (never computed apart from them).

KPIs come from the same ``KpiService`` as ``/v1/demonstrations/{ref}/comparison`` (``api.routers.kpis``), the
page's tables and charts from the same ``report_content`` and ``reports.charts`` as the report: the numbers on
the page are the API's and the report's. Drawing four charts costs more than the whole page otherwise, so the
charts and the content are kept per data fingerprint (which names the plan hash and every stored hour's version)
and language.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter, OrderedDict
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from adapters.sql import PlanVersion, StoredDemonstration
from api.routers.kpis import engine_errors, kpi_service
from api.state import ApiState
from kpi_engine.service import Evaluation, KpiService
from pilot_core.access import Action, Principal
from pilot_core.audit import AuditAction, AuditEntry
from pilot_core.comparison import Verdict
from reports.charts import Chart, FontMissing, charts
from reports.content import ReportContent, report_content
from reports.i18n import Language, Words

AUDIT_ENTRIES = 200  # newest first; the evidence bundle holds the whole trail
_KEPT_PAGES = 64


@dataclass(frozen=True, slots=True)
class Glance:
    """A demonstration's verdicts at a glance: how many targets are met, not met, inconclusive."""

    counts: dict[Verdict, int]
    error: str | None = None  # why there are none: the engine's refusal, as the API words it


@dataclass(frozen=True, slots=True)
class ListRow:
    stored: StoredDemonstration
    glance: Glance


@dataclass(frozen=True, slots=True)
class Drawn:
    content: ReportContent
    charts: list[Chart]


@dataclass(frozen=True, slots=True)
class DemonstrationView:
    stored: StoredDemonstration
    drawn: Drawn | None
    error: str | None  # why there are no KPIs
    audit: list[AuditEntry]
    may_freeze: bool


@dataclass(frozen=True, slots=True)
class Amendment:
    version: PlanVersion
    entry: AuditEntry | None  # who made the version and the changes it records


class DrawnPages:
    """What pages drew, by what it was drawn from (a data fingerprint names the plan hash and every stored hour's
    version), least recently used going first."""

    def __init__(self, capacity: int = _KEPT_PAGES) -> None:
        self.capacity = capacity
        self._kept: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
            return kept

    def keep(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._kept[key] = value
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)


def _service(state: ApiState, principal: Principal, ref: str) -> AbstractContextManager[KpiService]:
    """The API's own engine for ``ref`` (404 for what ``principal`` cannot see, 409 without a registry)."""
    return contextmanager(kpi_service)(ref, state, principal)


def _problem(exc: HTTPException | FontMissing) -> str:
    return str(exc.detail) if isinstance(exc, HTTPException) else str(exc)


def _glance(evaluation: Evaluation) -> Glance:
    verdicts = Counter(target.check.verdict for target in evaluation.result.targets)
    return Glance({verdict: verdicts.get(verdict, 0) for verdict in Verdict})


def demonstrations(state: ApiState, pages: DrawnPages, principal: Principal) -> list[ListRow]:
    """Every demonstration ``principal`` sees (as ``GET /v1/demonstrations``), with its verdicts at a glance."""
    rows = []
    for stored in state.demonstrations().list():
        if not principal.sees(stored.membership):
            continue
        try:
            with _service(state, principal, str(stored.id)) as service, engine_errors():
                seen = service.fingerprint(stored.id)
                key = ("glance", seen.demonstration_id, seen.plan_version, seen.data_fingerprint)
                glance = pages.get(key)
                if glance is None:
                    glance = _glance(service.evaluate(stored.id))
                    pages.keep(key, glance)
        except HTTPException as exc:
            glance = Glance({}, _problem(exc))
        rows.append(ListRow(stored, glance))
    return rows


def demonstration(
    state: ApiState, pages: DrawnPages, principal: Principal, stored: StoredDemonstration, language: Language
) -> DemonstrationView:
    """The page of ``stored``, a demonstration ``principal`` sees (``api.security.visible``)."""
    drawn, error = None, None
    try:
        with _service(state, principal, str(stored.id)) as service, engine_errors():
            seen = service.fingerprint(stored.id)
            drawn = pages.get(("page", seen.demonstration_id, seen.plan_version, seen.data_fingerprint, language))
            if drawn is None:
                evaluation, breakdown = service.evaluate_with_breakdown(stored.id)
                content = report_content(evaluation, breakdown, dt.datetime.now(dt.UTC))
                drawn = Drawn(content, charts(content, Words(language)))
                key = ("page", evaluation.demonstration_id, evaluation.plan_version, evaluation.data_fingerprint)
                pages.keep((*key, language), drawn)
    except (HTTPException, FontMissing) as exc:
        error = _problem(exc)
    audit = state.audit().entries(stored.id, limit=AUDIT_ENTRIES)
    return DemonstrationView(stored, drawn, error, audit, principal.may(Action.FREEZE, stored.membership))


def amendments(state: ApiState, stored: StoredDemonstration) -> list[Amendment]:
    """Every version of the plan, newest first, each with the audit entry that made it (who, when, why, what)."""
    makers = {
        AuditAction.DEMONSTRATION_CREATED,
        AuditAction.DRAFT_REPLACED,
        AuditAction.PLAN_AMENDED,
    }
    by_version: dict[int, AuditEntry] = {}
    for entry in reversed(state.audit().entries(stored.id, limit=1000)):  # oldest first: the last writer wins
        if entry.action in makers:
            by_version[int(entry.details.get("version", 1))] = entry
    versions = state.demonstrations().versions(stored.id)
    return [Amendment(v, by_version.get(v.version)) for v in reversed(versions)]
