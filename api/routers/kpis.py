"""A demonstration's KPIs per window and its before/after comparison, as JSON or CSV."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from adapters.influxdb import InfluxError
from adapters.sql import ResultCache, RollupRepository
from api.problems import AUTH_ERRORS, problem_responses
from api.routers.demonstrations import INVALID, NOT_FOUND, Ref
from api.security import Caller, visible
from api.state import ApiState, api_state
from kpi_engine.results import (
    ComparisonDocument,
    KpisDocument,
    comparison_csv,
    comparison_document,
    kpis_csv,
    kpis_document,
)
from kpi_engine.service import Evaluation, EvaluationStopped, HourStore, KpiService, PlanTooLong
from pilot_core.device_hours import CorrectionOutOfRange

router = APIRouter(prefix="/demonstrations", tags=["kpis"])
State = Annotated[ApiState, Depends(api_state)]

_CSV = {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV when asked for"}
_ERRORS = problem_responses(
    AUTH_ERRORS
    | NOT_FOUND
    | INVALID
    | {
        409: "The plan names a device that is not in the device registry, or there is no registry",
        422: "The request is invalid, or the plan's windows are longer than the API evaluates (max_window_days)",
        503: "InfluxDB could not be read, or the server is stopping",
    }
)


def kpi_service(ref: Ref, state: State, principal: Caller) -> Iterator[KpiService]:
    """The engine for a demonstration the caller can see (404 before anything is computed otherwise)."""
    visible(principal, state, ref)
    if state.registry is None:
        raise HTTPException(
            409,
            f"no device registry: the devices file {state.settings.devices_file} does not exist, so the"
            " devices' profiles (and their states' time classes) are unknown",
        )
    database = state.database
    with state.influx() as influx:
        yield KpiService(
            state.demonstrations(),
            HourStore(
                RollupRepository(database),
                influx,
                state.registry,
                decoded=state.decoded_hours,
                stopping=state.stopping.is_set,
                stored_summaries=state.stored_summaries,
            ),
            ResultCache(database),
            max_window_days=state.settings.max_window_days,
        )


Service = Annotated[KpiService, Depends(kpi_service)]
Version = Annotated[int | None, Query(ge=1, description="Plan version (default: the latest)")]
Refresh = Annotated[
    bool, Query(description="Re-read every hour from InfluxDB, for data that arrived after its hour had settled")
]
Format = Annotated[Literal["json", "csv"] | None, Query(description="Default: from the Accept header, else JSON")]


@contextmanager
def engine_errors() -> Iterator[None]:
    """What the engine raises, as the statuses every endpoint that evaluates documents."""
    try:
        yield
    except InfluxError as exc:
        raise HTTPException(503, f"InfluxDB could not be read: {exc}") from None
    except EvaluationStopped as exc:
        raise HTTPException(503, str(exc)) from None
    except (PlanTooLong, CorrectionOutOfRange) as exc:
        raise HTTPException(422, str(exc)) from None
    except LookupError as exc:  # a device of the plan that is not registered
        raise HTTPException(409, str(exc)) from None


def _evaluate(service: KpiService, ref: str, version: int | None, refresh: bool) -> Evaluation:
    with engine_errors():
        return service.evaluate(ref, version, refresh=refresh)


def _wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    return "text/csv" in request.headers.get("accept", "")


@router.get("/{ref}/kpis", response_model=KpisDocument, responses={200: _CSV, **_ERRORS})
def window_kpis(
    ref: Ref,
    request: Request,
    service: Service,
    version: Version = None,
    refresh: Refresh = False,
    format: Format = None,
) -> KpisDocument | Response:
    """Every KPI of every window and of each phase, with the time breakdown, counts and data coverage."""
    document = kpis_document(_evaluate(service, ref, version, refresh))
    if _wants_csv(request, format):
        return Response(kpis_csv(document), media_type="text/csv; charset=utf-8")
    return document


@router.get("/{ref}/comparison", response_model=ComparisonDocument, responses={200: _CSV, **_ERRORS})
def comparison(
    ref: Ref,
    request: Request,
    service: Service,
    version: Version = None,
    refresh: Refresh = False,
    format: Format = None,
) -> ComparisonDocument | Response:
    """Baseline against pilot for every KPI: change, autocorrelation-robust interval, and each target's verdict."""
    document = comparison_document(_evaluate(service, ref, version, refresh))
    if _wants_csv(request, format):
        return Response(comparison_csv(document), media_type="text/csv; charset=utf-8")
    return document
