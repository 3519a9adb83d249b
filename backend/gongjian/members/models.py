"""Party members (党员) and 双报到 reporting."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin


class Gender(StrEnum):
    male = "male"
    female = "female"


class MemberCategory(StrEnum):
    in_service = "in_service"  # 在职
    retired = "retired"  # 离退休
    floating = "floating"  # 流动
    hardship = "hardship"  # 困难


class MemberStatus(StrEnum):
    active = "active"
    transferred_out = "transferred_out"
    deceased = "deceased"


class Member(IdMixin, TimestampMixin, VersionedMixin, Base):
    """A party member. Phone and ID number are encrypted at rest and found by a keyed hash."""

    __tablename__ = "members"
    # Seen by staff of the branch holding the membership or of the community they live in,
    # and by the member themself through their linked account.
    __scope__ = Scope(org=("org_id", "residence_community_id"), owner="user_id")

    name: Mapped[str] = mapped_column(String(50))
    gender: Mapped[Gender] = mapped_column(String(8))
    birth_date: Mapped[date] = mapped_column(Date)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"), index=True)
    category: Mapped[MemberCategory] = mapped_column(String(16))
    employer_unit_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("resident_units.id", ondelete="SET NULL"), index=True
    )
    residence_community_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), index=True
    )
    grid_cell_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("grid_cells.id", ondelete="SET NULL"), index=True
    )
    joined_party_on: Mapped[date | None] = mapped_column(Date)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), unique=True
    )
    status: Mapped[MemberStatus] = mapped_column(String(16), default=MemberStatus.active)
    phone_encrypted: Mapped[str | None] = mapped_column(String(200))
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    id_number_encrypted: Mapped[str] = mapped_column(String(200))
    id_number_hash: Mapped[str] = mapped_column(String(64), unique=True)
    external_ref: Mapped[str | None] = mapped_column(String(100), index=True)

    __table_args__ = (
        CheckConstraint("category IN ('in_service', 'retired', 'floating', 'hardship')", name="category"),
        CheckConstraint("status IN ('active', 'transferred_out', 'deceased')", name="status"),
        CheckConstraint("gender IN ('male', 'female')", name="gender"),
    )


class ReportingKind(StrEnum):
    unit = "unit"  # a resident unit's party org reports to its community
    member = "member"  # an in-service member reports to the community they live in


class ReportingState(StrEnum):
    submitted = "submitted"
    accepted = "accepted"
    returned = "returned"


# A reporting counts as active while submitted or accepted and not deregistered.
ACTIVE_WHERE = text("state IN ('submitted', 'accepted') AND deregistered_at IS NULL")


class Reporting(IdMixin, TimestampMixin, VersionedMixin, Base):
    """双报到: a unit or an in-service member reports to a community.

    States: submitted → accepted | returned; an accepted one may later be deregistered
    (`deregistered_at`, with a reason). At most one active reporting per member and per unit.
    """

    __tablename__ = "reportings"
    # The community's staff; the member themself (user_id copied from the member); the unit's liaison.
    __scope__ = Scope(org=("community_id",), owner="user_id", unit="resident_unit_id")

    kind: Mapped[ReportingKind] = mapped_column(String(8))
    member_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), index=True
    )
    resident_unit_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("resident_units.id", ondelete="CASCADE"), index=True
    )
    community_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    state: Mapped[ReportingState] = mapped_column(String(16), default=ReportingState.submitted)
    note: Mapped[str | None] = mapped_column(String(500))
    # Who acted is kept like the audit log's actor: a plain id, never nulled when an account goes.
    submitted_by: Mapped[uuid.UUID | None]
    decided_by: Mapped[uuid.UUID | None]
    decided_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(500))
    deregistered_by: Mapped[uuid.UUID | None]
    deregistered_at: Mapped[datetime | None]
    deregistration_reason: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        CheckConstraint(
            "(kind = 'member' AND member_id IS NOT NULL AND resident_unit_id IS NULL)"
            " OR (kind = 'unit' AND resident_unit_id IS NOT NULL AND member_id IS NULL)",
            name="subject",
        ),
        CheckConstraint("state IN ('submitted', 'accepted', 'returned')", name="state"),
        CheckConstraint("deregistered_at IS NULL OR state = 'accepted'", name="deregistered_accepted"),
        Index("uq_reportings_active_member", "member_id", unique=True, postgresql_where=ACTIVE_WHERE),
        Index("uq_reportings_active_unit", "resident_unit_id", unique=True, postgresql_where=ACTIVE_WHERE),
    )

    @property
    def active(self) -> bool:
        return (
            self.state in (ReportingState.submitted, ReportingState.accepted) and self.deregistered_at is None
        )
