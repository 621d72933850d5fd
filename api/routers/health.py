"""Liveness and readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from adapters.influxdb import InfluxError
from api.state import ApiState, api_state

router = APIRouter(tags=["health"])
State = Annotated[ApiState, Depends(api_state)]


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up: answered on the event loop itself, so it needs no worker thread evaluations may hold."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
def ready(state: State) -> dict[str, str] | JSONResponse:
    """The store answers; 503 with the reason when it does not."""
    try:
        with state.influx() as client:
            version = client.ping()
    except InfluxError as exc:
        return JSONResponse({"status": "unavailable", "influxdb": str(exc)}, status_code=503)
    return {"status": "ready", "influxdb": version}
