"""The in-app notification inbox: one row per user and notification."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.db import Base, IdMixin, utcnow

TITLE_MAX = 200
BODY_MAX = 2000


class Notification(IdMixin, Base):
    """A message in one user's inbox.

    Personal: only its recipient reads it, whatever roles they or anyone else hold, so it has no
    `__scope__` and is never reached through grants (a platform admin does not read others' inboxes).
    `dedupe_key`: a job that runs twice (a retry, a second sweep the same day) notifies once.
    """

    __tablename__ = "notifications"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    body: Mapped[str] = mapped_column(String(BODY_MAX))
    link: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    read_at: Mapped[datetime | None]

    __table_args__ = (
        # NULL keys are distinct: a notification without a key is never deduplicated.
        UniqueConstraint("user_id", "dedupe_key", name="uq_notifications_user_id_dedupe_key"),
        # The inbox, newest first, page by page.
        Index("ix_notifications_user_id_created_at", "user_id", "created_at", "id"),
        # The unread badge, asked on every screen: only the unread rows are indexed.
        Index("ix_notifications_unread", "user_id", postgresql_where=text("read_at IS NULL")),
    )
