"""Cursor pagination: `{"items": [...], "next_cursor": ...}` with a capped page size.

The cursor is an opaque, url-safe encoding of the last row's (created_at, id); rows are
ordered by that pair so a page boundary is stable while rows are added.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core.config import get_settings
from gongjian.core.errors import ProblemError

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` to get the next page")


class PageParams(BaseModel):
    cursor: str | None = None
    limit: int = 20


async def page_params(  # async: a plain `def` dependency would be run in the thread pool
    cursor: Annotated[
        str | None, Query(max_length=200, description="Opaque cursor from `next_cursor`")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size (at most 100)")] = 20,
) -> PageParams:
    cap = get_settings().page_size_max
    return PageParams(cursor=cursor, limit=min(limit, cap))


def encode_cursor(created_at: datetime, obj_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(obj_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, oid = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created), uuid.UUID(oid)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ProblemError("invalid_cursor") from exc


async def paginate(
    session: AsyncSession, stmt: Select[Any], model: Any, params: PageParams
) -> tuple[list[Any], str | None]:
    """Run `stmt` (selecting `model`) one page at a time; returns rows and the next cursor."""
    if params.cursor:
        created_at, last_id = decode_cursor(params.cursor)
        stmt = stmt.where(
            or_(model.created_at > created_at, and_(model.created_at == created_at, model.id > last_id))
        )
    stmt = stmt.order_by(model.created_at, model.id).limit(params.limit + 1)
    rows = list((await session.execute(stmt)).scalars().all())
    next_cursor = None
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        last = rows[-1]
        next_cursor = encode_cursor(last.created_at, last.id)
    return rows, next_cursor


async def paginate_by_key(
    session: AsyncSession, stmt: Select[Any], key: Any, params: PageParams
) -> tuple[list[Any], str | None]:
    """Page in the order of one unique string column (e.g. the organization path: tree order,
    which the path index serves directly however large the subtree)."""
    if params.cursor:
        try:
            padded = params.cursor + "=" * (-len(params.cursor) % 4)
            tag, last = json.loads(base64.urlsafe_b64decode(padded.encode()))
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise ProblemError("invalid_cursor") from exc
        if tag != "k" or not isinstance(last, str):
            raise ProblemError("invalid_cursor")
        stmt = stmt.where(key > last)
    rows = list((await session.execute(stmt.order_by(key).limit(params.limit + 1))).scalars().all())
    next_cursor = None
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        raw = json.dumps(["k", getattr(rows[-1], key.key)]).encode()
        next_cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return rows, next_cursor


PageParamsDep = Annotated[PageParams, Depends(page_params)]
