"""The project list (项目清单).

A project carries needs (N:N) and resource commitments, is approved or rejected only by a
meeting decision (`gongjian.meetings`), is led by a resident unit (claimed in the hall, 领办大厅,
or assigned by staff) with joint units, and is tracked by milestones and progress entries.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Select,
    SmallInteger,
    String,
    Text,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, aliased, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from gongjian.agreements.models import Agreement, active_agreement_units
from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin
from gongjian.organizations.models import Organization, OrgLevel
from gongjian.resident_units.models import ResidentUnit


class ProjectState(StrEnum):
    proposed = "proposed"
    approved = "approved"  # only by a meeting decision
    in_progress = "in_progress"
    completed = "completed"
    evaluated = "evaluated"
    rejected = "rejected"  # only by a meeting decision
    cancelled = "cancelled"


# A unit may claim a project (become its lead) while it is in one of these states.
CLAIMABLE_STATES = (ProjectState.proposed, ProjectState.approved)


class ClaimMethod(StrEnum):
    paired = "paired"  # first claim of a unit paired with the community
    hall = "hall"  # claimed in the hall once it opened to the whole street
    assigned = "assigned"  # assigned by staff


def _in(column: str, enum: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(e.value) for e in enum)})"


# --- who a liaison reaches ----------------------------------------------------------------


def paired_units(community_id: Any) -> Select[Any]:
    """The units with first claim on the projects of `community_id` (a column or a value): those
    holding an ACTIVE co-building agreement (共建协议) with the community. The hall and the claim
    rules only call this (and match its `Agreement.unit_id`)."""
    return active_agreement_units(community_id)


def in_project_street(unit_ids: frozenset[uuid.UUID]) -> ColumnElement[bool]:
    """One of the units sits in a community of the street the project belongs to."""
    street, project_org, unit_community = aliased(Organization), aliased(Organization), aliased(Organization)
    return exists().where(
        project_org.id == Project.org_id,
        street.level == OrgLevel.street,
        project_org.path.startswith(street.path),
        ResidentUnit.id.in_(sorted(unit_ids)),
        unit_community.id == ResidentUnit.community_id,
        unit_community.path.startswith(street.path),
    )


def open_in_hall(unit_ids: frozenset[uuid.UUID]) -> ColumnElement[bool]:
    """Projects one of the units may claim now: unclaimed, and the unit is paired with the
    community or the claim window has passed and the unit is in the project's street."""
    paired = exists(paired_units(Project.org_id).where(Agreement.unit_id.in_(sorted(unit_ids))))
    street_open = (Project.street_opens_at <= func.now()) & in_project_street(unit_ids)
    return Project.state.in_(CLAIMABLE_STATES) & Project.lead_unit_id.is_(None) & or_(paired, street_open)


def liaison_reach(unit_ids: frozenset[uuid.UUID]) -> ColumnElement[bool]:
    """A liaison sees the projects its unit leads or joins, and those open to it in the hall."""
    ids = sorted(unit_ids)
    return or_(
        Project.lead_unit_id.in_(ids),
        Project.id.in_(select(ProjectUnit.project_id).where(ProjectUnit.unit_id.in_(ids))),
        open_in_hall(unit_ids),
    )


# --- tables -------------------------------------------------------------------------------


class Project(IdMixin, TimestampMixin, VersionedMixin, Base):
    __tablename__ = "projects"
    # The owning community's (or street's) staff and their superiors; liaisons as `liaison_reach`.
    __scope__ = Scope(org=("org_id",), unit_rule=liaison_reach)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    state: Mapped[ProjectState] = mapped_column(String(16), default=ProjectState.proposed, index=True)

    lead_unit_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("resident_units.id", ondelete="SET NULL"), index=True
    )
    # How the lead unit came to lead it, and who acted: counted in unit scores.
    claim_method: Mapped[ClaimMethod | None] = mapped_column(String(16))
    claimed_by: Mapped[uuid.UUID | None]
    claimed_at: Mapped[datetime | None]
    # Until then only paired units may claim it; from then on every unit of the street.
    street_opens_at: Mapped[datetime]

    responsible_name: Mapped[str | None] = mapped_column(String(50))
    responsible_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    budget: Mapped[int | None] = mapped_column(BigInteger)  # yuan
    plan_from: Mapped[date | None] = mapped_column(Date)
    plan_to: Mapped[date | None] = mapped_column(Date)

    completion_note: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None]
    completed_by: Mapped[uuid.UUID | None]
    evaluation_rating: Mapped[int | None] = mapped_column(SmallInteger)
    evaluation_note: Mapped[str | None] = mapped_column(Text)
    evaluated_at: Mapped[datetime | None]
    evaluated_by: Mapped[uuid.UUID | None]

    created_by: Mapped[uuid.UUID | None]
    state_reason: Mapped[str | None] = mapped_column(String(500))
    state_changed_by: Mapped[uuid.UUID | None]
    state_changed_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(_in("state", ProjectState), name="state"),
        CheckConstraint(f"claim_method IS NULL OR {_in('claim_method', ClaimMethod)}", name="claim_method"),
        CheckConstraint("(claim_method IS NULL) = (claimed_at IS NULL)", name="claim_recorded"),
        CheckConstraint("budget IS NULL OR budget >= 0", name="budget_nonnegative"),
        CheckConstraint("plan_from IS NULL OR plan_to IS NULL OR plan_from <= plan_to", name="plan_ordered"),
        CheckConstraint("evaluation_rating IS NULL OR evaluation_rating BETWEEN 1 AND 5", name="rating"),
    )


class ProjectNeed(Base):
    """A need the project answers. Reached through its project."""

    __tablename__ = "project_needs"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    need_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("needs.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    linked_by: Mapped[uuid.UUID | None]
    linked_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ProjectUnit(Base):
    """A joint unit (联合单位) working on the project beside the lead unit."""

    __tablename__ = "project_units"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    unit_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("resident_units.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ResourceCommitment(IdMixin, TimestampMixin, Base):
    """A quantity of a resource reserved for a project; released (kept as history) when removed
    or when the project is cancelled or rejected."""

    __tablename__ = "resource_commitments"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    resource_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("resources.id", ondelete="RESTRICT"), index=True
    )
    quantity: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[uuid.UUID | None]
    released_at: Mapped[datetime | None]
    released_by: Mapped[uuid.UUID | None]
    release_reason: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)


class Milestone(IdMixin, TimestampMixin, VersionedMixin, Base):
    __tablename__ = "project_milestones"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    due_on: Mapped[date | None] = mapped_column(Date)
    done_at: Mapped[datetime | None]
    done_by: Mapped[uuid.UUID | None]


class ProgressEntry(IdMixin, TimestampMixin, Base):
    """What was done, by which unit and user, with photos: the project's running record."""

    __tablename__ = "project_progress"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    note: Mapped[str] = mapped_column(Text)
    percent: Mapped[int | None] = mapped_column(SmallInteger)
    photos: Mapped[list[str]] = mapped_column(ARRAY(String(500)), default=list, server_default="{}")
    unit_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("resident_units.id", ondelete="SET NULL"), index=True
    )
    created_by: Mapped[uuid.UUID | None]

    __table_args__ = (CheckConstraint("percent IS NULL OR percent BETWEEN 0 AND 100", name="percent"),)
