from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from gongjian.core import db

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str | None = None
    migrations: str | None = None


@router.get("/healthz", response_model=Health, summary="Process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Database reachable and migrations at head",
    responses={503: {"model": Health, "description": "Not ready"}},
)
async def readyz() -> JSONResponse:
    from gongjian.core.migrations import head_revision

    try:
        async with db.get_engine().connect() as conn:
            current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except Exception:
        unreachable = Health(status="unavailable", database="unreachable")
        return JSONResponse(unreachable.model_dump(), status_code=503)
    head = head_revision()
    if current != head:
        body = Health(status="unavailable", database="ok", migrations=f"{current} != {head}")
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Health(status="ok", database="ok", migrations=current).model_dump())
