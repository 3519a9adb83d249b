from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.access import Perm, require, visible
from gongjian.core.audit import AuditEntry
from gongjian.core.db import SessionDep
from gongjian.core.errors import problem_responses
from gongjian.core.pagination import Page, PageParams, PageParamsDep, decode_cursor, encode_cursor

router = APIRouter(prefix="/api/v1/audit-log", tags=["audit"])


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    at: datetime
    actor_kind: str
    actor_id: uuid.UUID | None
    actor_name: str | None
    action: str
    object_type: str
    object_id: uuid.UUID | None
    org_id: uuid.UUID | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None
    request_id: str | None


@router.get(
    "",
    response_model=Page[AuditEntryOut],
    summary="Read the audit log within scope (newest first)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_audit_entries(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    object_type: Annotated[str | None, Query(max_length=64)] = None,
    object_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor_id: uuid.UUID | None = None,
) -> Page[AuditEntryOut]:
    require(principal, Perm.audit_read)
    stmt = visible(select(AuditEntry), AuditEntry, principal, Perm.audit_read)
    if object_type:
        stmt = stmt.where(AuditEntry.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditEntry.object_id == object_id)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if actor_id:
        stmt = stmt.where(AuditEntry.actor_id == actor_id)
    rows, cursor = await _newest_first(session, stmt, page)
    return Page(items=[AuditEntryOut.model_validate(r) for r in rows], next_cursor=cursor)


async def _newest_first(session: Any, stmt: Any, page: PageParams) -> tuple[list[AuditEntry], str | None]:
    if page.cursor:
        at, last_id = decode_cursor(page.cursor)
        stmt = stmt.where((AuditEntry.at < at) | ((AuditEntry.at == at) & (AuditEntry.id < last_id)))
    rows = list(
        (
            await session.execute(
                stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(page.limit + 1)
            )
        ).scalars()
    )
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        return rows, encode_cursor(rows[-1].at, rows[-1].id)
    return rows, None
