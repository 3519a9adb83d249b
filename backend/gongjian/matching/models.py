"""Matching runs and the suggestions they leave for staff to accept or dismiss."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Double, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"


class MatchRun(IdMixin, TimestampMixin, Base):
    """A bulk matching run over every open need under an organization (the yearly run)."""

    __tablename__ = "match_runs"
    __scope__ = Scope(org=("org_id",))

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    status: Mapped[RunStatus] = mapped_column(String(16), default=RunStatus.queued)
    needs_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    needs_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    suggestions_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    needs_without_match: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    requested_by: Mapped[uuid.UUID | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(String(1000))

    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'completed', 'failed')", name="status"),
    )


class SuggestionState(StrEnum):
    suggested = "suggested"
    accepted = "accepted"
    dismissed = "dismissed"


class Suggestion(IdMixin, TimestampMixin, VersionedMixin, Base):
    """A resource proposed for a need, with the engine's score and explanation.

    One row per (need, resource) pair, ever: a dismissed pair stays dismissed (a later run
    does not propose it again) and an accepted one points at the project it became.
    """

    __tablename__ = "match_suggestions"
    # Seen by whoever sees the need (its community and above).
    __scope__ = Scope(org=("org_id",))

    need_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("needs.id", ondelete="CASCADE"))
    resource_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("resources.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("match_runs.id", ondelete="SET NULL"), index=True
    )
    score: Mapped[float] = mapped_column(Double)
    weak: Mapped[bool] = mapped_column(Boolean, default=False)
    explanation: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[SuggestionState] = mapped_column(String(16), default=SuggestionState.suggested)
    decided_by: Mapped[uuid.UUID | None]
    decided_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(500))
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )

    __table_args__ = (
        UniqueConstraint("need_id", "resource_id"),
        CheckConstraint("state IN ('suggested', 'accepted', 'dismissed')", name="state"),
        Index("ix_match_suggestions_need_rank", "need_id", "state", "score"),
    )


class NeedMatchStatus(Base):
    """When a need's suggestions were last computed, so a read knows whether to compute them."""

    __tablename__ = "need_match_status"

    need_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("needs.id", ondelete="CASCADE"), primary_key=True)
    matched_at: Mapped[datetime]
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("match_runs.id", ondelete="SET NULL"))
