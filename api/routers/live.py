"""A demonstration's line, live: its devices now, today's OEE so far, and the collector's health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from adapters.sql import RollupRepository
from api.problems import AUTH_ERRORS, problem_responses
from api.routers.demonstrations import NOT_FOUND, Ref
from api.routers.kpis import engine_errors
from api.security import Caller, visible
from api.state import ApiState, api_state
from kpi_engine.live import LiveLine, LiveService
from kpi_engine.service import HourStore

router = APIRouter(prefix="/demonstrations", tags=["live"])
State = Annotated[ApiState, Depends(api_state)]


def live_line(state: ApiState, ref: str, principal: Caller) -> LiveLine:
    """The line of a demonstration ``principal`` can see (404 otherwise, as for one that does not exist)."""
    stored = visible(principal, state, ref)
    if state.registry is None:
        raise HTTPException(409, f"no device registry: the devices file {state.settings.devices_file} does not exist")
    with state.influx() as influx, engine_errors():
        hours = HourStore(
            RollupRepository(state.database),
            influx,
            state.registry,
            decoded=state.decoded_hours,
            stopping=state.stopping.is_set,
        )
        return LiveService(influx, hours, state.settings.health_interval_s).line(stored.slug, stored.plan)


@router.get(
    "/{ref}/live",
    responses=problem_responses(
        AUTH_ERRORS
        | NOT_FOUND
        | {409: "There is no device registry, or the plan names an unregistered device", 503: "InfluxDB is down"}
    ),
)
def live(ref: Ref, state: State, principal: Caller) -> LiveLine:
    """Each device of the line now (connection, last message, state and since when), today's OEE so far under the
    plan (whole hours), the collectors' health and the line's dead letters of the last hour by reason.

    Cheap enough to poll every few seconds.
    """
    return live_line(state, ref, principal)
