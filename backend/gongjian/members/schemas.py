from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from gongjian.members.models import Gender, MemberCategory, MemberStatus, ReportingKind, ReportingState

# Mainland mobile numbers; the ID number is checked in the service (GB 11643 → `invalid_id_number`).
PHONE_PATTERN = r"^1[3-9][0-9]{9}$"
IdNumber = Field(min_length=1, max_length=32, description="Citizen ID number (GB 11643, 18 characters)")


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=50)
    id_number: str = IdNumber
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN, description="Mainland mobile number")
    gender: Gender | None = Field(default=None, description="Derived from the ID number when omitted")
    birth_date: date | None = Field(default=None, description="Derived from the ID number when omitted")
    org_id: uuid.UUID = Field(description="The branch holding the membership")
    category: MemberCategory
    employer_unit_id: uuid.UUID | None = None
    residence_community_id: uuid.UUID | None = None
    grid_cell_id: uuid.UUID | None = Field(default=None, description="The grid cell of residence")
    joined_party_on: date | None = None
    user_id: uuid.UUID | None = Field(default=None, description="The member's own account, if any")
    status: MemberStatus = MemberStatus.active
    external_ref: str | None = Field(default=None, max_length=100)


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=50)
    id_number: str | None = Field(default=None, min_length=1, max_length=32)
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN)
    gender: Gender | None = None
    birth_date: date | None = None
    org_id: uuid.UUID | None = None
    category: MemberCategory | None = None
    employer_unit_id: uuid.UUID | None = None
    residence_community_id: uuid.UUID | None = None
    grid_cell_id: uuid.UUID | None = None
    joined_party_on: date | None = None
    user_id: uuid.UUID | None = None
    status: MemberStatus | None = None
    external_ref: str | None = Field(default=None, max_length=100)


class MemberOut(BaseModel):
    id: uuid.UUID
    name: str
    gender: Gender
    birth_date: date
    phone: str | None = Field(description="Masked, e.g. 138****5678")
    id_number: str = Field(description="Masked, e.g. 330***********1234")
    org_id: uuid.UUID
    category: MemberCategory
    employer_unit_id: uuid.UUID | None
    residence_community_id: uuid.UUID | None
    grid_cell_id: uuid.UUID | None
    joined_party_on: date | None
    user_id: uuid.UUID | None
    status: MemberStatus
    external_ref: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class MemberPersonalData(BaseModel):
    """The member's personal data in full; every read is written to the audit log."""

    id: uuid.UUID
    name: str
    phone: str | None
    id_number: str


class ReportingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: ReportingKind
    member_id: uuid.UUID | None = Field(default=None, description="For kind `member`")
    resident_unit_id: uuid.UUID | None = Field(default=None, description="For kind `unit`")
    community_id: uuid.UUID | None = Field(
        default=None,
        description="The community reported to; defaults to the member's residence or the unit's community",
    )
    note: str | None = Field(default=None, max_length=500)


class ReportingDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


class ReportingReason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")


class ReportingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    kind: ReportingKind
    member_id: uuid.UUID | None
    resident_unit_id: uuid.UUID | None
    community_id: uuid.UUID
    state: ReportingState
    active: bool = Field(description="Submitted or accepted, and not deregistered")
    note: str | None
    submitted_by: uuid.UUID | None
    decided_by: uuid.UUID | None
    decided_at: datetime | None
    reason: str | None = Field(description="Why it was returned (or a note on acceptance)")
    deregistered_by: uuid.UUID | None
    deregistered_at: datetime | None
    deregistration_reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime
