"""A demonstration's line, live: its devices now, today's OEE so far, and the collector's health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from adapters.sql import RollupRepository, StoredDemonstration
from api.problems import AUTH_ERRORS, problem_responses
from api.routers.demonstrations import NOT_FOUND, Ref
from api.routers.kpis import engine_errors
from api.security import Caller, visible
from api.state import ApiState, api_state
from kpi_engine.live import LiveLine, LiveService
from kpi_engine.service import HourStore

router = APIRouter(prefix="/demonstrations", tags=["live"])
State = Annotated[ApiState, Depends(api_state)]


def live_line(state: ApiState, stored: StoredDemonstration) -> LiveLine:
    """The line of ``stored``, a demonstration the caller has been checked to see."""
    if state.registry is None:
        raise HTTPException(409, f"no device registry: the devices file {state.settings.devices_file} does not exist")
    influx = state.polled_influx()  # polled every few seconds: its connections stay open
    with engine_errors():
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
    return live_line(state, visible(principal, state, ref))
