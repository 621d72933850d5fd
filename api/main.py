"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from api.routers import catalog, health
from api.state import ApiState
from collector.settings import CollectorSettings


def create_app(settings: CollectorSettings | None = None) -> FastAPI:
    app = FastAPI(
        title="pilot-telemetry",
        version="0.1.0",
        description="Telemetry and before/after KPIs for physical-AI pilots on production lines.",
    )
    app.state.pilot = ApiState.from_settings(settings or CollectorSettings.load())
    app.include_router(health.router)
    app.include_router(catalog.router, prefix="/v1")
    return app
