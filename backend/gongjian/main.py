"""The ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from gongjian import models  # noqa: F401  (registers every table with the mappers)
from gongjian.agreements import reminders  # noqa: F401  (registers the reminder sweep with the job queue)
from gongjian.agreements.router import router as agreements_router
from gongjian.agreements.verification import router as agreement_documents_router
from gongjian.audit.router import router as audit_router
from gongjian.auth.router import clients_router
from gongjian.auth.router import router as auth_router
from gongjian.core import db, jobs
from gongjian.core.config import get_settings
from gongjian.core.errors import install_error_handlers
from gongjian.core.health import router as health_router
from gongjian.core.idempotency import IdempotencyMiddleware
from gongjian.core.middleware import RequestIdMiddleware
from gongjian.evaluations.router import router as evaluations_router
from gongjian.grids.router import router as grids_router
from gongjian.lists.imports.router import router as list_imports_router
from gongjian.lists.router import needs_router, resources_router
from gongjian.matching.router import router as matching_router
from gongjian.meetings.router import router as meetings_router
from gongjian.members.router import router as members_router
from gongjian.notifications.router import router as notifications_router
from gongjian.organizations.router import router as organizations_router
from gongjian.projects.router import router as projects_router
from gongjian.resident_units.router import router as resident_units_router
from gongjian.standings.router import router as standings_router
from gongjian.users.router import router as users_router

ROUTERS = [
    health_router,
    auth_router,
    users_router,
    clients_router,
    organizations_router,
    resident_units_router,
    grids_router,
    members_router,
    # Before the resources and needs routers: /resources/export.xlsx is not a /resources/{id}.
    list_imports_router,
    resources_router,
    needs_router,
    matching_router,
    projects_router,
    meetings_router,
    # Before the agreements router: /agreements/verify is not an /agreements/{agreement_id}.
    agreement_documents_router,
    agreements_router,
    notifications_router,
    evaluations_router,
    standings_router,
    audit_router,
]

DESCRIPTION = """
共建 Gongjian — 区域化党建平台 API (regional party building).

* All endpoints live under `/api/v1`; errors are RFC 9457 `application/problem+json` with a stable `code`
  (Chinese messages by default, English with `Accept-Language: en`).
* Lists answer `{"items": [...], "next_cursor": ...}`; pass `cursor` and `limit` (≤ 100).
* Reads return an `ETag`; send it back as `If-Match` on updates (a stale one answers 412).
* Creating requests accept an `Idempotency-Key` header; a retry replays the first answer.
* Authenticate at `POST /api/v1/auth/token` (OAuth2 password or client_credentials).
"""


def operation_id(route: APIRoute) -> str:
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    owns_engine = False
    try:
        db.get_engine()
    except RuntimeError:
        settings = get_settings()
        db.init_engine(
            resolve_database_url(),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
            pool_recycle=settings.db_pool_recycle_seconds,
        )
        owns_engine = True
    # The queue is worked on the engine's database: the embedded one, DATABASE_URL, or the tests'.
    async with jobs.background_worker(db.get_engine().url):
        yield
    if owns_engine:
        await db.dispose_engine()


def resolve_database_url() -> str:
    """DATABASE_URL when set (normalised to asyncpg), else the embedded server's."""
    settings = get_settings()
    if settings.database_url:
        return normalise_url(settings.database_url)
    from gongjian.core.embedded import start_embedded

    return start_embedded(settings.data_dir)


def normalise_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="Gongjian 共建 API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        swagger_ui_parameters={"persistAuthorization": True},
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(RequestIdMiddleware)

    spa_dir = settings.serve_spa_dir or Path(__file__).resolve().parents[2] / "frontend" / "admin" / "dist"
    if spa_dir.is_dir():
        app.mount("/", StaticFiles(directory=spa_dir, html=True), name="spa")
    else:

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/docs")

    return app


app = create_app()
