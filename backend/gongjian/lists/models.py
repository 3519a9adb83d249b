"""The resources list (资源清单) and the needs list (需求清单).

The project list (项目清单) lives in `gongjian.projects`; the matching between the two
lists in `gongjian.matching`. Field names follow the interchange format of
shared/data/matching/public.json (`available`/`wanted` windows are split into two dates).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Double,
    ForeignKey,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin


class ListCategory(StrEnum):
    venue = "venue"  # 场地阵地
    expertise = "expertise"  # 专业技能
    funds = "funds"  # 资金
    goods = "goods"  # 物资
    service = "service"  # 服务
    manpower = "manpower"  # 人力


class ProviderKind(StrEnum):
    agency = "agency"  # 机关
    soe = "soe"  # 国企
    institution = "institution"  # 事业单位
    private = "private"  # 非公企业
    social_org = "social_org"  # 社会组织
    volunteer_team = "volunteer_team"  # 志愿服务队
    organization = "organization"  # a party organization itself


class ResourceState(StrEnum):
    available = "available"
    partly_committed = "partly_committed"
    exhausted = "exhausted"
    withdrawn = "withdrawn"


class NeedState(StrEnum):
    collected = "collected"
    accepted = "accepted"
    matched = "matched"
    in_project = "in_project"
    resolved = "resolved"
    rejected = "rejected"
    withdrawn = "withdrawn"


# Needs the matching engine works on, and that a duplicate check compares against.
OPEN_NEED_STATES = (NeedState.collected, NeedState.accepted, NeedState.matched)


class Urgency(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    urgent = "urgent"


class NeedSource(StrEnum):
    visit = "visit"  # 走访: a grid worker on a household visit
    staff = "staff"
    import_ = "import"
    hotline = "hotline"  # 12345 and other hotline integrations (API clients)
    wish = "wish"  # escalated from an unclaimed micro-wish


def _in(column: str, enum: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(e.value) for e in enum)})"


class Resource(IdMixin, TimestampMixin, VersionedMixin, Base):
    """What a resident unit, an org or a volunteer team offers a community.

    `remaining_quantity` is what is not yet committed to projects; it never goes below zero
    (a CHECK, and commitments decrement it with a guarded UPDATE).
    """

    __tablename__ = "resources"
    # The community's (and its superiors') staff; the providing unit's liaison.
    __scope__ = Scope(org=("org_id",), unit="unit_id")

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"), index=True)
    unit_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("resident_units.id", ondelete="SET NULL"), index=True
    )
    provider_kind: Mapped[ProviderKind] = mapped_column(String(16))
    provider_name: Mapped[str] = mapped_column(String(200))
    grid_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("grid_cells.id", ondelete="SET NULL"), index=True
    )
    category: Mapped[ListCategory] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    quantity: Mapped[int] = mapped_column(BigInteger)
    quantity_unit: Mapped[str] = mapped_column(String(20))
    remaining_quantity: Mapped[int] = mapped_column(BigInteger)
    available_from: Mapped[date] = mapped_column(Date)
    available_to: Mapped[date] = mapped_column(Date)
    # ISO weekdays 1 (Monday) … 7 (Sunday) on which it is offered.
    weekdays: Mapped[list[int]] = mapped_column(
        ARRAY(SmallInteger), default=lambda: [1, 2, 3, 4, 5, 6, 7], server_default="{1,2,3,4,5,6,7}"
    )
    lat: Mapped[float | None] = mapped_column(Double)
    lng: Mapped[float | None] = mapped_column(Double)
    # None: serves anywhere (e.g. funds of a county agency).
    serves_radius_km: Mapped[float | None] = mapped_column(Double)
    year: Mapped[int] = mapped_column(SmallInteger, index=True)
    state: Mapped[ResourceState] = mapped_column(String(20), default=ResourceState.available, index=True)
    external_ref: Mapped[str | None] = mapped_column(String(100), index=True)
    # Pre-segmented words (jieba), space separated: search and matching work on these.
    search_tokens: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_by: Mapped[uuid.UUID | None]
    state_reason: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        UniqueConstraint("org_id", "external_ref"),
        CheckConstraint(_in("category", ListCategory), name="category"),
        CheckConstraint(_in("provider_kind", ProviderKind), name="provider_kind"),
        CheckConstraint(_in("state", ResourceState), name="state"),
        CheckConstraint("quantity >= 0", name="quantity_nonnegative"),
        CheckConstraint(
            "remaining_quantity >= 0 AND remaining_quantity <= quantity", name="remaining_bounds"
        ),
        CheckConstraint("available_from <= available_to", name="window_ordered"),
        CheckConstraint("serves_radius_km IS NULL OR serves_radius_km >= 0", name="radius_nonnegative"),
        CheckConstraint("(lat IS NULL) = (lng IS NULL)", name="location_pair"),
    )


class Need(IdMixin, TimestampMixin, VersionedMixin, Base):
    """What residents of a community need, as collected by grid workers and staff."""

    __tablename__ = "needs"
    __scope__ = Scope(org=("org_id",))

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"), index=True)
    grid_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("grid_cells.id", ondelete="SET NULL"), index=True
    )
    category: Mapped[ListCategory] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    beneficiaries: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    urgency: Mapped[Urgency] = mapped_column(String(8), default=Urgency.normal)
    wanted_from: Mapped[date] = mapped_column(Date)
    wanted_to: Mapped[date] = mapped_column(Date)
    lat: Mapped[float | None] = mapped_column(Double)
    lng: Mapped[float | None] = mapped_column(Double)
    source: Mapped[NeedSource] = mapped_column(String(8))
    year: Mapped[int] = mapped_column(SmallInteger, index=True)
    state: Mapped[NeedState] = mapped_column(String(16), default=NeedState.collected, index=True)
    external_ref: Mapped[str | None] = mapped_column(String(100), index=True)
    search_tokens: Mapped[str] = mapped_column(Text, default="", server_default="")
    photos: Mapped[list[str]] = mapped_column(ARRAY(String(500)), default=list, server_default="{}")
    # A need reported again is linked to the open one it repeats (FixMyStreet-style).
    duplicate_of_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("needs.id", ondelete="SET NULL"), index=True
    )
    raised_by: Mapped[uuid.UUID | None]
    state_reason: Mapped[str | None] = mapped_column(String(500))
    state_changed_by: Mapped[uuid.UUID | None]
    state_changed_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("org_id", "external_ref"),
        CheckConstraint(_in("category", ListCategory), name="category"),
        CheckConstraint(_in("state", NeedState), name="state"),
        CheckConstraint(_in("urgency", Urgency), name="urgency"),
        CheckConstraint(_in("source", NeedSource), name="source"),
        CheckConstraint("beneficiaries >= 0", name="beneficiaries_nonnegative"),
        CheckConstraint("wanted_from <= wanted_to", name="window_ordered"),
        CheckConstraint("(lat IS NULL) = (lng IS NULL)", name="location_pair"),
    )
