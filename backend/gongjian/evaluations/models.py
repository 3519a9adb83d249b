"""Two-way evaluation (双向评议) of co-building agreements.

Each year, per agreement, an evaluation window: the community rates the unit (side `community`)
and the unit rates the community (side `unit`), each on the rubric for its side. A rubric is set
by a county or street organization (the nearest one above the community wins); with none set, the
built-in default (`service.DEFAULT_RUBRICS`) applies. A window takes its two rubrics when it opens,
so a rubric changed later never rewrites a year already under way; rubrics are never edited, a new
one retires the old.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.agreements.models import Side
from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin

_SIDE_CHECK = "side IN ('community', 'unit')"


class EvaluationRubric(IdMixin, TimestampMixin, Base):
    """The items one side rates on, with weights. `org_id` None: the built-in default, seeded from
    code the first time a window needs it."""

    __tablename__ = "evaluation_rubrics"
    # The setting organization's staff and their superiors.
    __scope__ = Scope(org=("org_id",))

    org_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    # The rating side: `community` rates the unit, `unit` rates the community.
    side: Mapped[Side] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[uuid.UUID | None]
    retired_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(_SIDE_CHECK, name="side"),
        # One current rubric per organization and side, and one current built-in default per side.
        Index(
            "uq_evaluation_rubrics_current",
            "org_id",
            "side",
            unique=True,
            postgresql_where=text("retired_at IS NULL AND org_id IS NOT NULL"),
        ),
        Index(
            "uq_evaluation_rubrics_default",
            "side",
            unique=True,
            postgresql_where=text("retired_at IS NULL AND org_id IS NULL"),
        ),
    )


class EvaluationRubricItem(IdMixin, Base):
    """One rated item: scored from 0 to `max_score`, counted with `weight`. Reached through its rubric."""

    __tablename__ = "evaluation_rubric_items"

    rubric_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("evaluation_rubrics.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
    weight: Mapped[int] = mapped_column(SmallInteger)
    max_score: Mapped[int] = mapped_column(SmallInteger)
    position: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")

    __table_args__ = (
        UniqueConstraint("rubric_id", "key"),
        CheckConstraint("weight BETWEEN 1 AND 100", name="weight"),
        CheckConstraint("max_score BETWEEN 1 AND 100", name="max_score"),
    )


class EvaluationWindow(IdMixin, TimestampMixin, VersionedMixin, Base):
    """One agreement's evaluation for one year, open from `opens_at` until `closes_at`.

    Keyed by the agreement's number, not its version: an amendment during the year does not open a
    second evaluation. `agreement_id` is the version in force when the window opened.
    """

    __tablename__ = "evaluation_windows"
    # The community's staff (and their superiors); the unit's liaison.
    __scope__ = Scope(org=("community_id",), unit="unit_id")

    agreement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agreements.id", ondelete="RESTRICT"), index=True
    )
    agreement_number: Mapped[str] = mapped_column(String(32))
    community_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    unit_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("resident_units.id", ondelete="RESTRICT"), index=True
    )
    year: Mapped[int] = mapped_column(SmallInteger, index=True)
    opens_at: Mapped[datetime]
    closes_at: Mapped[datetime]
    community_rubric_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("evaluation_rubrics.id", ondelete="RESTRICT"), index=True
    )
    unit_rubric_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("evaluation_rubrics.id", ondelete="RESTRICT"), index=True
    )
    # None: opened by the year-end job.
    opened_by: Mapped[uuid.UUID | None]

    __table_args__ = (
        UniqueConstraint("agreement_number", "year"),
        CheckConstraint("opens_at < closes_at", name="window_ordered"),
        CheckConstraint("year BETWEEN 2000 AND 2100", name="year_range"),
    )


class EvaluationSubmission(IdMixin, TimestampMixin, Base):
    """One side's rating in one window: a score per rubric item, the weighted total (0–100) and a
    comment. At most one per window and side; never edited. Reached through its window."""

    __tablename__ = "evaluation_submissions"

    window_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("evaluation_windows.id", ondelete="CASCADE"), index=True
    )
    side: Mapped[Side] = mapped_column(String(16))
    rubric_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluation_rubrics.id", ondelete="RESTRICT"))
    # {item key: score}
    scores: Mapped[dict[str, Any]] = mapped_column(JSONB)
    total: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Kept like the audit log's actor: a plain id, never nulled when an account goes.
    submitted_by: Mapped[uuid.UUID]
    submitted_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("window_id", "side"),
        CheckConstraint(_SIDE_CHECK, name="side"),
        CheckConstraint("total BETWEEN 0 AND 100", name="total_range"),
    )
