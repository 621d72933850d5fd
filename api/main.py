"""The FastAPI application factory."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from adapters.sql import Database
from api.console.app import install as install_console
from api.limits import BodyLimit, no_nul_in_names, single_valued_query
from api.methods import HeadAsGet
from api.problems import use_problem_details
from api.routers import access, catalog, demonstrations, evidence, health, kpis, live, reports
from api.state import ApiState, rollup_loop
from collector.settings import CollectorSettings
from pilot_core import comparison


def create_app(settings: CollectorSettings | None = None, database: Database | None = None) -> FastAPI:
    """The API over ``settings``, its database migrated to the latest schema.

    A ``database`` passed in stays the caller's to dispose of; the one opened at
    ``settings.database_url`` otherwise is disposed of when the app shuts down.
    """
    state = ApiState.from_settings(settings or CollectorSettings.load(), database)
    state.database.upgrade()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.stopping.clear()  # an app may be served again after a shutdown (tests do)
        threading.Thread(target=comparison.preload, name="preload-statsmodels", daemon=True).start()
        if state.settings.rollup_every_s > 0:
            threading.Thread(target=rollup_loop, args=(state,), name="rollups", daemon=True).start()
        yield
        state.stopping.set()
        state.close()
        if database is None:
            state.database.dispose()

    app = FastAPI(
        title="pilot-telemetry",
        version="0.1.0",
        description="Telemetry and before/after KPIs for physical-AI pilots on production lines.",
        lifespan=lifespan,
        dependencies=[Depends(single_valued_query), Depends(no_nul_in_names)],
    )
    app.state.pilot = state
    use_problem_details(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(HeadAsGet)
    app.include_router(health.router)
    app.include_router(access.router, prefix="/v1")
    app.include_router(catalog.router, prefix="/v1")
    app.include_router(demonstrations.router, prefix="/v1")
    app.include_router(kpis.router, prefix="/v1")
    app.include_router(live.router, prefix="/v1")
    app.include_router(reports.router, prefix="/v1")
    app.include_router(evidence.router, prefix="/v1")
    install_console(app)  # the web console's pages, at /
    return app
