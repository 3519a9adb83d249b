"""An import of the lists: what was uploaded, under which organization, how far it got, what it did."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin


class ImportStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"


class ImportFormat(StrEnum):
    json = "json"
    xlsx = "xlsx"


def _in(column: str, enum: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(e.value) for e in enum)})"


class ListImport(IdMixin, TimestampMixin, Base):
    """One uploaded file, imported by a background job (`service.run_import`).

    The job acts for whoever uploaded it with the permissions they held on the parent organization
    when they asked (`actor_*`, `perms`), limited to that organization's subtree.
    """

    __tablename__ = "list_imports"
    # Seen by whoever sees the organization it was imported under.
    __scope__ = Scope(org=("parent_org_id",))

    parent_org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[ImportStatus] = mapped_column(String(16), default=ImportStatus.queued)
    format: Mapped[ImportFormat] = mapped_column(String(8))
    filename: Mapped[str | None] = mapped_column(String(255))
    # The file as uploaded; deferred so that polling the status does not load it.
    payload: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    create_missing: Mapped[bool] = mapped_column(Boolean, default=False)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    # {"resources": {"created": n, "updated": n, "unchanged": n, "skipped": n}, ...}
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Row errors as `validation.RowError.as_dict()`, at most `service.MAX_STORED_ERRORS` of them.
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None]
    actor_name: Mapped[str] = mapped_column(String(100))
    perms: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(_in("status", ImportStatus), name="status"),
        CheckConstraint(_in("format", ImportFormat), name="format"),
        CheckConstraint("progress_done >= 0 AND progress_done <= progress_total", name="progress_bounds"),
    )
