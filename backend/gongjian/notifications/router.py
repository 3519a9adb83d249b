"""The caller's own notification inbox."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.db import SessionDep
from gongjian.core.errors import problem_responses
from gongjian.core.pagination import Page, PageParamsDep
from gongjian.notifications import service
from gongjian.notifications.schemas import MarkedRead, NotificationOut, ReadAll, UnreadCount

router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get(
    "/notifications",
    response_model=Page[NotificationOut],
    summary="List the caller's own notifications, newest first",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_notifications(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    unread: Annotated[bool | None, Query(description="true: only unread; false: only read")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="Only this kind")] = None,
) -> Page[NotificationOut]:
    stmt = service.inbox_query(principal, unread=unread, kind=kind)
    rows, cursor = await service.newest_first(session, stmt, page)
    return Page(items=[service.to_out(n) for n in rows], next_cursor=cursor)


@router.get(
    "/notifications/unread-count",
    response_model=UnreadCount,
    summary="How many of the caller's notifications are unread (the badge)",
    responses=problem_responses(401, 403),
)
async def count_unread_notifications(session: SessionDep, principal: CurrentPrincipal) -> UnreadCount:
    return UnreadCount(unread=await service.unread_count(session, principal))


@router.post(
    "/notifications/read-all",
    response_model=MarkedRead,
    summary="Mark all the caller's unread notifications read",
    responses=problem_responses(401, 403, 422),
)
async def read_all_notifications(
    session: SessionDep, principal: CurrentPrincipal, body: ReadAll | None = None
) -> MarkedRead:
    marked = await service.mark_all_read(session, principal, up_to=body.up_to if body else None)
    return MarkedRead(marked=marked)


@router.get(
    "/notifications/{notification_id}",
    response_model=NotificationOut,
    summary="Get one of the caller's notifications",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_notification(
    session: SessionDep, principal: CurrentPrincipal, notification_id: uuid.UUID
) -> NotificationOut:
    return service.to_out(await service.get_own(session, principal, notification_id))


@router.post(
    "/notifications/{notification_id}/read",
    response_model=NotificationOut,
    summary="Mark one of the caller's notifications read (again: no change)",
    responses=problem_responses(401, 403, 404, 422),
)
async def read_notification(
    session: SessionDep, principal: CurrentPrincipal, notification_id: uuid.UUID
) -> NotificationOut:
    return service.to_out(await service.mark_read(session, principal, notification_id))
