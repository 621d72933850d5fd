"""The device contract, the device profiles and the device registry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from api.state import ApiState, api_state
from pilot_core import contract
from pilot_core.profiles import DeviceProfile
from pilot_core.registry import DeviceEntry

router = APIRouter(tags=["catalog"])
State = Annotated[ApiState, Depends(api_state)]


@router.get("/contract/schema")
def contract_schema() -> dict[str, Any]:
    """Device contract v1 as JSON Schema."""
    return contract.json_schema()


@router.get("/profiles")
def list_profiles(state: State) -> list[DeviceProfile]:
    return list(state.profiles)


@router.get("/profiles/{profile_id}")
def get_profile(profile_id: str, state: State) -> DeviceProfile:
    profile = state.profiles.get(profile_id)
    if profile is None:
        raise HTTPException(404, f"no device profile {profile_id!r}")
    return profile


@router.get("/devices")
def list_devices(state: State) -> list[DeviceEntry]:
    """The registered devices (empty when the collector's devices file does not exist)."""
    return [device.entry for device in state.registry] if state.registry else []
