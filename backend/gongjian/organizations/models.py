from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin


class OrgKind(StrEnum):
    county_committee = "county_committee"
    working_committee = "working_committee"
    committee = "committee"
    general_branch = "general_branch"
    branch = "branch"
    group = "group"


class OrgLevel(StrEnum):
    """Where the organization sits in the territory, independent of its kind."""

    county = "county"
    street = "street"
    community = "community"
    unit = "unit"  # the party organization of a resident unit
    other = "other"


# Which kinds may sit directly under which (top to bottom in the glossary).
ALLOWED_PARENTS: dict[OrgKind, frozenset[OrgKind | None]] = {
    OrgKind.county_committee: frozenset({None}),
    OrgKind.working_committee: frozenset({OrgKind.county_committee}),
    OrgKind.committee: frozenset({OrgKind.county_committee, OrgKind.working_committee, OrgKind.committee}),
    OrgKind.general_branch: frozenset(
        {OrgKind.county_committee, OrgKind.working_committee, OrgKind.committee}
    ),
    OrgKind.branch: frozenset(
        {OrgKind.county_committee, OrgKind.working_committee, OrgKind.committee, OrgKind.general_branch}
    ),
    OrgKind.group: frozenset({OrgKind.branch, OrgKind.general_branch}),
}


class Organization(IdMixin, TimestampMixin, VersionedMixin, Base):
    """A node of the party organization tree, kept as a materialized path.

    `path` is '/<seq>/<seq>/.../' of the ancestors' and own sequence numbers, in the
    "C" collation so that a subtree is one btree range scan.
    """

    __tablename__ = "organizations"
    __scope__ = Scope(path="path")

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False), unique=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    path: Mapped[str] = mapped_column(String(1000, collation="C"), unique=True)
    depth: Mapped[int]
    kind: Mapped[OrgKind] = mapped_column(String(32))
    level: Mapped[OrgLevel] = mapped_column(String(16), default=OrgLevel.other)
    name: Mapped[str] = mapped_column(String(100))
    short_name: Mapped[str | None] = mapped_column(String(50))
    code: Mapped[str | None] = mapped_column(String(50), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(200))
    contact_phone: Mapped[str | None] = mapped_column(String(30))
    established_on: Mapped[date | None]
    external_ref: Mapped[str | None] = mapped_column(String(100), index=True)

    __table_args__ = (Index("ix_organizations_kind_path", "kind", "path"),)


class CommitteeMember(IdMixin, TimestampMixin, Base):
    """A part-time member (兼职委员) of a community committee (社区大党委), from a resident unit."""

    __tablename__ = "committee_members"
    __scope__ = Scope(org=("organization_id",))

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(50))
    position: Mapped[str] = mapped_column(String(50))
    resident_unit_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("resident_units.id", ondelete="SET NULL"), index=True
    )
    unit_position: Mapped[str | None] = mapped_column(String(50))
    term_start: Mapped[date | None]
    term_end: Mapped[date | None]
