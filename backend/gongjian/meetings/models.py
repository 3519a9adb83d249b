"""Joint meetings (联席会议) and consultation meetings (议事协商会议).

A meeting of a street or community org: invited orgs and units, agenda items (each may link a
project, later an agreement), attendance, minutes, and one decision per agenda item. A project
becomes approved or rejected only through such a decision (see `service.decide`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin


class MeetingKind(StrEnum):
    joint_meeting = "joint_meeting"  # 联席会议
    consultation_meeting = "consultation_meeting"  # 议事协商会议


class MeetingState(StrEnum):
    scheduled = "scheduled"
    held = "held"
    minutes_published = "minutes_published"
    cancelled = "cancelled"


class AttendeeKind(StrEnum):
    user = "user"
    unit = "unit"  # a resident unit's representative
    org = "org"  # an organization's representative


class AttendanceStatus(StrEnum):
    present = "present"
    absent = "absent"
    excused = "excused"


class DecisionOutcome(StrEnum):
    approve = "approve"
    reject = "reject"
    defer = "defer"


def _in(column: str, enum: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(e.value) for e in enum)})"


class Meeting(IdMixin, TimestampMixin, VersionedMixin, Base):
    __tablename__ = "meetings"
    # The holding org's staff and their superiors (street staff see their communities' meetings).
    __scope__ = Scope(org=("org_id",))

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[MeetingKind] = mapped_column(String(24))
    title: Mapped[str] = mapped_column(String(200))
    scheduled_at: Mapped[datetime] = mapped_column(index=True)
    location: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[MeetingState] = mapped_column(String(24), default=MeetingState.scheduled, index=True)
    minutes: Mapped[str | None] = mapped_column(Text)
    held_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    created_by: Mapped[uuid.UUID | None]
    state_reason: Mapped[str | None] = mapped_column(String(500))
    state_changed_by: Mapped[uuid.UUID | None]
    state_changed_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(_in("kind", MeetingKind), name="kind"),
        CheckConstraint(_in("state", MeetingState), name="state"),
    )


class MeetingInvitee(IdMixin, Base):
    """An org or a resident unit invited to the meeting. Reached through its meeting."""

    __tablename__ = "meeting_invitees"

    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    unit_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("resident_units.id", ondelete="CASCADE"))

    __table_args__ = (
        CheckConstraint("(org_id IS NULL) <> (unit_id IS NULL)", name="one_invitee"),
        UniqueConstraint("meeting_id", "org_id"),
        UniqueConstraint("meeting_id", "unit_id"),
    )


class AgendaItem(IdMixin, TimestampMixin, Base):
    __tablename__ = "meeting_agenda_items"

    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"), index=True
    )
    # The extension point for what else a meeting decides (agreements, a later issue): the kind of
    # object and its id, e.g. ("agreement", <id>). No foreign key: the table does not exist yet.
    subject_type: Mapped[str | None] = mapped_column(String(32))
    subject_id: Mapped[uuid.UUID | None]

    __table_args__ = (
        UniqueConstraint("meeting_id", "position"),
        CheckConstraint("(subject_type IS NULL) = (subject_id IS NULL)", name="subject_pair"),
    )


class Attendance(IdMixin, Base):
    """Who attended: a user, or the representative of a unit or an org, by name."""

    __tablename__ = "meeting_attendance"

    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), index=True)
    attendee_kind: Mapped[AttendeeKind] = mapped_column(String(8))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    unit_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("resident_units.id", ondelete="SET NULL"))
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organizations.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(50))
    status: Mapped[AttendanceStatus] = mapped_column(String(8))
    note: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        CheckConstraint(_in("attendee_kind", AttendeeKind), name="attendee_kind"),
        CheckConstraint(_in("status", AttendanceStatus), name="status"),
    )


class Decision(IdMixin, TimestampMixin, Base):
    """The meeting's decision on one agenda item; on a project it approves, rejects or defers it."""

    __tablename__ = "meeting_decisions"

    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="RESTRICT"), index=True)
    agenda_item_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("meeting_agenda_items.id", ondelete="RESTRICT"), unique=True
    )
    # Copied from the agenda item: the project's trail (need → decision → project) reads from here.
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    outcome: Mapped[DecisionOutcome] = mapped_column(String(8))
    note: Mapped[str | None] = mapped_column(Text)
    votes_for: Mapped[int | None] = mapped_column(Integer)
    votes_against: Mapped[int | None] = mapped_column(Integer)
    votes_abstain: Mapped[int | None] = mapped_column(Integer)
    decided_by: Mapped[uuid.UUID | None]
    decided_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint(_in("outcome", DecisionOutcome), name="outcome"),
        CheckConstraint(
            "coalesce(votes_for, 0) >= 0 AND coalesce(votes_against, 0) >= 0"
            " AND coalesce(votes_abstain, 0) >= 0",
            name="votes_nonnegative",
        ),
        Index("ix_meeting_decisions_project", "project_id", "decided_at"),
    )
