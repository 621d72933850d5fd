"""The device contract, the device profiles and the device registry."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from adapters.influxdb import InfluxError
from adapters.telemetry_reader import device_activity
from api.problems import AUTH_ERRORS, problem_responses
from api.security import Caller, visible_devices
from api.state import ApiState, api_state
from pilot_core import contract
from pilot_core.profiles import DeviceProfile
from pilot_core.registry import DeviceEntry, DeviceKey

router = APIRouter(tags=["catalog"])
State = Annotated[ApiState, Depends(api_state)]


@router.get("/contract/schema", responses=problem_responses(AUTH_ERRORS))
def contract_schema(principal: Caller) -> dict[str, Any]:
    """Device contract v1 as JSON Schema."""
    return contract.json_schema()


@router.get("/profiles", responses=problem_responses(AUTH_ERRORS))
def list_profiles(state: State, principal: Caller) -> list[DeviceProfile]:
    return list(state.profiles)


@router.get("/profiles/{profile_id}", responses=problem_responses(AUTH_ERRORS | {404: "No such profile"}))
def get_profile(profile_id: str, state: State, principal: Caller) -> DeviceProfile:
    profile = state.profiles.get(profile_id)
    if profile is None:
        raise HTTPException(404, f"no device profile {profile_id!r}")
    return profile


class DeviceStatus(BaseModel):
    site: str
    line: str
    device: str
    profile: str | None = Field(description="From the device registry; None if the device is not registered")
    name: str = ""
    last_seen: dt.datetime | None = Field(description="Its latest point on any channel within the lookback")
    online: bool | None = Field(description="Its latest birth (true) or will (false); None if none in the lookback")
    status_at: dt.datetime | None
    agent_version: str | None
    profile_version: str | None


@router.get(
    "/devices/status",
    responses=problem_responses(AUTH_ERRORS | {422: "Invalid lookback", 503: "InfluxDB could not be read"}),
)
def device_status(
    state: State,
    principal: Caller,
    since_hours: Annotated[
        float, Query(gt=0, le=24 * 365, description="Lookback; InfluxDB 3 Core limits a query to about 72 hours")
    ] = 72,
) -> list[DeviceStatus]:
    """Every device this key may see, registered or with data, with when it was last seen and its last status."""
    allowed = visible_devices(principal, state)
    registered = {d.entry.key: d for d in state.registry} if state.registry else {}
    since_ms = int((time.time() - since_hours * 3600) * 1000)
    try:
        with state.influx() as influx:
            seen = {
                DeviceKey(a.site, a.line, a.device): a
                for a in device_activity(influx, {p.measurement for p in state.profiles}, since_ms)
            }
    except InfluxError as exc:
        raise HTTPException(503, f"InfluxDB could not be read: {exc}") from None
    statuses = []
    keys = set(registered) | set(seen)
    for key in sorted(keys if allowed is None else keys & allowed, key=lambda k: (k.site, k.line, k.device)):
        device, activity = registered.get(key), seen.get(key)
        statuses.append(
            DeviceStatus(
                site=key.site,
                line=key.line,
                device=key.device,
                profile=device.entry.profile if device else None,
                name=device.entry.name if device else "",
                last_seen=_time(activity.last_seen_ms if activity else None),
                online=activity.online if activity else None,
                status_at=_time(activity.status_at_ms if activity else None),
                agent_version=activity.agent_version if activity else None,
                profile_version=activity.profile_version if activity else None,
            )
        )
    return statuses


def _time(epoch_ms: int | None) -> dt.datetime | None:
    return None if epoch_ms is None else dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)


@router.get("/devices", responses=problem_responses(AUTH_ERRORS))
def list_devices(state: State, principal: Caller) -> list[DeviceEntry]:
    """The registered devices this key may see (none when the collector's devices file does not exist)."""
    if state.registry is None:
        return []
    allowed = visible_devices(principal, state)
    return [d.entry for d in state.registry if allowed is None or d.entry.key in allowed]
