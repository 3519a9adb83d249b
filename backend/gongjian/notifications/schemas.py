from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    kind: str = Field(
        description="What it is about, `domain.event` (e.g. `agreement.signature_pending`); clients may "
        "render `payload` by kind"
    )
    title: str
    body: str
    link: str | None = Field(description="API path of the object it is about, e.g. /api/v1/agreements/{id}")
    payload: dict[str, Any] = Field(description="Facts behind the message (ids, dates), by kind")
    created_at: datetime
    read_at: datetime | None
    read: bool


class UnreadCount(BaseModel):
    unread: int


class MarkedRead(BaseModel):
    marked: int = Field(description="How many notifications this call marked read")


def _text_only(value: object) -> object:
    # A JSON number is not a time: lax parsing would read 0 as 1970-01-01.
    if isinstance(value, int | float):
        raise ValueError("must be an ISO 8601 date-time with its offset")
    return value


TimeText = Annotated[AwareDatetime, BeforeValidator(_text_only)]


class ReadAll(BaseModel):
    model_config = ConfigDict(extra="forbid")
    up_to: TimeText | None = Field(
        default=None,
        description="Only those created at or before this time (the newest one the client has shown), so "
        "one arriving meanwhile stays unread",
    )
