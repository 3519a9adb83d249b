"""The inbox: writing notifications (`notify`, for every other package) and the owner's reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core.access import Principal
from gongjian.core.db import utcnow
from gongjian.core.errors import ProblemError, not_found
from gongjian.core.pagination import PageParams, decode_cursor, encode_cursor
from gongjian.notifications.channels import CHANNELS
from gongjian.notifications.models import BODY_MAX, TITLE_MAX, Notification
from gongjian.notifications.schemas import NotificationOut


def _fit(text: str, limit: int) -> str:
    """Text built from user input (an agreement's title, a reason) never fails the write that
    notifies: what does not fit is cut, and the cut shown."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def notify(
    session: AsyncSession,
    user_ids: Iterable[uuid.UUID],
    *,
    kind: str,
    title: str,
    body: str,
    link: str | None = None,
    payload: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> list[Notification]:
    """Put a notification in each user's inbox, in the caller's transaction; returns the new ones.

    With a `dedupe_key`, a user who already has a notification with that key gets none: a job run
    twice, or two runs at once, notify once (the unique key decides, not a prior read). `payload`
    must be JSON values (ids and dates as strings); a title or body too long is cut to fit."""
    recipients = list(dict.fromkeys(user_ids))  # once each, in the order given
    if not recipients:
        return []
    now = utcnow()
    rows = [
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "kind": kind,
            "title": _fit(title, TITLE_MAX),
            "body": _fit(body, BODY_MAX),
            "link": link,
            "payload": payload or {},
            "dedupe_key": dedupe_key,
            "created_at": now,
        }
        for user_id in recipients
    ]
    stmt = (
        insert(Notification)
        .values(rows)
        .on_conflict_do_nothing(index_elements=[Notification.user_id, Notification.dedupe_key])
        .returning(Notification)
    )
    created = list((await session.execute(stmt)).scalars().all())
    if created:
        for channel in CHANNELS:
            await channel.deliver(session, created)
    return created


def to_out(notification: Notification) -> NotificationOut:
    return NotificationOut(
        id=notification.id,
        kind=notification.kind,
        title=notification.title,
        body=notification.body,
        link=notification.link,
        payload=notification.payload,
        created_at=notification.created_at,
        read_at=notification.read_at,
        read=notification.read_at is not None,
    )


def _owner(principal: Principal) -> uuid.UUID:
    """The inbox is a user's own: an API client has none."""
    if principal.user_id is None:
        raise ProblemError("forbidden")
    return principal.user_id


def inbox_query(principal: Principal, *, unread: bool | None = None, kind: str | None = None) -> Select[Any]:
    stmt = select(Notification).where(Notification.user_id == _owner(principal))
    if unread is True:
        stmt = stmt.where(Notification.read_at.is_(None))
    elif unread is False:
        stmt = stmt.where(Notification.read_at.is_not(None))
    if kind is not None:
        stmt = stmt.where(Notification.kind == kind)
    return stmt


async def newest_first(
    session: AsyncSession, stmt: Select[Any], params: PageParams
) -> tuple[list[Notification], str | None]:
    """An inbox reads newest first: the cursor pagination of core/pagination.py, descending."""
    if params.cursor:
        created_at, last_id = decode_cursor(params.cursor)
        stmt = stmt.where(
            or_(
                Notification.created_at < created_at,
                and_(Notification.created_at == created_at, Notification.id < last_id),
            )
        )
    stmt = stmt.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(params.limit + 1)
    rows = list((await session.execute(stmt)).scalars().all())
    if len(rows) <= params.limit:
        return rows, None
    rows = rows[: params.limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


async def get_own(session: AsyncSession, principal: Principal, notification_id: uuid.UUID) -> Notification:
    """The caller's notification; anyone else's does not exist for them (404)."""
    row = await session.scalar(
        select(Notification).where(
            Notification.id == notification_id, Notification.user_id == _owner(principal)
        )
    )
    if row is None:
        raise not_found("notification")
    return row


async def mark_read(session: AsyncSession, principal: Principal, notification_id: uuid.UUID) -> Notification:
    """Mark one read; reading it again keeps the first time it was read."""
    stmt = (
        update(Notification)
        .where(Notification.id == notification_id, Notification.user_id == _owner(principal))
        .values(read_at=func.coalesce(Notification.read_at, utcnow()))
        .returning(Notification)
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise not_found("notification")
    return row


async def mark_all_read(
    session: AsyncSession, principal: Principal, *, up_to: datetime | None = None
) -> int:
    """Mark every unread notification read (those created at or before `up_to` when given, so a
    client marks what it has shown, not one that arrived meanwhile); returns how many."""
    stmt = update(Notification).where(
        Notification.user_id == _owner(principal), Notification.read_at.is_(None)
    )
    if up_to is not None:
        stmt = stmt.where(Notification.created_at <= up_to)
    result = await session.execute(stmt.values(read_at=utcnow()).execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def unread_count(session: AsyncSession, principal: Principal) -> int:
    stmt = select(func.count()).where(
        Notification.user_id == _owner(principal), Notification.read_at.is_(None)
    )
    return int(await session.scalar(stmt) or 0)
