from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin


class UnitType(StrEnum):
    agency = "agency"  # 机关
    soe = "soe"  # 国企
    institution = "institution"  # 事业单位 (school, hospital)
    private = "private"  # 非公企业
    social_org = "social_org"  # 社会组织


class PartyOrgMode(StrEnum):
    """How the unit's members are organised: its own org, a joint (联合) or attached (挂靠) branch."""

    none = "none"
    single = "single"
    joint = "joint"
    attached = "attached"


class ResidentUnit(IdMixin, TimestampMixin, VersionedMixin, Base):
    """驻区单位: an agency, enterprise, institution or social org located in a community."""

    __tablename__ = "resident_units"
    # Staff reach units through the community they sit in; liaisons through their unit.
    __scope__ = Scope(org=("community_id",), unit="id")

    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[UnitType] = mapped_column(String(16))
    credit_code: Mapped[str] = mapped_column(String(18), unique=True)
    address: Mapped[str | None] = mapped_column(String(200))
    lat: Mapped[float | None] = mapped_column(Numeric(9, 6, asdecimal=False))
    lng: Mapped[float | None] = mapped_column(Numeric(9, 6, asdecimal=False))
    community_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    party_org_mode: Mapped[PartyOrgMode] = mapped_column(String(16), default=PartyOrgMode.none)
    # RESTRICT: an organization that is some unit's party org is not deleted from under it.
    party_org_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    contact_name: Mapped[str | None] = mapped_column(String(50))
    contact_phone: Mapped[str | None] = mapped_column(String(30))
    description: Mapped[str | None] = mapped_column(Text)
    external_ref: Mapped[str | None] = mapped_column(String(100), index=True)

    __table_args__ = (
        # Mode `none` exactly when there is no party org.
        CheckConstraint("(party_org_mode = 'none') = (party_org_id IS NULL)", name="party_org_mode"),
        CheckConstraint("(lat IS NULL) = (lng IS NULL)", name="location_pair"),
        CheckConstraint("lat BETWEEN -90 AND 90 AND lng BETWEEN -180 AND 180", name="location_bounds"),
    )
